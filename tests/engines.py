"""Running one test on both storage engines (a pytest plugin, registered in conftest.py).

A test that asks for ``location`` (or ``make_location``, or the ``make_cache`` / ``cache``
fixtures of tests/word_embedder.py) gets a fresh cache location on the engine of the
``engine`` fixture: an SQLite file under ``tmp_path``, or a fresh schema on the test
PostgreSQL server (tests/pg_server.py; dropped after the test). Which engines a test runs
on is said by a marker, on the test or the whole module::

    pytestmark = pytest.mark.engines("sqlite", "postgres")

and the test ids say which one ran (``test_x[sqlite]``, ``test_x[postgres]``). Without the
marker, a test runs on SQLite only. So the engine-independent tests are written once and
run against both engines; SQLite-only tests (the mirror, file faults, the sqlite3 CLI) keep
``db_path`` and no marker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from semcache.store import is_server_location

#: Every engine a test may run on.
ENGINES = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines(*names): run the test on these storage engines (of "
        "tests/engines.py ENGINES; default: sqlite only)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("engines")
    if marker is None:
        return  # SQLite only; the fixture says so, the test id stays as it was
    names = tuple(marker.args)
    unknown = set(names) - set(ENGINES)
    if unknown or not names:
        raise pytest.UsageError(f"engines marker: expected some of {ENGINES}; got {names}")
    metafunc.parametrize("engine", names, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The storage engine of this test run: ``"sqlite"`` or ``"postgres"``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def make_location(engine: str, tmp_path: Path,
                  request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """``make_location(name="cache.db")``: a cache location on the test's engine, the
    same for the same name within a test (a file path, or a URL selecting a fresh
    schema; the schemas are dropped after the test)."""
    made: dict[str, str] = {}
    schemas: list[str] = []
    server: Any = None

    def make(name: str = "cache.db") -> str:
        nonlocal server
        if name not in made:
            if engine == "sqlite":
                made[name] = str(tmp_path / name)
            else:
                from tests.pg_server import fresh_schema, with_schema

                server = server or request.getfixturevalue("pg_server")
                schemas.append(fresh_schema())
                made[name] = with_schema(server.url, schemas[-1])
        return made[name]

    yield make
    if schemas:
        server.admin("DROP SCHEMA IF EXISTS " + ", ".join(f'"{s}"' for s in schemas)
                     + " CASCADE")


@pytest.fixture
def location(make_location: Callable[..., str]) -> str:
    """A fresh cache location on the test's engine (see the module docstring)."""
    return make_location()


def _server(location: str) -> tuple[str, str]:
    """(URL without ``?schema=``, schema) of a PostgreSQL test location."""
    from semcache.store.postgres.conninfo import _split_schema

    url, schema = _split_schema(location)
    return url, schema or "semcache"


def cache_exists(location: str) -> bool:
    """True when a cache (or anything) is at ``location``: the file, or the schema."""
    if not is_server_location(location):
        return Path(location).exists()
    import psycopg

    url, schema = _server(location)
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                            (schema,)).fetchone() is not None


def stored_state(location: str) -> Any:
    """Everything a cache holds, comparable: equal before and after = nothing written.

    For a file, the bytes of the database and its WAL; for PostgreSQL, every row of every
    table of the cache's schema (as text, sorted)."""
    if not is_server_location(location):
        from tests.conftest import file_state

        return file_state(location)
    import psycopg
    from psycopg import sql

    url, schema = _server(location)
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1", (schema,))]
        return {t: [r[0] for r in conn.execute(sql.SQL(
            "SELECT x::text FROM {}.{} x ORDER BY 1").format(
                sql.Identifier(schema), sql.Identifier(t)))]  # type: ignore[arg-type]
                for t in tables}




def by_hand(location: str, sqlite_sql: str, postgres_sql: str, params: tuple = ()) -> None:
    """Run one statement on a cache as an operator would by hand (the sqlite3 CLI, psql):
    ``postgres_sql`` may name the cache's schema as ``{schema}``."""
    if not is_server_location(location):
        import sqlite3

        con = sqlite3.connect(location)
        try:
            con.execute(sqlite_sql, params)
            con.commit()
        finally:
            con.close()
        return
    import psycopg

    url, schema = _server(location)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(postgres_sql.replace("{schema}", '"' + schema.replace('"', '""') + '"'),
                     params)


def replace_cache(location: str, fill: Callable[[Any], object], scratch: Path) -> None:
    """Put another cache in the place of the one at ``location`` under its live users, the
    way operators do it: SQLite - another cache file restored over it in place (what
    ``sqlite3 live.db ".restore other.db"`` runs); PostgreSQL - the schema dropped and
    created again. ``fill(store)`` writes the new cache's content before it takes the
    place (PostgreSQL: right after)."""
    from semcache.store import open_store

    if not is_server_location(location):
        import apsw

        other = str(scratch / f"replacement-{uuid.uuid4().hex[:8]}.db")
        store = open_store(other)
        try:
            fill(store)
        finally:
            store.close()
        dest, src = apsw.Connection(location), apsw.Connection(other)
        try:
            with dest.backup("main", src, "main") as backup:
                backup.step()
        finally:
            dest.close()
            src.close()
        return
    open_store(location).drop()
    store = open_store(location)
    try:
        fill(store)
    finally:
        store.close()


__all__ = ["ENGINES", "by_hand", "cache_exists", "replace_cache", "stored_state"]
