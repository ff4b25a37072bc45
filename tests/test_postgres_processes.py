"""Several real processes on one PostgreSQL cache: creating a schema at once, counters
exact under concurrent writers, a forked child with its own pool."""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any

import pytest

from tests.pg_server import PgServer
from tests.store_entries import entry

psycopg = pytest.importorskip("psycopg")

from semcache.store.base import EntryFilter  # noqa: E402
from semcache.store.postgres import PostgresStore  # noqa: E402

_SPAWN = mp.get_context("spawn")


def _open_at_once(url: str, barrier: Any, out: Any) -> None:
    barrier.wait(timeout=60)
    try:
        store = PostgresStore(url)
        out.put(("ok", store.state.version))
        store.close()
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def test_two_hosts_create_the_schema_at_once(pg_url: str, pg_server: PgServer,
                                             pg_schema: str) -> None:
    n = 4
    barrier, out = _SPAWN.Barrier(n), _SPAWN.Queue()
    procs = [_SPAWN.Process(target=_open_at_once, args=(pg_url, barrier, out))
             for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    from semcache.store.postgres.schema import SCHEMA_VERSION

    assert results == [("ok", SCHEMA_VERSION)] * n, results
    rows = pg_server.admin(f'SELECT version FROM "{pg_schema}".schema_migrations ORDER BY 1')
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]  # each applied once


def _writer(url: str, worker: int, rounds: int, barrier: Any, out: Any) -> None:
    store = PostgresStore(url)
    barrier.wait(timeout=60)
    puts = 0
    try:
        for i in range(rounds):
            with store.write() as txn:
                # Overlapping keys: workers replace each other's entries.
                key = (i * 7 + worker) % 60
                txn.insert(entry(key, namespace=f"ns{key % 3}", response=b"x" * (key + worker)))
                txn.add_counters({"puts": 1})
                puts += 1
                if i % 10 == worker % 10:
                    txn.delete(EntryFilter(namespace=f"ns{i % 3}", created_before=0.0))
                if i % 25 == 0:
                    txn.delete(EntryFilter(key_hash=((i + 1) % 60).to_bytes(32, "big")))
        out.put(("ok", puts))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        store.close()


def test_counters_exact_under_concurrent_writers(pg_url: str, pg_server: PgServer) -> None:
    PostgresStore(pg_url).close()  # schema created before the race on entries
    n, rounds = 4, 150
    barrier, out = _SPAWN.Barrier(n), _SPAWN.Queue()
    procs = [_SPAWN.Process(target=_writer, args=(pg_url, w, rounds, barrier, out))
             for w in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(r[0] == "ok" for r in results), results
    store = PostgresStore(pg_url)
    try:
        c = store.counters()
        assert c["puts"] == n * rounds
        sections, problems = store.check()
        report = sections["database"]
        assert problems == [], problems
        assert (c["entries"], c["bytes"]) == (report["entries"], report["bytes"])
        assert 0 < c["entries"] <= 60
    finally:
        store.close()


def _child_uses_store(store: PostgresStore, out: Any) -> None:
    try:
        row = store.get_by_key((1).to_bytes(32, "big"))
        with store.write() as txn:
            txn.insert(entry(2))
        out.put(("ok", row is not None, os.getpid()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.put(("error", f"{type(exc).__name__}: {exc}", 0))


def test_forked_child_gets_its_own_pool(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        with store.write() as txn:
            txn.insert(entry(1))
        assert store.get_by_key((1).to_bytes(32, "big")) is not None  # parent's pool in use
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_child_uses_store, args=(store, out))
        child.start()
        result = out.get(timeout=60)
        child.join(timeout=30)
        assert result[:2] == ("ok", True), result
        # The parent's connections were not touched by the child.
        assert store.get_by_key((2).to_bytes(32, "big")) is not None
        with store.write() as txn:
            txn.insert(entry(3))
        assert store.counters()["entries"] == 3
    finally:
        store.close()
