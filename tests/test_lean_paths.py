"""The lean exact hit and the batched write path give the same results as the general ones.

The hot paths take shortcuts (a remembered prompt key, a response memo that hands out
immutable values, a batched ``put_many`` that validates and normalizes vectors as one
array, an INSERT without RETURNING, a lock-free gate); these tests check each shortcut
against what the one-at-a-time path stores and returns, on real files.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import numpy as np
import pytest

import semcache
from semcache.cache._gate import Gate
from semcache.cache._responses import ResponseMemo
from semcache.cache._writer import BUSY_RETRY, Writer
from semcache.kernels.projection import validate_matrix, validate_vector, validate_vectors
from semcache.keys import (
    MEMO_PROMPTS,
    PromptKeyMemo,
    prompt_key_hash,
    vector_key_hash,
    vector_key_hashes,
)
from semcache.store import open_store
from semcache.store.codecs import decode_response, encode_response
from tests.conftest import sql_rows

DIM = 16


def _rows(path: str) -> list[tuple]:
    return sql_rows(path, "SELECT key_hash, partition_id, prompt, response, code, vector, "
                          "expires_at, ttl, tokens, metadata FROM entries ORDER BY id")


# -- keys and validation -------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["q", " padded ", "é😀 unicode", "x" * 600, "\x00nul"])
def test_prompt_keys_equal_prompt_key_and_are_remembered(prompt):
    keys = PromptKeyMemo()
    for _ in range(2):  # computed, then (for short prompts) remembered
        text, key = keys.key(prompt, "ns")
        assert text == prompt and key == prompt_key_hash(prompt, "ns")
    assert keys.key(prompt, "other")[1] == prompt_key_hash(prompt, "other") != key


@pytest.mark.parametrize("bad, error", [
    ("", semcache.EmptyPromptError), (" \n\t", semcache.EmptyPromptError),
    (None, semcache.InvalidTypeError), (b"bytes", semcache.InvalidTypeError),
    ("q\ud800", semcache.InvalidInputError), ("x" * (1024 * 1024 + 1), semcache.TooLargeError),
])
def test_prompt_keys_refuse_what_check_prompt_refuses(bad, error):
    keys = PromptKeyMemo()
    with pytest.raises(error):
        keys.key(bad, "ns")
    with pytest.raises(error):  # and never remember it
        keys.key(bad, "ns")


def test_prompt_key_memo_is_bounded():
    keys = PromptKeyMemo()
    for i in range(MEMO_PROMPTS + 10):
        keys.key(f"prompt {i}", "ns")
    assert sum(len(m) for m in keys.remembered.values()) <= MEMO_PROMPTS
    assert keys.key("prompt 3", "ns")[1] == prompt_key_hash("prompt 3", "ns")


def test_str_subclass_prompt_takes_the_general_path(db_path):
    class Text(str):
        pass

    with semcache.open(db_path, hash_only=True) as cache:
        cache.put(Text("question"), "answer")
        assert cache.get("question").response == "answer"
        assert cache.get(Text("question")).response == "answer"


def test_vector_keys_and_rows_equal_the_single_path():
    rng = np.random.default_rng(5)
    vectors = [rng.standard_normal(DIM).astype(np.float32) for _ in range(50)]
    vectors += [rng.standard_normal(DIM) * 1e-300 for _ in range(5)]  # float64, subnormal-ish
    assert vector_key_hashes(vectors, "ns") == [vector_key_hash(v, "ns") for v in vectors]
    units = validate_vectors(vectors, DIM)
    matrix = validate_matrix(np.asarray(vectors, dtype=np.float64), DIM)
    for v, row, mrow in zip(vectors, units, matrix, strict=True):
        assert row.tobytes() == validate_vector(v, DIM).tobytes() == mrow.tobytes()
    mixed = [[1, 2] + [0] * (DIM - 2), np.arange(DIM, dtype=np.int64) + 1]  # lists, ints
    assert vector_key_hashes(mixed, "ns") == [vector_key_hash(v, "ns") for v in mixed]


@pytest.mark.parametrize("bad", [
    [np.zeros(DIM)], [np.full(DIM, np.nan)], [np.ones(DIM + 1)], [np.ones((1, DIM))],
    [np.ones(DIM), np.ones(DIM - 1)], [np.ones(DIM, dtype=np.complex64)],
])
def test_batched_vector_validation_raises_like_the_single_one(bad):
    with pytest.raises(semcache.InvalidVectorError) as batched:
        validate_vectors(bad, DIM)
    with pytest.raises(semcache.InvalidVectorError) as single:
        for v in bad:
            validate_vector(v, DIM)
    assert type(batched.value) is type(single.value)
    assert str(batched.value) == str(single.value)


# -- put_many against put ------------------------------------------------------------------


def test_put_many_of_vectors_stores_what_put_stores(tmp_path):
    rng = np.random.default_rng(11)
    vectors = [rng.standard_normal(DIM).astype(np.float32) for _ in range(40)]
    one, many = str(tmp_path / "one.db"), str(tmp_path / "many.db")
    with semcache.open(one, dim=DIM, max_entries=None, ttl=60) as cache:
        for i, v in enumerate(vectors):
            cache.put(v, {"i": i}, metadata={"m": 1}, tokens=3)
    with semcache.open(many, dim=DIM, max_entries=None, ttl=60) as cache:
        ids = cache.put_many([(v, {"i": i}) for i, v in enumerate(vectors)],
                             metadata={"m": 1}, tokens=3)
    assert ids == sorted(ids) and len(set(ids)) == 40
    ignore_time = [r[:6] + r[7:] for r in _rows(one)], [r[:6] + r[7:] for r in _rows(many)]
    assert ignore_time[0] == ignore_time[1]


def test_put_many_of_texts_with_a_shared_vector(db_path):
    vector = np.arange(1, DIM + 1, dtype=np.float32)
    with semcache.open(db_path, dim=DIM, max_entries=None) as cache:
        cache.put_many([("a", 1), ("b", 2)], vector=vector)
        cache.put("c", 3, vector=vector)
        hit = cache.get(vector)
        assert hit is not None and hit.similarity == pytest.approx(1.0)
    codes = sql_rows(db_path, "SELECT code, vector FROM entries ORDER BY id")
    assert len(set(codes)) == 1  # one code and one stored vector for all three


def test_put_many_with_a_key_twice_keeps_the_last(db_path):
    with semcache.open(db_path, hash_only=True) as cache:
        ids = cache.put_many([("q", "first"), ("other", "x"), ("q", "second")])
        assert ids[2] > ids[0] and cache.get("q").response == "second"
        assert cache.get("q").entry_id == ids[2] and cache.count() == 2
        again = cache.put_many([("q", "third"), ("new", "y")])  # replaces across batches
        assert cache.get("q").entry_id == again[0] and cache.count() == 3


def test_put_many_ids_are_the_rows_ids(db_path):
    with semcache.open(db_path, hash_only=True) as cache:
        cache.put("gap", "x")
        cache.delete(cache.get("gap").entry_id)  # AUTOINCREMENT never reuses it
        ids = cache.put_many([(f"q{i}", i) for i in range(300)])
    by_prompt = dict(sql_rows(db_path, "SELECT prompt, id FROM entries"))
    assert ids == [by_prompt[f"q{i}"] for i in range(300)]


def test_put_many_refuses_bad_items_before_writing(db_path):
    from tests.conftest import file_state

    with semcache.open(db_path, dim=DIM) as cache:
        cache.put("seed", 0, vector=np.ones(DIM))
        before = file_state(db_path)
        bad_batches = [
            ([("ok", 1), ("bad", float("nan"))], semcache.SerializationError),
            ([(np.ones(DIM), 1), (np.zeros(DIM), 2)], semcache.InvalidVectorError),
            ([("ok", 1), ["not", "a tuple"]], semcache.InvalidTypeError),
            ([(np.ones(DIM), 1)], semcache.InvalidInputError),  # with vector= below
        ]
        for i, (items, error) in enumerate(bad_batches):
            with pytest.raises(error):
                cache.put_many(items, vector=np.ones(DIM) if i == 3 else None)
        assert file_state(db_path) == before


@pytest.mark.parametrize("value", ["text", "", "é\n\"q\"\\", 0, -7, 2**63 - 1, 2**64, 2**70,
                                   True, False, None, 0.1, -1e300, 5e-324])
def test_scalar_responses_round_trip_exactly(value):
    back = decode_response(encode_response(value))
    assert back == value and type(back) is type(value)


# -- the exact hit -------------------------------------------------------------------------


def test_response_memo_hands_out_immutable_values_and_fresh_containers(db_path):
    with semcache.open(db_path, hash_only=True) as cache:
        cache.put("s", "a string")
        cache.put("d", {"k": [1, 2]})
        assert cache.get("s").response is cache.get("s").response  # immutable: shared
        first = cache.get("d").response
        first["k"].append(3)  # a caller mutating its answer
        assert cache.get("d").response == {"k": [1, 2]}


def test_response_memo_stays_within_budget():
    memo = ResponseMemo(budget=1000)
    blob = encode_response("x" * 95)
    for i in range(100):
        assert memo.decode(i, blob) == "x" * 95
    assert memo._bytes <= 1000 and len(memo.items) <= 10
    kept = memo.decode(99, blob)
    assert memo.decode(99, bytes(blob)) is kept  # the same bytes: from the memo
    # other bytes under a remembered id (the cache was replaced: ids start over) are
    # decoded, never answered from the memo (issue 20 item 3)
    assert memo.decode(99, encode_response("tenant A's answer")) == "tenant A's answer"
    assert memo._bytes <= 1000


def test_gate_lets_operations_in_flight_finish_before_release(db_path):
    store = open_store(db_path)
    gate = Gate(db_path)
    inside, leave = threading.Event(), threading.Event()
    results: list[object] = []

    def slow_get() -> None:
        with gate:
            inside.set()
            leave.wait(5)
            results.append(store.get_by_key(prompt_key_hash("q", "default")))

    t = threading.Thread(target=slow_get)
    t.start()
    inside.wait(5)
    gate.close(store.close, wait=0.05)  # returns: the release waits for slow_get
    with pytest.raises(semcache.CacheClosedError), gate:
        pass
    leave.set()
    t.join(5)
    assert results == [None]  # ran on an open connection (no such entry: None, no error)
    with pytest.raises(semcache.CacheClosedError):
        gate.check()


def test_many_threads_hit_and_count_exactly(db_path):
    with semcache.open(db_path, hash_only=True) as cache:
        cache.put_many([(f"q{i}", i) for i in range(20)])

        def worker() -> None:
            for _ in range(250):
                for i in range(20):
                    assert cache.get(f"q{i}").response == i

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = cache.stats()
    assert stats["exact_hits"] == 4 * 250 * 20
    hits = sql_rows(db_path, "SELECT sum(hits) FROM entries")[0][0]
    assert hits == 4 * 250 * 20


def test_restore_after_a_failed_flush_keeps_hits_taken_meanwhile(db_path):
    with semcache.open(db_path, hash_only=True) as cache:
        entry = cache.put("q", "a")
    store = open_store(db_path)
    writer = Writer(store, time.time)
    row = store.get_by_key(prompt_key_hash("q", "default"))
    assert row is not None and row.id == entry
    writer.record_hit(row, "exact", time.time(), False)
    access, counts = writer._take()
    writer.record_hit(row, "exact", time.time(), False)  # a hit while that batch was out
    writer._restore(access, counts)  # ... and the write failed
    writer.flush(timeout=None)
    writer.stop()
    store.close()
    assert sql_rows(db_path, "SELECT hits FROM entries WHERE id = ?", (entry,)) == [(2,)]


def _child_put_and_report(path: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    cache = _INHERITED["cache"]
    cache.put("from child", "c")
    pragma = cache._store._db.query("PRAGMA synchronous")[0][0]  # the child's connection
    out.put((cache.get("before fork").response, pragma))
    cache.close()


_INHERITED: dict[str, semcache.Cache] = {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_forked_child_reconnects_with_the_same_pragmas(db_path):
    cache = semcache.open(db_path, hash_only=True)
    cache.put("before fork", "p")
    assert cache.get("before fork").response == "p"  # the parent used its connection
    _INHERITED["cache"] = cache
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_put_and_report, args=(db_path, out))
    child.start()
    response, synchronous = out.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0 and response == "p"
    assert synchronous == 1  # NORMAL, as in the parent (the default would be FULL = 2)
    assert cache.get("from child").response == "c"
    cache.close()


def test_a_due_batch_waits_for_a_busy_write_lock_without_trying_on_every_read(db_path):
    """Another process writing (its flock on ``<db>.lock``): reads (``maybe_flush``) try
    the due batch's write once, and again only after ``BUSY_RETRY`` - not once per read."""
    import fcntl

    from semcache.store import open_store

    with semcache.open(db_path, hash_only=True) as cache:
        cache.put("q", "a")
    store = open_store(db_path)
    writer = Writer(store, time.time)
    writer.stop()  # no flush timer: only the reads below try the batch
    try:
        row = store.get_by_key(prompt_key_hash("q", "default"))
        writer.record_hit(row, "exact", time.time(), False)
        tries = []
        real = store.lock.acquire

        def counted(timeout=None):
            tries.append(timeout)
            return real(timeout)

        store.lock.acquire = counted
        fd = os.open(db_path + ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # what another process's write holds
            writer.last_flush = 0.0  # the batch is due
            for _ in range(50):
                writer.maybe_flush(time.time())
            assert len(tries) == 1
            assert writer.pending
            time.sleep(BUSY_RETRY * 1.5)
            writer.maybe_flush(time.time())
            assert len(tries) == 2
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        assert writer.flush(timeout=None)
        assert not writer.pending
        assert store.get_by_key(prompt_key_hash("q", "default")).hits == 1
    finally:
        store.close()


def test_the_inline_exact_hit_serves_only_its_own_partition(db_path):
    """run_prompt serves the row under the key inline only when it is alive and in the
    query's remembered partition; a row moved to another scope's partition by hand (or
    expired) goes through the full checks and is not served."""
    import apsw

    with semcache.open(db_path, hash_only=True, ttl=None) as cache:  # no sliding expiry
        cache.put("q", "a")
        cache.store(b"other", "b", text="t", scope="model-x")  # another partition
        assert cache.get("q").response == "a"  # the inline path, partition remembered
        conn = apsw.Connection(db_path)
        conn.set_busy_timeout(5000)
        other = conn.execute("SELECT id FROM partitions WHERE scope = 'model-x'").fetchall()
        conn.execute("UPDATE entries SET partition_id = ? WHERE prompt = 'q'", other[0])
        assert cache.get("q") is None
        conn.execute("UPDATE entries SET partition_id = (SELECT id FROM partitions WHERE "
                     "scope = ''), expires_at = 1.0 WHERE prompt = 'q'")
        conn.close()
        assert cache.get("q") is None  # expired


def test_the_inline_exact_hit_sets_every_field_as_the_general_path_does(db_path, clock):
    """run_prompt and _hit build their Hit without its __init__: every field must be set
    (an unset slot raises on access) and equal to what the general path (get_many) gives."""
    import dataclasses

    with semcache.open(db_path, hash_only=True, ttl=60, refresh_on_access=True,
                       clock=clock) as cache:
        cache.put("q", {"a": [1]}, metadata={"m": 1}, tokens=7)
        inline = cache.get("q")
        general = cache.get_many(["q"])[0]
        assert inline is not None and general is not None
        one, other = dataclasses.asdict(inline), dataclasses.asdict(general)
        assert set(one) == {f.name for f in dataclasses.fields(semcache.Hit)}
        assert one == other
        assert one["kind"] == "exact" and one["decision"] == "exact" and one["tokens"] == 7
        assert one["query"] == one["prompt"] == "q" and one["metadata"] == {"m": 1}
        assert one["similarity"] == 1.0 and one["scope"] == "" and one["p_wrong"] is None


_THREADS_ON_ONE_CONNECTION = r"""
import sys, threading
import numpy as np
import semcache

path = sys.argv[1]
errors = []
with semcache.open(path, dim=16, max_entries=300, ttl=None) as cache:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 16)).astype(np.float32)

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by the parent
                errors.append(repr(exc))
        return run

    def gets():
        for _ in range(300):
            for i in range(20):
                hit = cache.get(f"q{i}")
                assert hit is None or hit.response == i, hit

    def puts(t):
        def run():
            for i in range(150):
                cache.put(f"w{t}-{i}", i)
                cache.put(vectors[i % 40] + t, {"t": t})
        return run

    def reads():
        for i in range(150):
            cache.get(vectors[i % 40])
            cache.get_many([f"q{i % 20}", f"w0-{i}"])
            cache.stats()
            cache.count()
            cache.entries(limit=5)
            cache.flush()

    cache.put_many([(f"q{i}", i) for i in range(20)])
    threads = [threading.Thread(target=guarded(w)) for w in (gets, gets, reads, reads,
                                                            puts(0), puts(1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [cache.get(f"q{i}").response for i in range(20)] == list(range(20))
print("ok")
"""


def test_threads_share_one_connection_safely(tmp_path):
    """Every use of the connection holds Database.mutex (SQLite's own mutex is a second
    line, docs/architecture.md). Six threads - exact gets, puts of prompts
    and vectors (with LRU evictions), semantic gets, get_many, stats, entries, flushes -
    on one cache must neither fail nor crash; a child process, so that a crash (what
    unserialized use of one SQLite connection can do) fails this test, not the run."""
    import subprocess
    import sys

    path = str(tmp_path / "threads.db")
    done = subprocess.run([sys.executable, "-c", _THREADS_ON_ONE_CONNECTION, path],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_the_inline_exact_hit_reads_the_memo_only_for_the_same_bytes(db_path):
    """run_prompt serves a remembered value only when the row under that id still holds
    the bytes it was decoded from (ids start over in a replaced file): a response changed
    under the same id is decoded afresh, and a list is never handed out twice."""
    import apsw

    with semcache.open(db_path, hash_only=True) as cache:
        entry = cache.put("q", "first")
        cache.put("r", [1, 2])
        assert cache.get("q").response == "first"  # decoded, remembered
        assert cache.get("q").response == "first"  # from the memo, inline
        conn = apsw.Connection(db_path)
        conn.set_busy_timeout(5000)
        conn.execute("UPDATE entries SET response = ? WHERE id = ?",
                     (encode_response("second"), entry))
        conn.close()
        hit = cache.get("q")
        assert hit.entry_id == entry and hit.response == "second"
        one, two = cache.get("r").response, cache.get("r").response
        assert one == two == [1, 2] and one is not two


def test_the_exact_tier_leaves_no_read_transaction_open(db_path):
    """get_by_key runs its statement to the end, hit or miss: no snapshot stays pinned
    between lookups, so another connection's TRUNCATE checkpoint is never blocked by it."""
    import apsw

    with semcache.open(db_path, hash_only=True) as cache:
        cache.put_many([(f"q{i}", i) for i in range(50)])
        other = apsw.Connection(db_path)
        other.set_busy_timeout(5000)
        for prompt in ("q7", "never stored"):
            cache.get(prompt)
            other.execute("UPDATE settings SET value = value WHERE name = 'incarnation'")
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
            assert busy == 0, prompt
        other.close()
