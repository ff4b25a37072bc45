"""The public Cache on PostgreSQL: what only a server has (schemas in the URL, clients
sharing one cache, half-made schemas, server-side search plans, leased claims, engine-level
verify and vacuum). The engine-independent behaviour is tested on both engines by the
modules marked ``engines`` (tests/engines.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

import numpy as np
import pytest

import semcache
from tests.engines import cache_exists
from tests.pg_server import PgServer, fresh_schema, with_schema

psycopg = pytest.importorskip("psycopg")

DIM = 32
_SPAWN = mp.get_context("spawn")


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def drop(server: PgServer, *schemas: str) -> None:
    server.admin("DROP SCHEMA IF EXISTS " + ", ".join(f'"{s}"' for s in schemas) + " CASCADE")


def test_schema_from_the_url_the_argument_or_the_default(pg_server: PgServer) -> None:
    a, b = fresh_schema(), fresh_schema()
    try:
        with semcache.open(with_schema(pg_server.url, a), hash_only=True) as cache:
            cache.put("q", "in a")
            assert cache.location.endswith(f"schema={a}") and cache.path == cache.location
        with semcache.open(pg_server.url, schema=b, hash_only=True) as cache:
            assert cache.get("q") is None  # another schema: another cache
            cache.put("q", "in b")
        with semcache.open(with_schema(pg_server.url, a), schema=a, hash_only=True) as cache:
            assert cache.get("q").response == "in a"
        with pytest.raises(semcache.ConfigurationError, match="conflicts"):
            semcache.open(with_schema(pg_server.url, a), schema=b, hash_only=True)
        with pytest.raises(semcache.ConfigurationError, match="schema"):
            semcache.open(pg_server.url, schema="Bad-Name", hash_only=True)
        with pytest.raises(semcache.ConfigurationError, match="PostgreSQL"):
            semcache.open(os.devnull, schema="x", hash_only=True)
    finally:
        drop(pg_server, a, b)
    if pg_server.controllable:  # the default schema of a database the test owns
        with semcache.open(pg_server.url, hash_only=True) as cache:
            try:
                assert "schema=" not in cache.location
                assert pg_server.admin("SELECT 1 FROM pg_namespace WHERE nspname = 'semcache'")
            finally:
                cache.close()
                drop(pg_server, "semcache")


def test_a_failed_open_leaves_no_half_made_schema(pg_url: str, pg_server: PgServer,
                                                  pg_schema: str) -> None:
    with pytest.raises(semcache.ConfigurationError):
        semcache.open(pg_url, embedder="no-such-embedder")  # fails after the schema was made
    assert not cache_exists(pg_url)
    with semcache.open(pg_url, dim=DIM) as cache:
        cache.put("q", "kept", vector=np.ones(DIM))
    with pytest.raises(semcache.EmbedderMismatchError):
        semcache.open(pg_url, dim=DIM + 1)  # an existing cache is never removed
    with semcache.open(pg_url) as cache:
        assert cache.get("q").response == "kept"
    # A schema a DBA made for the application (empty, owned by someone else) stays.
    pg_server.admin(f'DROP SCHEMA "{pg_schema}" CASCADE')
    pg_server.admin(f'CREATE SCHEMA "{pg_schema}"')
    with pytest.raises(semcache.ConfigurationError):
        semcache.open(pg_url, embedder="no-such-embedder")
    assert cache_exists(pg_url)
    assert pg_server.admin(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s", (pg_schema,)) == [(0,)]


def test_clients_share_entries_stats_settings_and_thresholds(pg_url: str) -> None:
    rng = np.random.default_rng(3)
    v = unit(rng, 2)
    with semcache.open(pg_url, dim=DIM, similarity_threshold=0.9, ttl=600) as a, \
            semcache.open(pg_url) as b:  # b: everything from the schema
        assert (b.dim, b.ttl, b.similarity_threshold) == (DIM, 600, 0.9)
        a.put("question", "answer", vector=v[0])
        assert b.get(v[0]).response == "answer" and b.get("question").kind == "exact"
        a.get("missing")
        b.flush()
        a.flush()
        sa, sb = a.stats(), b.stats()
        assert sa["hits"] == sb["hits"] == 2 and sa["misses"] == sb["misses"] == 1
        assert sa["entries"] == 1 and sa["file_bytes"] > 0
        a.set_threshold("strict", 0.99)
    with semcache.open(pg_url) as c:
        assert c.threshold("strict") == 0.99 and c.threshold() == 0.9


def test_readonly_open_reads_and_refuses_writes(pg_url: str, pg_server: PgServer) -> None:
    with semcache.open(pg_url, hash_only=True) as cache:
        cache.put("q", "a")
    with semcache.open(pg_url, readonly=True, hash_only=True) as ro:
        assert ro.get("q").response == "a"
        with pytest.raises(semcache.ReadOnlyCacheError):
            ro.put("r", "b")
        assert ro.claim(b"k").held  # no claims without writes: never blocks
    with pytest.raises(semcache.CacheFileError, match="no semcache cache"):
        semcache.open(with_schema(pg_server.url, fresh_schema()), readonly=True,
                      hash_only=True)


def test_hnsw_and_exact_scan_give_the_same_answers(pg_url: str) -> None:
    rng = np.random.default_rng(5)
    stored = unit(rng, 400)
    from semcache.store.postgres import PostgresStore

    def answers(cache: semcache.Cache) -> list[Any]:
        return [None if h is None else (h.entry_id, round(h.similarity, 5))
                for h in (cache.get(q) for q in queries)]

    with semcache.open(pg_url, dim=DIM, similarity_threshold=0.9, max_entries=None) as cache:
        cache.put_many([(v, i) for i, v in enumerate(stored)])
        queries = [v + rng.normal(scale=rng.uniform(0.02, 0.08), size=DIM) for v in stored[:60]]
        queries += list(unit(rng, 20))
        exact = answers(cache)
    for url, plan in ((pg_url, "exact"), (pg_url + "&exact_scan_below=0", "hnsw")):
        store = PostgresStore(url)  # the engine's plan for the partition, as a cache has it
        try:
            assert store.search_plan(store.find_partition("default", "") or 0) == plan
        finally:
            store.close()
    with semcache.open(pg_url + "&exact_scan_below=0", similarity_threshold=0.9) as hnsw:
        assert answers(hnsw) == exact
    assert 30 <= sum(a is not None for a in exact) < len(queries)


def test_a_cache_filled_quickly_is_searched_through_the_hnsw_index(
        pg_url: str, pg_server: PgServer) -> None:
    """Right after put_many fills a new cache, the planner's statistics of ``entries``
    still say a few dozen rows (autovacuum comes within a minute or so), so the semantic
    search scanned the whole partition and sorted it instead of walking the HNSW index
    (7.2 ms against 1.3 ms per get at 20k entries). The engine now ANALYZEs the table when
    its row count is under half the committed entries."""
    from semcache.store.postgres import PostgresStore
    from semcache.store.postgres.adapters import code_literal
    from tests.engines import _server

    _, schema = _server(pg_url)
    rng = np.random.default_rng(11)
    stored = unit(rng, 6_000)
    with semcache.open(pg_url, dim=DIM, max_entries=None) as cache:
        for start in range(0, len(stored), 1_500):
            cache.put_many([(v, start + i) for i, v in enumerate(stored[start:start + 1_500])])
        hit = cache.get(stored[7])
        assert hit is not None and hit.response == 7
    store = PostgresStore(pg_url)
    try:
        pid = store.find_partition("default", "")
        assert pid is not None and store.search_plan(pid) == "hnsw"
        params = {"p": pid, "ns": "default", "scope": "", "now": time.time(),
                  "code": code_literal(bytes(range(32))), "inc": store.incarnation,
                  "q": "[" + ",".join(map(str, stored[7].tolist())) + "]", "dim": DIM}
        sql = store.queries.search("hnsw", 16)
    finally:
        store.close()
    plan = "\n".join(r[0] for r in pg_server.admin("EXPLAIN " + sql, params))
    assert "entries_code_hnsw" in plan, plan
    planned = pg_server.admin("SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
                              (f'"{schema}".entries',))[0][0]
    assert planned >= 3_000, planned


def test_vacuum_and_verify_after_hand_made_changes(pg_url: str, pg_server: PgServer,
                                                   pg_schema: str) -> None:
    rng = np.random.default_rng(7)
    with semcache.open(pg_url, dim=DIM, ttl=60, clock=lambda: 1_000.0) as cache:
        cache.put_many([(f"q{i}", i) for i in range(10)], vector=None)
    report = semcache.verify(pg_url)
    assert report["ok"], report["problems"]
    assert report["database"]["engine"] == "postgresql" and report["database"]["entries"] == 10
    # An operator deletes rows by hand and breaks the counters behind semcache's back.
    pg_server.admin(f'DELETE FROM "{pg_schema}".entries WHERE prompt IN (%s, %s)', ("q1", "q2"))
    pg_server.admin(f"INSERT INTO \"{pg_schema}\".counters AS c (name, shard, value) "
                    "VALUES ('entries', 0, 5) ON CONFLICT (name, shard) "
                    "DO UPDATE SET value = c.value + 5")
    report = semcache.verify(pg_url)
    assert not report["ok"] and any("counters say" in p for p in report["problems"])
    with semcache.open(pg_url, dim=DIM, clock=lambda: 2_000.0) as cache:
        cache.put("v", "with a vector", vector=unit(rng, 1)[0])
        done = cache.vacuum()
        assert done["expired"] == 8 and done["counter_drift"] == 5
        assert cache.stats()["entries"] == 1
    assert semcache.verify(pg_url)["ok"]


def _hold_claim(url: str, key: bytes, ready: Any) -> None:
    from semcache.store.postgres import PostgresStore

    store = PostgresStore(url)
    assert store.claim(key, 1.5)
    ready.set()
    time.sleep(60)  # killed long before


def test_a_claim_of_a_killed_process_lapses_after_its_lease(pg_url: str) -> None:
    with semcache.open(pg_url, hash_only=True):
        pass  # the schema
    from semcache.store.postgres import PostgresStore

    key = b"k" * 32
    ready = _SPAWN.Event()
    proc = _SPAWN.Process(target=_hold_claim, args=(pg_url, key, ready))
    proc.start()
    store = PostgresStore(pg_url)
    try:
        assert ready.wait(60)
        os.kill(proc.pid, signal.SIGKILL)  # dies holding the claim
        proc.join(10)
        assert not store.claim(key, 30)  # still leased
        deadline = time.monotonic() + 10
        while not store.claim(key, 30):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        store.release(key)
        assert store.claim(key, 30)  # released: free again
        store.release(key)
    finally:
        store.close()


def test_engine_options_in_the_url(pg_url: str) -> None:
    """``semcache.open(url)`` reaches the engine's options through the URL's query."""
    url = pg_url + "&pool_max_size=3&ef_search=64&exact_scan_below=0&pipeline=on"
    with semcache.open(url, dim=DIM) as cache:
        store: Any = cache._store
        assert (store.ef_search, store.exact_scan_below, store.pipeline) == (64, 0, True)
        assert "pool_max_size" not in cache.location and "ef_search" not in cache.location
        cache.put("q", "a", vector=np.ones(DIM))  # a pipelined write
        assert cache.get(np.ones(DIM)).response == "a"  # through HNSW (exact_scan_below=0)
        rng = np.random.default_rng(11)
        ids = cache.put_many([(f"p{i}", i) for i in range(30)] + [("q", "again")],
                             vector=None)  # the bulk path inside a pipelined transaction
        assert len(set(ids)) == 31 and cache.get("q").response == "again"
        cache.put_many([(v, "v") for v in unit(rng, 5)], ttl=30)
        cache.flush()  # batched hits written in pipeline mode
        assert cache.stats()["entries"] == 36 and cache.stats()["hits"] == 2
    with pytest.raises(semcache.ConfigurationError, match="ef_search"):
        semcache.open(pg_url + "&ef_search=lots", dim=DIM)
    with pytest.raises(semcache.ConfigurationError, match="pipeline"):
        semcache.open(pg_url + "&pipeline=maybe", dim=DIM)
    from semcache.store.postgres import PostgresStore

    with pytest.raises(semcache.ConfigurationError, match="conflicts"):
        PostgresStore(pg_url + "&ef_search=64", ef_search=200)
    PostgresStore(pg_url + "&ef_search=64", ef_search=64).close()  # the same: fine


def test_synchronous_commit_off_is_an_opt_in_url_option(pg_url: str) -> None:
    """``?synchronous_commit=off`` relaxes durability for this cache's own transactions
    only (its commits do not wait for the WAL flush); without it every write transaction
    runs with it on. Bad values are refused, naming the option."""
    from semcache.store.postgres import PostgresStore

    for suffix, expected in (("", "on"), ("&synchronous_commit=off", "off"),
                             ("&synchronous_commit=on", "on")):
        with semcache.open(pg_url + suffix, dim=DIM) as cache:
            assert "synchronous_commit" not in cache.location
            cache.put("q" + suffix, "a", vector=np.ones(DIM))
            assert cache.get("q" + suffix).response == "a"
        store = PostgresStore(pg_url + suffix)
        try:
            assert store.synchronous_commit is (expected == "on")
            with store.write() as txn:
                assert txn.conn.execute("SHOW synchronous_commit").fetchone()[0] == expected
            # A lone put is one autocommit statement: the session has the setting too.
            assert store.connections.run(
                lambda c: c.execute("SHOW synchronous_commit").fetchone()[0]) == expected
        finally:
            store.close()
    with pytest.raises(semcache.ConfigurationError, match="synchronous_commit"):
        semcache.open(pg_url + "&synchronous_commit=sometimes", dim=DIM)
    with pytest.raises(semcache.ConfigurationError, match="synchronous_commit"):
        PostgresStore(pg_url, synchronous_commit="off")  # type: ignore[arg-type]
    with pytest.raises(semcache.ConfigurationError, match="conflicts"):
        PostgresStore(pg_url + "&synchronous_commit=on", synchronous_commit=False)


def test_a_lone_put_is_one_statement_and_keeps_the_counts_exact(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing batched to carry, a put is one autocommit statement (no write
    transaction of its own); replacements, evictions at max_entries and a pending batch of
    hits take the transaction path; the counters equal the rows all along."""
    from semcache.store.postgres import PostgresStore

    rng = np.random.default_rng(5)
    vecs = unit(rng, 40)
    writes = 0
    real_write = PostgresStore.write

    def counting_write(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        writes += 1
        return real_write(self, *args, **kwargs)

    with semcache.open(pg_url, dim=DIM, max_entries=20) as cache:
        cache.put("first", 0, vector=vecs[0])  # learns the partition (a transaction)
        monkeypatch.setattr(PostgresStore, "write", counting_write)
        ids = [cache.put(f"q{i}", i, vector=vecs[i]) for i in range(1, 19)]
        assert writes == 0 and len(set(ids)) == 18  # one statement each
        again = cache.put("q3", "three", vector=vecs[3])  # a replacement: new, larger id
        assert writes == 0 and again > max(ids)
        assert cache.get("q3", exact_only=True).response == "three"  # a hit: now batched
        cache.put("q19", 19, vector=vecs[19])
        assert writes == 1  # carried the batched hit in a transaction
        for i in range(20, 30):  # 20 entries: the cache is full, the transaction evicts
            cache.put(f"q{i}", i, vector=vecs[i])
        assert writes == 11
        monkeypatch.undo()
        stats = cache.stats()
        assert (stats["entries"], stats["puts"], stats["evictions"]) == (20, 31, 10)
        assert stats["hits"] == 1
    report = semcache.verify(pg_url)
    assert report["ok"], report  # counters (entries, bytes, partition sizes) equal the rows
