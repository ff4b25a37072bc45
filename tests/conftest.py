"""Shared fixtures: temporary cache paths, a controllable clock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# make_cache / cache fixtures over the WordEmbedder (the wrapper tests use them);
# pg_server / pg_url / pg_admin: a real PostgreSQL server (tests/pg_server.py);
# engine / location / make_location: one test on both engines (tests/engines.py).
pytest_plugins = ["tests.word_embedder", "tests.pg_server", "tests.engines"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Property tests run the same examples on every run (CI must not pass or fail by the draw);
# HYPOTHESIS_PROFILE=explore draws new ones, for a developer hunting cases (a failure found
# that way is pinned with @example).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class FakeClock:
    """An injectable clock for TTL tests: time moves only when the test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "cache.db")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def file_state(path: str) -> tuple[bytes, bytes]:
    """Bytes of the database and its WAL: equal before and after = nothing written."""
    def read(p: str) -> bytes:
        try:
            with open(p, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""
    return read(path), read(path + "-wal")


def mirror_rebuilds(caplog: pytest.LogCaptureFixture) -> int:
    """How many times this process rebuilt a code mirror while ``caplog`` captured INFO
    records of the ``semcache`` logger (the engine logs each rebuild)."""
    return sum("rebuilt code mirror" in r.getMessage() for r in caplog.records)


def sql_rows(path: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of a read-only SQL query on a cache file, as an operator's sqlite3 would see
    them (its own connection, sqlite-vec loaded for the entry_codes table)."""
    import apsw
    import sqlite_vec

    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        return [tuple(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()
