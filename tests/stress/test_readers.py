"""Readers against writers in other processes: a long write transaction does not stall
readers (WAL); a reader killed while it maps the mirror harms nothing; a writer killed while
holding the write lock does not block the next writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

import semcache

DIM = 16


def _vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(DIM)


def _spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(flag: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"helper exited early: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError("helper never got ready")
        time.sleep(0.01)


def _populate(path: str, n: int = 200) -> None:
    with semcache.open(path, dim=DIM, max_entries=None, ttl=None) as cache:
        cache.put_many([(f"q{i}", {"i": i}) for i in range(n)])
        for i in range(n):
            cache.put(f"v{i}", {"v": i}, vector=_vec(i))


_LONG_WRITE = """
    import sys, time, pathlib, numpy as np, semcache
    path, flag, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    from semcache.store import open_store
    store = open_store(path)
    with store.write() as txn:           # the real write path: lock + BEGIN IMMEDIATE
        txn._conn.execute("UPDATE entries SET hits = hits + 1")   # touch every row
        from semcache.store.base import NewEntry
        from semcache.store.codecs import encode_response
        from semcache.keys import prompt_key_hash
        txn.insert_many([NewEntry(key_hash=prompt_key_hash("uncommitted", "default"), namespace="default", scope="",
                            prompt="uncommitted", response=encode_response("x"), metadata=None,
                            tokens=0, created_at=time.time(), expires_at=None, ttl=None)])
        pathlib.Path(flag).touch()
        time.sleep(hold)
    store.close()
"""


def test_readers_keep_answering_during_a_long_write_transaction(tmp_path):
    path = str(tmp_path / "wal.db")
    _populate(path)
    flag = tmp_path / "in-txn"
    writer = _spawn(_LONG_WRITE, path, str(flag), "2.5")
    try:
        _wait_for(flag, writer)
        worst = 0.0
        answered = 0
        with semcache.open(path, dim=DIM) as reader:
            end = time.monotonic() + 1.5
            i = 0
            while time.monotonic() < end:
                t = time.perf_counter()
                hit = reader.get(f"q{i % 200}")
                sem = reader.get(_vec(i % 200))
                worst = max(worst, time.perf_counter() - t)
                assert hit is not None and hit.response == {"i": i % 200}
                assert sem is not None and sem.response == {"v": i % 200}
                assert reader.get("uncommitted", exact_only=True) is None  # not yet committed
                answered += 1
                i += 1
            assert writer.poll() is None, "the write transaction ended before the readers did"
            assert answered > 20
            assert worst < 0.5, f"a read waited {worst:.3f} s behind the writer"
            assert writer.wait(60) == 0, writer.stderr.read() if writer.stderr else ""
            assert reader.get("uncommitted", exact_only=True) is not None  # visible after COMMIT
    finally:
        if writer.poll() is None:
            writer.kill()


_READER = """
    import sys, pathlib, numpy as np, semcache
    path, flag = sys.argv[1], sys.argv[2]
    cache = semcache.open(path, dim=16)
    i = 0
    while True:                                  # maps the mirror, batches hits, flushes
        cache.get(np.random.default_rng(i % 200).standard_normal(16))
        cache.get(f"q{i % 200}")
        i += 1
        if i == 50:
            pathlib.Path(flag).touch()
"""


def test_reader_killed_while_mapping_the_mirror_harms_nothing(tmp_path):
    path = str(tmp_path / "readers.db")
    _populate(path)
    rng = np.random.default_rng(0)
    for round_ in range(4):
        flag = tmp_path / f"reading-{round_}"
        readers = [_spawn(_READER, path, str(flag)) for _ in range(2)]
        _wait_for(flag, readers[0])
        time.sleep(float(rng.uniform(0, 0.3)))
        for r in readers:
            os.kill(r.pid, signal.SIGKILL)
            r.wait()
            assert r.returncode == -signal.SIGKILL
        with semcache.open(path, dim=DIM, max_entries=None) as cache:
            base = 1000 + round_ * 10
            for i in range(base, base + 10):
                cache.put(f"v{i}", {"v": i}, vector=_vec(i))
            for i in list(range(0, 200, 17)) + list(range(base, base + 10)):
                hit = cache.get(_vec(i))
                assert hit is not None and hit.response == {"v": i}
        report = semcache.verify(path)
        assert report["ok"], report["problems"]
        assert report["mirror"]["agrees"]
        assert report["vec0"]["agrees"]


_LOCK_HOLDER = """
    import sys, time, pathlib, semcache
    path, flag = sys.argv[1], sys.argv[2]
    from semcache.store import open_store
    store = open_store(path)
    with store.write() as txn:
        txn._conn.execute("UPDATE entries SET hits = hits + 1")
        pathlib.Path(flag).touch()
        time.sleep(600)
"""


def test_writer_killed_holding_the_lock_does_not_block_the_next(tmp_path):
    path = str(tmp_path / "lock.db")
    _populate(path, 20)
    flag = tmp_path / "holding"
    holder = _spawn(_LOCK_HOLDER, path, str(flag))
    _wait_for(flag, holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t = time.perf_counter()
    with semcache.open(path, dim=DIM) as cache:
        cache.put("after", "ok", vector=_vec(999))
        assert cache.get("after").response == "ok"
        assert cache.get(_vec(999)).response == "ok"
    assert time.perf_counter() - t < 10
    assert semcache.verify(path)["ok"]
