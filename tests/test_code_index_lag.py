"""The sqlite-vec table ``entry_codes`` follows ``entries`` in batches (schema 5).

Puts do not write their entry_codes row; ``sync_state.codes_through`` marks how far the
table is complete, and catch-ups (a write far behind, the flush timer, close, vacuum) move it.
Whatever the lag, the SQL search must find every live entry at once, ``semcache verify`` must
tell pending rows from missing ones, and the table must end complete.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

import semcache
import semcache.cache._writer as writer_module
import semcache.store.sqlite.write as sqlite_write
from semcache.store.sqlite import SQLiteStore, codes
from semcache.store.sqlite.connection import Database
from tests.conftest import sql_rows

DIM = 32
CTX = mp.get_context("spawn")


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _marks(path: str) -> tuple[int, int, int]:
    """(codes_through, entry_codes rows, entries with a code)."""
    through = sql_rows(path, "SELECT codes_through FROM sync_state")[0][0]
    rows = sql_rows(path, "SELECT count(*) FROM entry_codes")[0][0]
    coded = sql_rows(path, "SELECT count(*) FROM entries WHERE code IS NOT NULL")[0][0]
    return through, rows, coded


def _catch_up(path: str) -> None:
    """Write every pending entry_codes row, as the engine's upkeep does in batches."""
    store = SQLiteStore(path)
    try:
        store.catch_up_codes(None)
    finally:
        store.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(99)


@pytest.fixture(autouse=True)
def no_timer_catch_up(monkeypatch):
    """The flush timer would catch up within a second; these tests look at the lag itself
    (the timer's own test sets a short interval)."""
    monkeypatch.setattr(writer_module, "FLUSH_INTERVAL", 3600.0)


def test_put_leaves_the_row_pending_and_close_writes_it(db_path, rng):
    with semcache.open(db_path, dim=DIM) as cache:
        cache.put_many([(_unit(rng), i) for i in range(30)])
        assert _marks(db_path) == (0, 0, 30)  # nothing written for sqlite-vec yet
        report = semcache.verify(db_path)
        assert report["ok"] and report["vec0"]["pending"] == 30
        assert report["vec0"]["missing"] == 0 and report["vec0"]["agrees"]
    through, rows, coded = _marks(db_path)
    assert rows == coded == 30 and through >= 30
    report = semcache.verify(db_path)
    assert report["ok"] and "pending" not in report["vec0"]


def test_sql_search_finds_pending_entries_at_once(db_path, rng):
    stored = [_unit(rng) for _ in range(40)]
    with semcache.open(db_path, dim=DIM, similarity_threshold=0.9) as writer:
        writer.put_many([(v, i) for i, v in enumerate(stored[:20])])
        _catch_up(db_path)  # half in entry_codes, half pending
        writer.put_many([(v, 20 + i) for i, v in enumerate(stored[20:])])
        assert _marks(db_path)[1] == 20
        with semcache.open(db_path, dim=DIM, similarity_threshold=0.9,
                           use_mirror=False) as sql_only:
            for i in (3, 25, 39):
                hit = sql_only.get(stored[i])
                assert hit is not None and hit.response == i
        reader = semcache.open(db_path, dim=DIM, similarity_threshold=0.9, readonly=True)
        try:
            assert reader.get(stored[33]).response == 33  # read-only: SQL search only
        finally:
            reader.close()


def test_knn_merges_the_table_and_the_pending_entries_exactly(db_path, rng):
    with semcache.open(db_path, dim=DIM, max_entries=None) as cache:
        vectors = [_unit(rng) for _ in range(300)]
        ids = cache.put_many([(v, i) for i, v in enumerate(vectors[:150])])
        _catch_up(db_path)
        ids += cache.put_many([(v, i) for i, v in enumerate(vectors[150:], 150)])
        assert _marks(db_path)[:2] == (150, 150)  # the other 150 are pending
        encoder = semcache.BinaryEncoder(DIM, 256, 0)
        (pid,), = sql_rows(db_path, "SELECT id FROM partitions WHERE namespace = 'default'")
        stored = encoder.encode(np.stack(vectors))
        db = Database(db_path, readonly=True)  # the engine's SQL search, with no mirror
        try:
            for _ in range(5):
                query = encoder.encode(_unit(rng))
                got = codes.knn(db, query.tobytes(), pid, time.time(), 16)
                distances = np.bitwise_count(stored ^ query).sum(axis=1)
                expected = sorted(int(d) for d in distances)[:16]
                assert [d for _, d in got] == expected
                assert all(int(distances[ids.index(i)]) == d for i, d in got)
        finally:
            db.close()


def test_expired_and_deleted_pending_entries_are_not_found_nor_indexed(db_path, clock, rng):
    with semcache.open(db_path, dim=DIM, clock=clock, use_mirror=False) as cache:
        keep, gone, old = _unit(rng), _unit(rng), _unit(rng)
        cache.put(keep, "keep")
        cache.delete(cache.put(gone, "gone"))
        cache.put(old, "old", ttl=10)
        clock.advance(11)
        assert cache.get(keep).response == "keep"
        assert cache.get(gone) is None and cache.get(old) is None
    _catch_up(db_path)
    assert sql_rows(db_path, "SELECT count(*) FROM entry_codes")[0][0] == 2  # keep + old
    assert semcache.verify(db_path)["ok"]


def test_a_write_far_behind_catches_up_in_its_transaction(db_path, rng, monkeypatch):
    monkeypatch.setattr(sqlite_write, "CODES_LAG_MAX", 50)
    with semcache.open(db_path, dim=DIM) as cache:
        cache.put_many([(_unit(rng), i) for i in range(40)])
        assert _marks(db_path)[:2] == (0, 0)
        cache.put_many([(_unit(rng), i) for i in range(20)])  # 60 behind: > 50
        through, rows, coded = _marks(db_path)
        assert rows == coded == 60 and through == 60
        assert not cache._store.upkeep_due  # nothing left for the upkeep of this process


def test_the_flush_of_a_hit_catches_up_while_the_cache_stays_open(db_path, rng, monkeypatch):
    monkeypatch.setattr(writer_module, "FLUSH_INTERVAL", 0.05)
    with semcache.open(db_path, dim=DIM) as cache:
        vectors = [_unit(rng) for _ in range(25)]
        cache.put_many([(v, i) for i, v in enumerate(vectors)])
        time.sleep(0.3)  # idle, nothing pending: the timer writes nothing on its own
        assert _marks(db_path)[1] == 0
        assert cache.get(vectors[3]) is not None  # a batched hit: its flush catches up
        deadline = time.monotonic() + 10
        while _marks(db_path)[1] < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _marks(db_path)[1] == 25


def test_a_pending_expiry_change_is_indexed_with_its_new_value(db_path, clock, rng):
    with semcache.open(db_path, dim=DIM, clock=clock, refresh_on_access=True) as cache:
        v = _unit(rng)
        cache.put(v, "a", ttl=100)
        clock.advance(50)
        assert cache.get(v).response == "a"  # pushes the expiry out (batched)
        cache.flush()
    report = semcache.verify(db_path)
    assert report["ok"] and report["vec0"]["mismatched"] == 0, report["vec0"]


def test_vacuum_catches_up_and_drops_rows_ahead_of_the_mark(db_path, rng):
    import apsw
    import sqlite_vec

    with semcache.open(db_path, dim=DIM) as cache:
        cache.put_many([(_unit(rng), i) for i in range(10)])
        conn = apsw.Connection(db_path)
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        conn.execute("INSERT INTO entry_codes (entry_id, partition_id, expires_at, code) "
                     "VALUES (10, 1, 4611686018427387904, vec_bit(?))", (b"\x01" * 32,))
        conn.close()  # a row made by hand above the mark (entry 10's real code differs)
        assert not semcache.verify(db_path)["ok"]
        done = cache.vacuum()
        assert done["orphan_codes"] == 1 and done["missing_codes"] == 0
    assert _marks(db_path)[1:] == (10, 10)
    assert semcache.verify(db_path)["ok"]


def _writer(path: str, ready: mp.Event) -> None:  # type: ignore[valid-type]
    writer_module.FLUSH_INTERVAL = 3600.0  # no timer catch-up before the kill
    rng = np.random.default_rng(5)
    cache = semcache.open(path, dim=DIM)
    for i in range(20):
        cache.put(_unit(rng), i)
    ready.set()
    time.sleep(60)  # killed here: no close, no catch-up


def test_killed_writer_leaves_pending_rows_that_stay_searchable(db_path):
    ready = CTX.Event()
    proc = CTX.Process(target=_writer, args=(db_path, ready))
    proc.start()
    assert ready.wait(60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    report = semcache.verify(db_path)
    assert report["ok"] and report["vec0"]["missing"] == 0 and report["vec0"]["pending"] == 20
    rng = np.random.default_rng(5)
    vectors = [_unit(rng) for _ in range(20)]
    reader = semcache.open(db_path, dim=DIM, readonly=True)
    try:
        assert reader.get(vectors[7]).response == 7
    finally:
        reader.close()
    with semcache.open(db_path, dim=DIM) as cache:
        cache.vacuum()
    assert _marks(db_path)[1] == 20 and semcache.verify(db_path)["ok"]
