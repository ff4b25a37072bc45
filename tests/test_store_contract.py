"""The Store contract: what the cache may rely on from an engine, held on both engines.

Every test here opens engines through ``semcache.store.open_store`` and uses only the
documented protocol (``semcache/store/base.py``): the SQLite file and the PostgreSQL schema
must give the same answers - ordering promises, expiry, LRU eviction, claims across
processes, feedback, settings, damaged rows, checks, incarnations (a cache replaced under a
live store). A new piece of engine state (a table,
a column) gets its tests here, so both engines keep one behaviour.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from semcache.errors import CacheNotFoundError, ReadOnlyCacheError, SemcacheError
from semcache.store import open_store, store_exists
from semcache.store.base import (
    OUTCOMES_PER_ENTRY,
    AccessUpdate,
    EntryFilter,
    NewEntry,
    Outcome,
    OutcomePool,
    Store,
    Verdict,
    entry_size,
)
from tests.engines import ENGINES, replace_cache
from tests.store_entries import DIM, T0, code_of, entry, near, unit

pytestmark = pytest.mark.engines(*ENGINES)
CTX = mp.get_context("spawn")


@pytest.fixture
def store(location: str) -> Iterator[Store]:
    """A fresh cache on the test's engine, with the settings a cache with vectors pins."""
    s = open_store(location)
    s.write_settings({"db_uid": uuid.uuid4().hex, "dim": str(DIM)})
    yield s
    s.close()


def key(i: int) -> bytes:
    return int(i).to_bytes(32, "big")


def insert(store: Store, *entries: NewEntry) -> list[int]:
    with store.write() as txn:
        return txn.insert_many(list(entries))


# -- writes and reads -----------------------------------------------------------------------


def test_insert_many_gives_growing_ids_and_replaces_keys(store: Store) -> None:
    rng = np.random.default_rng(1)
    vecs = unit(rng, 3)
    ids = insert(store, *(entry(i, vecs[i], prompt=f"p{i}") for i in range(3)))
    assert ids == sorted(ids) and len(set(ids)) == 3
    row = store.get_by_key(key(1))
    assert row is not None and row.id == ids[1] and row.prompt == "p1" and row.hits == 0
    (again,) = insert(store, entry(1, vecs[1], prompt="again"))
    assert again > max(ids)
    assert store.get_by_key(key(1)).id == again  # type: ignore[union-attr]
    assert store.get_by_ids([ids[1]]) == []  # the replaced entry is gone
    twice = insert(store, entry(7, prompt="first"), entry(7, prompt="second"))
    assert store.get_by_key(key(7)).prompt == "second"  # type: ignore[union-attr]
    assert store.get_by_ids([twice[0]]) == [] and twice[1] > twice[0]
    rows = store.get_by_ids([again, ids[0]], with_vector=True)
    assert sorted(r.id for r in rows) == sorted([again, ids[0]])
    by_id = {r.id: r for r in rows}
    assert by_id[ids[0]].vector == vecs[0].astype("<f4").tobytes()  # bit-exact round trip
    assert store.counters()["entries"] == 4


def test_put_alone_writes_the_entry_or_nothing(store: Store) -> None:
    insert(store, entry(1, prompt="makes the partition known"))
    before = store.counters()
    entry_id = store.put_alone(entry(2, prompt="alone"), None, T0)
    row = store.get_by_key(key(2))
    if entry_id is None:  # the engine has no cheaper path: nothing written
        assert row is None and store.counters() == before
    else:
        assert row is not None and row.id == entry_id and row.prompt == "alone"
        assert store.counters()["entries"] == before["entries"] + 1
        assert store.counters()["puts"] == before.get("puts", 0) + 1


def test_a_failed_write_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as txn:
        txn.insert_many([entry(1, namespace="gone")])
        txn.add_counters({"puts": 1})
        raise RuntimeError("the block fails")
    assert store.get_by_key(key(1)) is None and store.counters()["puts"] == 0
    assert store.find_partition("gone", "") is None or store.count_entries(
        EntryFilter(namespace="gone")) == 0
    assert store.check()[1] == []


def test_counters_add_up_and_track_entries_and_bytes(store: Store) -> None:
    with store.write() as txn:
        txn.insert_many([entry(i, response=b"x" * (10 + i)) for i in range(5)])
        txn.add_counters({"puts": 5, "hits": 2})
    with store.write() as txn:
        txn.add_counters({"hits": 3, "misses": 1})
        txn.delete(EntryFilter(ids=(store.get_by_key(key(0)).id,)))  # type: ignore[union-attr]
    c = store.counters()
    assert (c["puts"], c["hits"], c["misses"], c["entries"]) == (5, 5, 1, 4)
    assert c["bytes"] == sum(r.size for r in store.list_entries(EntryFilter()))
    assert store.size_bytes() > 0


def test_counters_fill_the_minute_series_summed_over_writers(store: Store,
                                                              location: str) -> None:
    m0 = 28_000_000  # a minute (epoch seconds // 60); even, so 2-minute buckets align on it
    with store.write() as txn:
        txn.add_counters({"hits": 2, "misses": 1}, m0 * 60 + 5)
    with store.write() as txn:
        txn.add_counters({"hits": 3}, m0 * 60 + 50)
    with store.write() as txn:  # the next minute opens
        txn.add_counters({"hits": 4, "puts": 1}, (m0 + 1) * 60)
    other = open_store(location)  # another process adds to the same minutes
    try:
        with other.write() as txn:
            txn.add_counters({"hits": 10}, (m0 + 1) * 60 + 1)
        with other.write() as txn:  # a clock behind the open minute: into its own minute
            txn.add_counters({"misses": 7}, m0 * 60 + 59)
    finally:
        other.close()
    by_minute = {(m, n): v for m, n, v in store.counter_history(m0, 1)}
    assert by_minute == {(m0, "hits"): 5, (m0, "misses"): 8, (m0 + 1, "hits"): 14,
                         (m0 + 1, "puts"): 1}
    assert {(m, n): v for m, n, v in store.counter_history(m0, 2)} == {
        (m0, "hits"): 19, (m0, "misses"): 8, (m0, "puts"): 1}
    assert {n for _, n, _ in store.counter_history(m0 + 1, 1)} == {"hits", "puts"}
    counters = store.counters()  # the series' own bookkeeping never shows as a counter
    assert (counters["hits"], counters["misses"], counters["puts"]) == (19, 8, 1)
    assert not [n for n in counters if n.startswith("minute")]


def test_partitions_oldest_first(store: Store) -> None:
    insert(store, entry(1, namespace="a", scope="s2"), entry(2, namespace="a"),
           entry(3, namespace="b"))
    insert(store, entry(4, namespace="a", scope="s1"))
    assert [s for _, s in store.partitions("a")] == ["s2", "", "s1"]
    pid = store.find_partition("a", "s1")
    assert pid is not None and (pid, "s1") in store.partitions("a")
    assert store.find_partition("a", "nope") is None
    assert store.get_by_key(key(4)).partition_id == pid  # type: ignore[union-attr]


# -- ordering promises ---------------------------------------------------------------------------


def test_list_entries_orders_and_pages(store: Store) -> None:
    insert(store, *(entry(i, created_at=T0 + (i * 7) % 5, accessed_at=T0 + 10 - i)
                    for i in range(5)))
    ids = [r.id for r in store.list_entries(EntryFilter(), order="id")]
    assert ids == sorted(ids)
    with store.write() as txn:
        txn.apply_access({ids[3]: AccessUpdate(T0 + 100, hits=4), ids[1]: AccessUpdate(T0, 2)})
    created = [r.created_at for r in store.list_entries(EntryFilter(), order="newest")]
    assert created == sorted(created, reverse=True)
    oldest = [r.created_at for r in store.list_entries(EntryFilter(), order="oldest")]
    assert oldest == sorted(oldest)
    assert [r.id for r in store.list_entries(EntryFilter(), order="hits")][:2] == [ids[3],
                                                                                  ids[1]]
    assert store.list_entries(EntryFilter(), order="accessed")[0].id == ids[3]
    page = store.list_entries(EntryFilter(), order="id", after_id=ids[1], limit=2)
    assert [r.id for r in page] == ids[2:4]


def test_namespaces_biggest_first_then_by_name(store: Store) -> None:
    insert(store, *(entry(i, namespace="small") for i in range(2)),
           *(entry(10 + i, namespace="big", expires_at=T0 + 5 if i == 0 else None)
             for i in range(3)),
           *(entry(20 + i, namespace="also-small") for i in range(2)))
    summary = store.namespace_summary(T0 + 10)
    assert [s.namespace for s in summary] == ["big", "also-small", "small"]
    big = summary[0]
    assert (big.entries, big.expired, big.hits) == (3, 1, 0) and big.bytes > 0


def test_nearest_is_best_first_ties_newest_first(store: Store) -> None:
    rng = np.random.default_rng(2)
    base = unit(rng)[0]
    close, far = near(base, 0.99, rng), near(base, 0.90, rng)
    ids = insert(store, entry(1, far), entry(2, close), entry(3, base), entry(4, base))
    pid = store.find_partition("default", "")
    assert pid is not None
    found = store.nearest(base, code_of(base), pid, T0, 16)
    assert found.damaged == []
    assert [r.id for r, _ in found.ranked] == [ids[3], ids[2], ids[1], ids[0]]
    sims = [s for _, s in found.ranked]
    assert sims[0] == pytest.approx(1.0, abs=1e-6) and sims[2] == pytest.approx(0.99, abs=1e-5)
    assert len(store.nearest(base, code_of(base), pid, T0, 2).ranked) == 2


def test_nearest_stays_in_its_partition(store: Store) -> None:
    rng = np.random.default_rng(3)
    v = unit(rng)[0]
    insert(store, entry(1, v, namespace="a"), entry(2, v, namespace="b"),
           entry(3, v, namespace="a", scope="s"))
    for ns, scope, expected in (("a", "", 1), ("b", "", 2), ("a", "s", 3)):
        pid = store.find_partition(ns, scope)
        assert pid is not None
        got = store.nearest(v, code_of(v), pid, T0, 16).ranked
        assert [store.get_by_ids([r.id])[0].partition_id for r, _ in got] == [pid]
        assert got[0][0].id == store.get_by_key(key(expected)).id  # type: ignore[union-attr]


def test_nearest_sees_what_was_committed_before_it_began(store: Store, location: str) -> None:
    """A search reads the cache as it is when the search begins, whatever check ran before:
    the SQLite store once reused the ``PRAGMA data_version`` of the thread's last
    incarnation check, however old, and trusted a mirror that missed a commit made since by
    a writer that does not update the mirror (hand-made SQL, a writer killed after COMMIT;
    here one opened without it)."""
    rng = np.random.default_rng(5)
    v = unit(rng)[0]
    insert(store, entry(1, v))
    pid = store.find_partition("default", "")
    assert pid is not None
    assert store.nearest(v, code_of(v), pid, T0, 16).ranked  # in step with the file
    store.check_incarnation()  # a check ... then another connection commits
    other = open_store(location, use_mirror=False)
    try:
        q = near(v, 0.999, rng)
        (new,) = insert(other, entry(2, q))
    finally:
        other.close()
    assert new in [r.id for r, _ in store.nearest(q, code_of(q), pid, T0, 16).ranked]


def test_verdicts_oldest_first_and_blocked_entries(store: Store) -> None:
    (a, b) = insert(store, entry(1, namespace="n1"), entry(2, namespace="n2"))
    q = b"q" * 32
    with store.write() as txn:
        txn.record_verdict(Verdict(a, "n1", q, "semantic", 0.93, False, T0))
        txn.record_verdict(Verdict(b, "n2", q, "semantic", 0.95, True, T0 + 1))
        txn.record_verdict(Verdict(b, "n2", None, "exact", 1.0, True, T0 + 2))
    assert store.blocked_entries(q) == {a}  # only a wrong verdict blocks
    assert store.blocked_entries(b"other" * 6 + b"xx") == set()
    all_verdicts = store.verdicts()
    assert [v.created_at for v in all_verdicts] == [T0, T0 + 1, T0 + 2]
    assert all_verdicts[0] == Verdict(a, "n1", q, "semantic", 0.93, False, T0)
    assert [v.entry_id for v in store.verdicts("n2")] == [b, b]


def test_restored_verdicts_are_moved_not_doubled(store: Store) -> None:
    (a, b) = insert(store, entry(1, namespace="n1"), entry(2, namespace="n1"))
    q = b"q" * 32
    exported = Verdict(a, "n1", q, "semantic", 0.93, False, T0)
    with store.write() as txn:
        txn.restore_verdicts([exported, Verdict(0, "n1", None, "exact", 1.0, True, T0 + 1)])
    assert store.blocked_entries(q) == {a}
    with store.write() as txn:  # the same export imported again: its entry has a new id
        txn.restore_verdicts([Verdict(b, "n1", q, "semantic", 0.93, False, T0)])
    assert store.blocked_entries(q) == {b}
    assert [(v.entry_id, v.created_at) for v in store.verdicts("n1")] == [(b, T0), (0, T0 + 1)]
    with store.write() as txn:  # another verdict (another time) is another record
        txn.restore_verdicts([Verdict(b, "n1", q, "semantic", 0.93, False, T0 + 5)])
    assert len(store.verdicts()) == 3


def test_outcomes_are_kept_per_entry_and_pooled_per_namespace_and_bin(store: Store) -> None:
    (a, b) = insert(store, entry(1, namespace="n1"), entry(2, namespace="n2"))
    n = OUTCOMES_PER_ENTRY + 4
    with store.write() as txn:
        txn.record_outcomes([Outcome(a, "n1", 0.9, 0.01, 3, i % 4 != 0, "explore", T0 + i)
                             for i in range(n)])
        txn.record_outcomes([Outcome(b, "n2", 0.95, 0.2, 7, False, "feedback", T0)])
    kept = store.entry_outcomes(a)  # the newest, oldest first
    assert [o.created_at for o in kept] == [T0 + i for i in range(4, n)]
    assert kept[-1] == Outcome(a, "n1", 0.9, 0.01, 3, (n - 1) % 4 != 0, "explore", T0 + n - 1)
    assert store.entry_outcomes(b) == [Outcome(b, "n2", 0.95, 0.2, 7, False, "feedback", T0)]
    assert store.entry_outcomes(9999) == []
    (pool,) = store.outcome_pools("n1")  # the pools keep every count, trimmed or not
    assert (pool.bin, pool.right, pool.wrong) == (3, n - 5, 5)
    assert pool.expected == pytest.approx(0.01 * n)
    assert store.outcome_pools("n2") == [OutcomePool(7, 0, 1, pytest.approx(0.2))]
    assert [o.namespace for o in store.outcomes()] == ["n1"] * OUTCOMES_PER_ENTRY + ["n2"]
    assert len(store.outcomes("n2")) == 1 and store.outcome_pools("none") == []
    with pytest.raises(RuntimeError), store.write() as txn:  # all or nothing with the txn
        txn.record_outcomes([Outcome(b, "n2", 0.95, 0.2, 7, True, "explore", T0 + 1)])
        raise RuntimeError("the put fails")
    assert len(store.entry_outcomes(b)) == 1 and store.outcome_pools("n2")[0].right == 0


def test_restored_pools_keep_the_larger_counts(store: Store) -> None:
    with store.write() as txn:
        txn.record_outcomes([Outcome(1, "n1", 0.9, 0.05, 2, False, "explore", T0)])
    exported = [OutcomePool(2, 10, 0, 0.5), OutcomePool(4, 3, 2, 0.25)]
    for _ in range(2):  # imported twice: counted once
        with store.write() as txn:
            txn.restore_pools("n1", exported)
    assert store.outcome_pools("n1") == [OutcomePool(2, 10, 1, 0.5), OutcomePool(4, 3, 2, 0.25)]


# -- expiry and eviction ------------------------------------------------------------------------------


def test_expired_entries_are_not_candidates_and_purge_removes_them(store: Store) -> None:
    rng = np.random.default_rng(4)
    v = unit(rng)[0]
    ids = insert(store, entry(1, v, expires_at=T0 + 10), entry(2, v), entry(3, v,
                                                                              expires_at=T0 + 20))
    pid = store.find_partition("default", "")
    assert pid is not None
    assert {r.id for r, _ in store.nearest(v, code_of(v), pid, T0 + 5, 16).ranked} == set(ids)
    later = {r.id for r, _ in store.nearest(v, code_of(v), pid, T0 + 15, 16).ranked}
    assert later == {ids[1], ids[2]}
    assert store.count_entries(EntryFilter(expired_at=T0 + 15)) == 1
    assert store.count_entries(EntryFilter(live_at=T0 + 15)) == 2
    with store.write() as txn:
        assert txn.purge_expired(T0 + 15) == 1
    assert store.get_by_ids([ids[0]]) == [] and store.counters()["entries"] == 2


def test_refreshed_expiry_only_moves_out(store: Store) -> None:
    rng = np.random.default_rng(5)
    v = unit(rng)[0]
    (eid,) = insert(store, entry(1, v, expires_at=T0 + 100))
    with store.write() as txn:
        txn.apply_access({eid: AccessUpdate(T0 + 50, hits=1, expires_at=T0 + 300)})
    with store.write() as txn:  # an older batch from another process must not move it back
        txn.apply_access({eid: AccessUpdate(T0 + 40, hits=1, expires_at=T0 + 200)})
    row = store.get_by_ids([eid])[0]
    assert (row.expires_at, row.accessed_at, row.hits) == (T0 + 300, T0 + 50, 2)
    pid = store.find_partition("default", "")
    assert pid is not None
    assert store.nearest(v, code_of(v), pid, T0 + 250, 16).ranked[0][0].id == eid


def test_evict_lru_removes_the_least_recently_accessed(store: Store) -> None:
    ids = insert(store, *(entry(i, accessed_at=T0 + i) for i in range(5)))
    with store.write() as txn:
        txn.apply_access({ids[0]: AccessUpdate(T0 + 100, hits=1)})  # now the most recent
    with store.write() as txn:
        assert txn.entry_count() == 5
        assert txn.evict_lru(2) == 2
        assert txn.entry_count() == 3
    assert sorted(r.id for r in store.list_entries(EntryFilter())) == [ids[0], ids[3], ids[4]]


def test_entry_bytes_are_the_sizes_summed_and_evict_bytes_frees_lru_first(
        store: Store) -> None:
    rng = np.random.default_rng(9)
    made = [entry(i, unit(rng)[0], prompt="é" * i, metadata='{"k": 1}' if i % 2 else None,
                  accessed_at=T0 + i) for i in range(6)]
    made[5].key_material = b"material"
    ids = insert(store, *made)
    sizes = {r.id: r.size for r in store.list_entries(EntryFilter())}
    assert [sizes[i] for i in ids] == [entry_size(e) for e in made]
    assert entry_size(made[2]) == entry_size(made[1]) + 2 - len('{"k": 1}')  # é: 2 bytes
    with store.write() as txn:
        txn.apply_access({ids[0]: AccessUpdate(T0 + 100, hits=1)})  # now the most recent
    with store.write() as txn:
        assert txn.entry_bytes() == sum(sizes.values())
        # Freeing one byte more than the oldest entry holds takes the two oldest.
        assert txn.evict_bytes(sizes[ids[1]] + 1) == 2
        assert txn.entry_bytes() == sum(sizes.values()) - sizes[ids[1]] - sizes[ids[2]]
        (extra,) = txn.insert_many([entry(9, prompt="new")])
        assert txn.entry_bytes() == sum(sizes.values()) - sizes[ids[1]] - sizes[ids[2]] + \
            entry_size(entry(9, prompt="new"))
    left = sorted(r.id for r in store.list_entries(EntryFilter()))
    assert left == sorted([ids[0], ids[3], ids[4], ids[5], extra])
    assert store.counters()["bytes"] == sum(r.size for r in store.list_entries(EntryFilter()))
    with store.write() as txn:
        assert txn.evict_bytes(10 ** 9) == 5 and txn.entry_bytes() == 0
    assert store.counters()["bytes"] == 0 and store.check()[1] == []


def test_deletes_by_filter_and_clear(store: Store) -> None:
    insert(store, entry(1, namespace="a", prompt="x"), entry(2, namespace="a", scope="s"),
           entry(3, namespace="b", prompt="x"), entry(4, namespace="b"))
    assert store.count_entries(EntryFilter(prompt="x")) == 2
    assert store.count_entries(EntryFilter(scoped=True)) == 1
    with store.write() as txn:
        gone = txn.delete(EntryFilter(namespace="a", scoped=False))
        assert len(gone) == 1
        assert len(txn.delete(EntryFilter(key_hash=key(4)))) == 1
    assert store.count_entries(EntryFilter()) == 2
    with store.write() as txn:
        assert txn.clear_all() == 2
    assert store.count_entries(EntryFilter()) == 0 and store.counters()["entries"] == 0


# -- claims across processes -----------------------------------------------------------------------


def _try_claim(location: str, k: bytes, out: mp.Queue) -> None:  # type: ignore[type-arg]
    s = open_store(location)
    try:
        out.put(s.claim(k, 60.0))
        s.release(k)
    finally:
        s.close()


def _claim_elsewhere(location: str, k: bytes) -> bool:
    out = CTX.Queue()
    proc = CTX.Process(target=_try_claim, args=(location, k, out))
    proc.start()
    got = out.get(timeout=120)
    proc.join(60)
    return bool(got)


def test_claims_exclude_other_processes_until_released(store: Store, location: str) -> None:
    k = b"k" * 32
    assert store.claim(k, 60.0)
    assert not _claim_elsewhere(location, k)
    assert _claim_elsewhere(location, b"j" * 32)  # another key is free
    store.release(k)
    assert _claim_elsewhere(location, k)


# -- settings ----------------------------------------------------------------------------------------


def test_settings_are_shared_through_the_cache(store: Store, location: str) -> None:
    store.write_settings({"threshold:tenant": "0.97", "similarity_threshold": "0.9"})
    assert store.settings["threshold:tenant"] == "0.97"
    other = open_store(location)
    try:
        assert other.settings["threshold:tenant"] == "0.97"
        assert other.settings["similarity_threshold"] == "0.9"
        other.write_settings({"threshold:tenant": "null"})
    finally:
        other.close()
    again = open_store(location)
    try:
        assert again.settings["threshold:tenant"] == "null"
    finally:
        again.close()


def test_pinned_settings_are_decided_once(store: Store, location: str) -> None:
    other = open_store(location)
    try:
        first = store.pin_settings({"embedder": "first:8", "projection_seed": "1"})
        second = other.pin_settings({"embedder": "second:16", "projection_seed": "2",
                                     "extra": "x"})
        assert first["embedder"] == second["embedder"] == "first:8"  # a stored value stays
        assert second["projection_seed"] == "1" and second["extra"] == "x"  # missing: added
        assert other.settings == second and store.settings["embedder"] == "first:8"
    finally:
        other.close()


def test_read_settings_sees_what_another_store_wrote(store: Store, location: str) -> None:
    other = open_store(location)
    try:
        other.write_settings({"threshold:tenant": "0.97"})
        assert "threshold:tenant" not in store.settings  # read at open
        fresh = store.read_settings()
        assert fresh["threshold:tenant"] == "0.97" and store.settings == fresh
    finally:
        other.close()


# -- damaged rows ---------------------------------------------------------------------------------


def test_damaged_vectors_are_skipped_reported_and_checked(store: Store) -> None:
    rng = np.random.default_rng(6)
    v = unit(rng)[0]
    good = entry(1, v)
    short = entry(2, v)
    short.vector = v[:4].astype("<f4").tobytes()  # not DIM floats
    missing = entry(3, v)
    missing.vector = None  # a code but no vector
    zero = entry(4, v)
    zero.vector = np.zeros(DIM, dtype="<f4").tobytes()
    ids = insert(store, good, short, missing, zero)
    pid = store.find_partition("default", "")
    assert pid is not None
    found = store.nearest(v, code_of(v), pid, T0, 16)  # never raises on them
    assert [r.id for r, _ in found.ranked] == [ids[0]]
    assert sorted(found.damaged) == sorted(ids[1:])
    sections, problems = store.check()
    assert any("damaged stored vector" in p for p in problems), problems
    assert sorted(sections["database"]["damaged_vectors"]) == sorted(ids[1:])


def test_a_healthy_cache_checks_clean_and_vacuums(store: Store) -> None:
    rng = np.random.default_rng(7)
    insert(store, *(entry(i, v) for i, v in enumerate(unit(rng, 5))))
    sections, problems = store.check()
    assert problems == [] and "database" in sections
    assert store.check(quick=True)[1] == []
    done = store.vacuum()
    assert isinstance(done, dict) and all(isinstance(n, int) for n in done.values())
    assert store.check()[1] == []


# -- lifetime --------------------------------------------------------------------------------------


def test_readonly_store_refuses_writes(store: Store, location: str) -> None:
    insert(store, entry(1))
    reader = open_store(location, readonly=True)
    try:
        assert reader.readonly and reader.get_by_key(key(1)) is not None
        with pytest.raises(ReadOnlyCacheError), reader.write() as txn:
            txn.insert_many([entry(2)])
    finally:
        reader.close()
    assert store.get_by_key(key(2)) is None


def test_created_create_false_and_drop(make_location) -> None:  # noqa: ANN001
    location = make_location("other.db")
    with pytest.raises(CacheNotFoundError):
        open_store(location, create=False)
    s = open_store(location)
    assert s.created
    insert(s, entry(1))
    s.close()
    again = open_store(location, create=False)
    assert not again.created and again.get_by_key(key(1)) is not None
    again.drop(if_empty=True)  # it holds an entry: kept
    assert store_exists(location)
    last = open_store(location)
    last.drop()
    assert not store_exists(location)


def test_upkeep_never_waits_and_leaves_nothing_due(store: Store) -> None:
    rng = np.random.default_rng(8)
    insert(store, *(entry(i, v) for i, v in enumerate(unit(rng, 30))))
    started = time.monotonic()
    store.upkeep()
    assert time.monotonic() - started < 5
    assert not store.upkeep_due
    store.warmup()
    assert store.check()[1] == []


# -- incarnations -----------------------------------------------------------------------------


def _fill_other_cache(vectors: np.ndarray) -> Callable[[Store], object]:
    """The replacement's content: tenant-b first, so that partition ids differ."""

    def fill(other: Store) -> None:
        other.write_settings({"db_uid": uuid.uuid4().hex, "dim": str(DIM)})
        insert(other, entry(3, vectors[2], namespace="tenant-b"),
               entry(4, vectors[3], namespace="tenant-a", prompt="the new cache's"))

    return fill


def test_a_replaced_cache_is_seen_and_its_memos_are_not_served(
        store: Store, location: str, tmp_path: Path) -> None:
    vectors = unit(np.random.default_rng(20), 4)
    insert(store, entry(1, vectors[0], namespace="tenant-a"),
           entry(2, vectors[1], namespace="tenant-b"))
    old_a, old_token = store.find_partition("tenant-a", ""), store.incarnation
    assert old_token is not None and old_a is not None
    seen: list[str | None] = []
    store.on_incarnation = lambda: seen.append(store.incarnation)
    assert store.check_incarnation(force=True) is False and seen == []
    replace_cache(location, _fill_other_cache(vectors), tmp_path)
    assert store.check_incarnation(force=True) is True  # the new token is taken once
    assert store.check_incarnation(force=True) is False
    assert seen == [store.incarnation] and store.incarnation not in (None, old_token)
    assert store.settings["incarnation"] == store.incarnation  # settings read again
    new_a = store.find_partition("tenant-a", "")
    row = store.get_by_key(key(4))
    assert row is not None and row.partition_id == new_a != old_a
    found = store.nearest(vectors[3], code_of(vectors[3]), new_a, T0, 4)
    assert [r.id for r, _ in found.ranked] == [row.id]


def test_a_write_after_a_replacement_lands_in_the_new_cache(
        store: Store, location: str, tmp_path: Path) -> None:
    vectors = unit(np.random.default_rng(21), 5)
    insert(store, entry(1, vectors[0], namespace="tenant-a"),
           entry(2, vectors[1], namespace="tenant-b"))
    minute = 28_000_000
    with store.write() as txn:  # this minute of the time series is open in this process
        txn.add_counters({"hits": 1}, minute * 60)
    seen: list[str | None] = []
    store.on_incarnation = lambda: seen.append(store.incarnation)
    replace_cache(location, _fill_other_cache(vectors), tmp_path)
    # no explicit check first: the write itself must notice (SQLite: at BEGIN; PostgreSQL:
    # its insert statement carries the token it learnt its partition ids under)
    with store.write() as txn:
        (new_id,) = txn.insert_many([entry(5, vectors[4], namespace="tenant-a")])
        txn.add_counters({"hits": 2}, minute * 60 + 1)  # the same minute, the new cache
    assert len(seen) == 1
    assert store.counter_history(minute, 1) == [(minute, "hits", 2)]
    row = store.get_by_key(key(5))
    assert row is not None and row.id == new_id
    assert row.partition_id == store.find_partition("tenant-a", "")
    assert store.count_entries(EntryFilter(namespace="tenant-a")) == 2  # 4 and 5
    assert store.check()[1] == []


def test_a_refused_replacement_stays_refused(store: Store, location: str,
                                             tmp_path: Path) -> None:
    vectors = unit(np.random.default_rng(22), 4)
    old_token = store.incarnation

    def refuse() -> None:
        raise SemcacheError("pinned to another embedder")

    store.on_incarnation = refuse
    replace_cache(location, _fill_other_cache(vectors), tmp_path)
    for _ in range(2):  # the old token is kept: every later check refuses again
        with pytest.raises(SemcacheError, match="another embedder"):
            store.check_incarnation(force=True)
        assert store.incarnation == old_token
