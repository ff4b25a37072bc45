"""Connection failures against a real server: down at open, restarts, cut connections,
bad URLs - clear one-line errors, the next call reconnects, the password never shows."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from semcache.errors import CacheConnectionError, ConfigurationError
from tests.pg_server import PgServer, with_schema
from tests.store_entries import entry

psycopg = pytest.importorskip("psycopg")

from semcache.store.postgres import PostgresStore, is_postgres_url  # noqa: E402
from semcache.store.postgres.conninfo import parse  # noqa: E402

PASSWORD = "S3cr3t-pw-never-shown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_password(url: str) -> str:
    """The server's socket URL with a password (trust auth ignores it)."""
    return url.replace("postgres:@", f"postgres:{PASSWORD}@", 1)


@pytest.fixture(params=[False, True], ids=["plain", "pipelined"])
def store(pg_server: PgServer, pg_schema: str,
          request: pytest.FixtureRequest) -> Iterator[PostgresStore]:
    """Writes in plain and in pipeline mode (where BEGIN is not sent on its own: a broken
    connection must still be noticed before the transaction starts)."""
    url = with_schema(_with_password(pg_server.url), pg_schema)
    s = PostgresStore(url, pool_timeout=3.0, pipeline=request.param)
    with s.write() as txn:
        txn.insert(entry(1))
    yield s
    s.close()


def test_server_down_at_open_names_host_and_port(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(CacheConnectionError) as info:
        PostgresStore(f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/db")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message
    assert "refused" in message.lower()
    assert PASSWORD not in message and PASSWORD not in caplog.text


def test_missing_socket_named(tmp_path: object) -> None:
    with pytest.raises(CacheConnectionError, match=r"/nonexistent-dir/\.s\.PGSQL\.5433"):
        PostgresStore(f"host=/nonexistent-dir port=5433 dbname=x password={PASSWORD}")


@pytest.mark.parametrize("url", [
    f"postgresql://u:{PASSWORD}@host:notaport/db",
    f"postgresql://u:{PASSWORD}@host/db?no_such_option=1",
    f"host=x password={PASSWORD} bogus",
])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        PostgresStore(url)
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize("name", ["chat\n", "chat\r\n", "\nchat", "cha\nt", "chat\x00"])
def test_schema_name_with_a_newline_is_refused(pg_server: PgServer, name: str) -> None:
    """``$`` matches before a final newline: such a name passed the check and then failed
    as a PostgreSQL syntax error. It is a ConfigurationError, before any connection."""
    import urllib.parse

    import semcache
    from semcache.store.postgres.conninfo import check_schema_name

    with pytest.raises(ConfigurationError, match="schema must be"):
        check_schema_name(name)
    url = with_schema(pg_server.url, urllib.parse.quote(name))
    with pytest.raises(ConfigurationError, match="schema must be"):
        semcache.open(url, embedder="hashing")
    with pytest.raises(ConfigurationError, match="schema must be"):
        semcache.open(pg_server.url, embedder="hashing", schema=name)


def test_what_is_a_postgres_url() -> None:
    assert is_postgres_url("postgresql://h/db") and is_postgres_url("postgres://h/db")
    assert is_postgres_url("host=/run/postgresql dbname=app")
    assert not is_postgres_url("llm.db") and not is_postgres_url("/tmp/x=1.db")


def test_location_never_holds_the_password() -> None:
    info = parse(f"postgresql://app:{PASSWORD}@db.example:6432/prod?sslmode=require&schema=t1")
    assert info.location == "postgresql://app@db.example:6432/prod?sslmode=require&schema=t1"
    assert info.schema == "t1" and info.params["password"] == PASSWORD
    kv = parse(f"host=/run/pg dbname=app user=me password={PASSWORD}")
    assert PASSWORD not in kv.location and "host=/run/pg" in kv.location
    with pytest.raises(ConfigurationError, match="conflicts"):
        parse("postgresql://h/db?schema=a", "b")


def _cut_every_connection(pg_server: PgServer) -> list:
    """Terminate the cache's server connections and wait until they are gone (the
    termination is asynchronous: "between two calls" means the cut has happened)."""
    others = ("FROM pg_stat_activity WHERE application_name = 'semcache' "
              "AND pid <> pg_backend_pid()")
    killed = pg_server.admin(f"SELECT pg_terminate_backend(pid) {others}")
    deadline = time.monotonic() + 10
    while pg_server.admin(f"SELECT pid {others}") and time.monotonic() < deadline:
        time.sleep(0.01)
    return killed


def test_cut_connections_reconnect(store: PostgresStore, pg_server: PgServer) -> None:
    """Every server connection of the cache killed between two calls: the next calls work."""
    assert store.get_by_key((1).to_bytes(32, "big")) is not None
    assert _cut_every_connection(pg_server)
    assert store.get_by_key((1).to_bytes(32, "big")) is not None
    _cut_every_connection(pg_server)
    with store.write() as txn:
        txn.insert(entry(2))
    assert store.counters()["entries"] == 2


def test_restart_between_calls(store: PostgresStore, pg_server: PgServer,
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert store.get_by_key((1).to_bytes(32, "big")) is not None
    pg_server.restart()
    assert store.get_by_key((1).to_bytes(32, "big")) is not None  # read after restart
    pg_server.restart()
    with store.write() as txn:  # write after restart
        txn.insert(entry(3))
    assert store.counters()["entries"] == 2
    assert PASSWORD not in caplog.text


def test_server_down_then_back(store: PostgresStore, pg_server: PgServer,
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pg_server.stop()
    try:
        for _ in range(2):  # every call while down: quick, clear, one line
            start = time.monotonic()
            with pytest.raises(CacheConnectionError) as info:
                store.get_by_key((1).to_bytes(32, "big"))
            assert time.monotonic() - start < 3
            message = str(info.value)
            assert "\n" not in message and ".s.PGSQL." in message
            assert PASSWORD not in message
        with pytest.raises(CacheConnectionError), store.write() as txn:
            txn.insert(entry(4))
    finally:
        pg_server.start()
    assert store.get_by_key((1).to_bytes(32, "big")) is not None
    with store.write() as txn:
        txn.insert(entry(5))
    assert store.counters()["entries"] == 2
    assert PASSWORD not in caplog.text
