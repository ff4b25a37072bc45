"""A frozen, stopped or vanished PostgreSQL server: callers get CacheConnectionError fast.

Against the real embedded server: frozen with SIGSTOP (postmaster and every backend; always
thawed), stopped with ``pg_ctl stop -m fast``, or cut off behind a TCP relay that stops
relaying without closing anything (a host that vanished). A call in flight, a call waiting
for a pooled connection and a new call each get ``CacheConnectionError`` within about the
statement timeout (2 s by default), not after the freeze ends, nor after
``pool_timeout``, nor after TCP gives up; after the server is back, calls work again.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import semcache
from semcache.errors import CacheConnectionError, CacheFileError, ConfigurationError
from tests.pg_server import PgServer, with_schema

psycopg = pytest.importorskip("psycopg")

from semcache.store.postgres import PostgresStore  # noqa: E402

#: The statement timeout (2 s; the watchdog cuts a silent connection then) + its tick and
#: this machine's scheduling.
FAIL_FAST = 3.0
QUESTION = "What is the capital of France?"


def _timed(fn: Callable[[], Any]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the test looks at what came out
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def _in_threads(calls: list[Callable[[], Any]]) -> list[tuple[float, BaseException | None]]:
    results: list[tuple[float, BaseException | None]] = [(0.0, None)] * len(calls)

    def run(i: int) -> None:
        results[i] = _timed(calls[i])

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a call hung"
    return results


def _back(fn: Callable[[], Any], within: float = 15.0) -> float:
    """Seconds until ``fn`` succeeds again (the server is back)."""
    started = time.monotonic()
    while True:
        try:
            fn()
            return time.monotonic() - started
        except CacheConnectionError:
            if time.monotonic() - started > within:
                raise
            time.sleep(0.1)


def test_a_frozen_server_fails_every_caller_fast(pg_server: PgServer, pg_url: str) -> None:
    url = pg_url + "&pool_max_size=2&pool_timeout=10"
    with semcache.open(url, embedder="hashing") as cache:
        cache.put(QUESTION, "Paris")
        assert cache.get(QUESTION) is not None
        with pg_server.frozen():
            # 2 calls take the pool's connections and hang on the frozen server, 6 wait
            # for a connection; puts and semantic gets among them.
            calls: list[Callable[[], Any]] = [lambda: cache.get(QUESTION)] * 4
            calls += [lambda: cache.get("what is the capital city of france")] * 2
            calls += [lambda i=i: cache.put(f"question {i}", "answer") for i in range(2)]
            results = _in_threads(calls)
            late = _timed(lambda: cache.get(QUESTION))  # while the outage is known
        for elapsed, exc in [*results, late]:
            assert isinstance(exc, CacheConnectionError), exc
            assert elapsed < FAIL_FAST, [r[0] for r in results]
            assert "\n" not in str(exc)
        assert "did not answer within" in str(results[0][1]) or \
            "cannot connect" in str(results[0][1])
        assert _back(lambda: cache.get(QUESTION)) < 10
        assert cache.get(QUESTION) is not None
        cache.put("after the freeze", "works")


def test_calls_in_flight_and_waiting_when_the_server_stops(pg_server: PgServer,
                                                           pg_schema: str) -> None:
    store = PostgresStore(with_schema(pg_server.url, pg_schema), pool_max_size=2,
                          pool_timeout=10)
    try:
        store.connections.wait_ready()
        sleeping = [lambda: store.connections.run(
            lambda c: c.execute("SELECT pg_sleep(1.5)"))] * 2
        waiting = [lambda: store.counters()] * 6
        stopped: list[float] = []

        def stop_soon() -> None:
            time.sleep(0.3)  # the sleeps hold both connections, the others wait
            stopped.append(time.monotonic())
            pg_server.stop()

        stopper = threading.Thread(target=stop_soon)
        stopper.start()
        try:
            started = time.monotonic()
            results = _in_threads([*sleeping, *waiting])
            stopper.join()
            took = time.monotonic() - started
            late = _timed(store.counters)
        finally:
            stopper.join()
            pg_server.start()
        for _, exc in [*results, late]:
            assert isinstance(exc, CacheConnectionError), exc
        # Before: the waiters waited for pool_timeout (10 s) after the outage was known.
        assert took - (stopped[0] - started) < 2.0, took
        assert late[0] < 1.0
        assert _back(store.counters) < 10
    finally:
        store.close()


def test_a_slow_statement_is_not_an_outage(pg_server: PgServer, pg_schema: str) -> None:
    url = with_schema(pg_server.url, pg_schema) + "&statement_timeout=0.5&connect_timeout=3"
    store = PostgresStore(url)
    try:
        assert store.connections.statement_timeout == 0.5
        assert store.connections.connect_timeout == 3
        started = time.monotonic()
        with pytest.raises(CacheFileError, match="statement timeout"):
            store.connections.run(lambda c: c.execute("SELECT pg_sleep(3)"))
        assert time.monotonic() - started < 1.5  # the server cancelled it
        assert store.counters()["entries"] == 0  # the pool was not given up
    finally:
        store.close()


def test_maintenance_runs_without_the_statement_timeout(pg_server: PgServer,
                                                       pg_schema: str) -> None:
    """Vacuum, scans, index builds, imports and clears may take long: they run without the
    statement timeout (and without the watchdog's deadline); a get or put does not."""
    store = PostgresStore(with_schema(pg_server.url, pg_schema) + "&statement_timeout=0.3")
    sleep = "SELECT pg_sleep(1.0)"
    try:
        with store.connections.maintenance() as conn:
            conn.execute(sleep)
        with store.connections.transaction(["BEGIN"], bounded=False) as conn:
            conn.execute(sleep)
            conn.execute("COMMIT")
        with store.write() as txn:
            txn.unbounded()
            txn.conn.execute(sleep)
        with pytest.raises(CacheFileError, match="statement timeout"), store.write() as txn:
            txn.conn.execute(sleep)
        store.vacuum()
        with store.connections.connection() as conn:  # the pool's setting is back
            assert conn.execute("SHOW statement_timeout").fetchone() == ("225ms",)
    finally:
        store.close()


@pytest.mark.parametrize("option", ["statement_timeout=-1", "statement_timeout=abc",
                                    "connect_timeout=0", "connect_timeout=nan"])
def test_bad_timeouts_are_refused(pg_server: PgServer, option: str) -> None:
    with pytest.raises(ConfigurationError, match=option.split("=")[0]):
        PostgresStore(with_schema(pg_server.url, "t_bad") + "&" + option)


class Relay:
    """127.0.0.1:PORT -> the server's Unix socket, relaying bytes both ways until
    ``vanish()``: from then on nothing is relayed and nothing is closed (a host that
    disappeared from the network)."""

    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.gone = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.unix_path)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.gone.is_set():
                continue  # swallowed
            try:
                dst.sendall(data)
            except OSError:
                return

    def vanish(self) -> None:
        self.gone.set()

    def close(self) -> None:
        self.listener.close()
        for s in self._sockets:
            s.close()


@pytest.fixture
def relay(pg_server: PgServer) -> Iterator[Relay]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(pg_server.url)
    r = Relay(f"{params['host']}/.s.PGSQL.{params.get('port') or 5432}")
    yield r
    r.close()


def test_tcp_connections_have_keepalives_and_a_vanished_host_fails_fast(
        relay: Relay, pg_schema: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:{relay.port}/postgres?schema={pg_schema}"
    with semcache.open(url, embedder="hashing") as cache:
        cache.put(QUESTION, "Paris")
        store = PostgresStore(url)  # the engine a cache opens: its pooled sockets checked
        try:
            with store.connections.connection() as conn:
                sock = socket.socket(fileno=conn.fileno())
                try:
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                    assert 0 < sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) <= 30
                finally:
                    sock.detach()
        finally:
            store.close()
        relay.vanish()
        for _ in range(2):  # the call in flight, then a new one (connect never answered)
            elapsed, exc = _timed(lambda: cache.get(QUESTION))
            assert isinstance(exc, CacheConnectionError), exc
            assert elapsed < FAIL_FAST
