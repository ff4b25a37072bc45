"""The semantic index under faults, with real files and real processes (issue 11, index items).

* item 3: a get must find an entry that another process keeps replacing (old id gone from
  SQLite, new id not yet in the mirror at scan time);
* item 4: a database restored from a backup next to a newer mirror: every entry is found and
  ``verify`` says the mirror is rebuilt, also when the restored file has since reached the
  mirror's change counter by other writes;
* item 6: a mirror that cannot be published (a directory in its place, a full disk) is not
  rebuilt on every get: SQL search, one warning;
* item 7: a mirror truncated or overwritten while a process maps it: no SIGBUS, no
  MirrorInvalid, right answers;
* item 20: four processes of mixed puts / gets / deletes: every committed entry is found by
  its own vector afterwards and ``verify`` agrees;
* item 21: an older batch of hit refreshes flushed after a newer one never moves the index's
  expiry back (two processes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import semcache
from semcache.store.sqlite.schema import SCHEMA_VERSION
from semcache.verify import verify
from tests.conftest import sql_rows

ROOT = Path(__file__).resolve().parent.parent
DIM = 16



def _change_seq(path: str) -> int:
    """The file's ``sync_state.change_seq``, read as the sqlite3 CLI would."""
    return int(sql_rows(path, "SELECT change_seq FROM sync_state")[0][0])

def _vec(i: int) -> np.ndarray:
    v = np.random.default_rng(10_000 + i).standard_normal(DIM)
    return v / np.linalg.norm(v)


def _near(v: np.ndarray, cos: float, seed: int) -> np.ndarray:
    """A unit vector at cosine ``cos`` from unit ``v``."""
    noise = np.random.default_rng(seed).standard_normal(v.shape[0])
    noise -= noise.dot(v) * v
    noise /= np.linalg.norm(noise)
    return cos * v + np.sqrt(1 - cos * cos) * noise


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _run(code: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, env=_env())


def _open(path: str, **kw: object) -> semcache.Cache:
    kw.setdefault("similarity_threshold", 0.9)
    kw.setdefault("max_entries", None)
    kw.setdefault("ttl", None)
    return semcache.open(path, dim=DIM, **kw)


def _populate(path: str, ids: range) -> None:
    with _open(path) as cache:
        cache.put_many([(_vec(i), {"i": i}) for i in ids])


# -- item 3: replaced while another process searches ------------------------------------------

_REPLACER = """
    import sys, time, numpy as np, semcache
    path, flag, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    v = np.asarray([float(x) for x in sys.argv[4].split(",")])
    cache = semcache.open(path, dim=16, similarity_threshold=0.9, max_entries=None, ttl=None)
    open(flag, "w").close()
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        cache.put(v, {"version": n})     # same vector -> same key: delete + insert, new id
        n += 1
    cache.close()
    print(n)
"""


def test_entry_replaced_by_another_process_is_always_found(db_path, tmp_path):
    _populate(db_path, range(300))
    target = _vec(1000)
    with _open(db_path) as cache:
        cache.put(target, {"version": -1})
        query = _near(target, 0.97, 1)
        assert cache.get(query) is not None  # mirror built
        flag = tmp_path / "ready"
        proc = _spawn(_REPLACER, db_path, str(flag), "4",
                      ",".join(repr(float(x)) for x in target))
        while not flag.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.01)
        gets = misses = 0
        while proc.poll() is None:
            hit = cache.get(query)
            gets += 1
            if hit is None or "version" not in hit.response:
                misses += 1
        out, err = proc.communicate()
        assert proc.returncode == 0, err
    replaced = int(out.split()[-1])
    assert replaced > 50 and gets > 200, (replaced, gets)
    assert misses == 0, f"{misses} misses in {gets} gets while {replaced} replacements ran"


# -- item 4: restored from a backup ------------------------------------------------------------


def _copy_db(src: str, dst: str) -> None:
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(dst + suffix)
    shutil.copyfile(src, dst)


def _found(path: str, ids: range) -> int:
    with _open(path) as cache:
        return sum(1 for i in ids if (h := cache.get(_vec(i))) is not None
                   and h.response == {"i": i})


@pytest.mark.parametrize("catch_up", [False, True], ids=["older", "same-seq"])
def test_database_restored_from_backup_next_to_newer_mirror(db_path, tmp_path, catch_up):
    backup = str(tmp_path / "backup.db")
    _populate(db_path, range(100))
    _copy_db(db_path, backup)  # the file is closed and checkpointed: a complete backup
    with _open(db_path) as cache:  # later history: half deleted, others added, mirror follows
        for entry_id in range(1, 51):
            cache.delete(entry_id)
        cache.put_many([(_vec(i), {"i": i}) for i in range(500, 560)])
        assert cache.get(_vec(520)) is not None
        mirror_seq = _change_seq(db_path)
    _copy_db(backup, db_path)  # restore; the newer mirror stays next to it
    if catch_up:
        # Other writes bring the restored file to the very change counter the mirror
        # records: only a state token tells the two histories apart.
        with _open(db_path, use_mirror=False) as cache:
            gap = mirror_seq - _change_seq(db_path)
            assert gap > 0
            cache.put_many([(_vec(i), {"i": i}) for i in range(2000, 2000 + gap)])
            assert _change_seq(db_path) == mirror_seq
    report = verify(db_path)
    assert report["ok"], report["problems"]  # derived data: not a problem of the file
    assert report["mirror"]["rebuild"] and not report["mirror"]["agrees"]
    assert _found(db_path, range(100)) == 100
    report = verify(db_path)
    assert report["ok"] and report["mirror"]["agrees"], report


# -- item 6: a mirror that cannot be published -------------------------------------------------


def _mirror_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "code mirror" in r.getMessage()]


def test_directory_in_place_of_the_mirror_backs_off(db_path, caplog):
    _populate(db_path, range(200))
    os.mkdir(db_path + "-codes")
    with caplog.at_level(logging.INFO, logger="semcache"), _open(db_path) as cache:
        t0 = time.perf_counter()
        for i in range(60):
            hit = cache.get(_vec(i))
            assert hit is not None and hit.response == {"i": i}
        elapsed = time.perf_counter() - t0
        cache.put(_vec(900), {"i": 900})  # a write does not retry the mirror either
        assert cache.get(_vec(900)).response == {"i": 900}
        attempts = [r for r in caplog.records if "code mirror" in r.getMessage()]
    assert len(_mirror_warnings(caplog)) == 1, _mirror_warnings(caplog)
    assert len(attempts) <= 4, [r.getMessage() for r in attempts]  # not one per get
    assert elapsed < 3.0
    assert os.path.isdir(db_path + "-codes")


@contextlib.contextmanager
def _tmpfs(target: Path) -> Iterator[None]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    target.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


def test_full_disk_mirror_backs_off(tmp_path, caplog):
    with _tmpfs(tmp_path / "small"):
        path = str(tmp_path / "small" / "cache.db")
        _populate(path, range(200))
        with caplog.at_level(logging.INFO, logger="semcache"), _open(path) as cache:
            assert cache.get("warm up the connection", exact_only=True) is None
            fd = os.open(tmp_path / "small" / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            with contextlib.suppress(OSError):  # fill the disk to the last block
                while True:
                    os.write(fd, b"\0" * 4096)
            os.close(fd)
            for i in range(40):
                hit = cache.get(_vec(i))
                assert hit is not None and hit.response == {"i": i}
            assert not os.path.exists(path + "-codes")
        assert len(_mirror_warnings(caplog)) == 1, _mirror_warnings(caplog)


# -- item 7: truncated / overwritten while mapped ----------------------------------------------

_SERVER = """
    import sys, json, numpy as np, semcache
    path = sys.argv[1]
    cache = semcache.open(path, dim=16, similarity_threshold=0.9, max_entries=None, ttl=None)
    def vec(i):
        v = np.random.default_rng(10_000 + i).standard_normal(16)
        return v / np.linalg.norm(v)
    for line in sys.stdin:
        ids = [int(x) for x in line.split()]
        found = []
        for i in ids:
            try:
                h = cache.get(vec(i))
                found.append(h is not None and h.response == {"i": i})
            except Exception as exc:              # noqa: BLE001 - reported to the test
                found.append(f"{type(exc).__name__}: {exc}")
        print(json.dumps(found), flush=True)
"""


def _ask(proc: subprocess.Popen[str], ids: list[int] | str) -> list[object]:
    import json

    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((ids if isinstance(ids, str) else " ".join(map(str, ids))) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"server died with {proc.wait()} (-7 = SIGBUS): {err[-2000:]}")
    return json.loads(line)


@pytest.mark.parametrize("damage", ["truncate", "truncate-to-zero", "overwrite", "zero-header"])
def test_mirror_damaged_while_mapped(db_path, damage):
    _populate(db_path, range(400))
    proc = _spawn(_SERVER, db_path)
    try:
        ids = list(range(0, 400, 7))
        assert _ask(proc, ids) == [True] * len(ids)  # the mirror is mapped
        mirror = db_path + "-codes"
        size = os.path.getsize(mirror)
        if damage == "truncate":
            os.truncate(mirror, 4096)
        elif damage == "truncate-to-zero":
            os.truncate(mirror, 0)
        elif damage == "overwrite":
            with open(mirror, "r+b") as f:  # in place: same inode, every byte replaced
                f.write(np.random.default_rng(7).bytes(size))
        else:
            with open(mirror, "r+b") as f:
                f.write(b"\0" * 4096)
        for _ in range(3):
            assert _ask(proc, ids) == [True] * len(ids)
        proc.stdin.close()  # type: ignore[union-attr]
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != -signal.SIGBUS
    assert verify(db_path)["ok"]


# -- item 20: a writer on a superseded mirror ---------------------------------------------------

_WRITER = """
    import sys, json, numpy as np, semcache
    path = sys.argv[1]
    cache = semcache.open(path, dim=16, similarity_threshold=0.9, max_entries=None, ttl=None)
    def vec(i):
        v = np.random.default_rng(10_000 + i).standard_normal(16)
        return v / np.linalg.norm(v)
    for line in sys.stdin:
        cmd, *ids = line.split()
        if cmd == "get":
            print(json.dumps([cache.get(vec(int(i))) is not None for i in ids]), flush=True)
        else:
            cache.put_many([(vec(int(i)), {"i": int(i)}) for i in ids])
            print("[]", flush=True)
"""


def test_writer_holding_a_superseded_mirror_never_publishes_it(db_path):
    """The race behind item 20, step by step: process B replaces an entry and appends in one
    transaction, which grows the mirror into a new file; process A still maps the old file
    and writes next. A must not append to (and later publish) the superseded file."""
    _populate(db_path, range(512))
    with _open(db_path) as cache:
        assert cache.get(_vec(0)) is not None  # mirror: 512 rows, capacity 1024
        cache.put_many([(_vec(i), {"i": i}) for i in range(512, 1020)])
    a = _spawn(_WRITER, db_path)
    try:
        assert _ask(a, "get 0 1019") == [True, True]  # A maps the mirror (1020 rows)
        with _open(db_path) as b:  # B: replace entry 5 + 9 new ones -> growth to a new file
            b.put_many([(_vec(5), {"i": 5})] + [(_vec(i), {"i": i}) for i in range(3000, 3009)])
        _ask(a, "put " + " ".join(str(i) for i in range(4000, 4010)))
        assert _ask(a, "get 3000 3008 4000 4009") == [True] * 4
    finally:
        a.stdin.close()  # type: ignore[union-attr]
        a.wait(60)
    report = verify(db_path)
    assert report["ok"], report["problems"]
    assert _found(db_path, range(3000, 3009)) == 9
    assert _found(db_path, range(4000, 4010)) == 10



# -- item 20: concurrent mixed load ------------------------------------------------------------

_MIXED = """
    import random, sys, time, numpy as np, semcache
    path, seed, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    cache = semcache.open(path, dim=16, max_entries=400, similarity_threshold=0.9, ttl=None)
    mine, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        r = rng.random()
        if r < 0.4:
            mine.append(cache.put(nrng.standard_normal(16), "x", ttl=rng.choice([None, 60.0])))
        elif r < 0.5:
            mine += cache.put_many([(v, "y") for v in nrng.standard_normal((5, 16))])
        elif r < 0.8:
            cache.get(nrng.standard_normal(16))
        elif r < 0.95 and mine:
            cache.delete(mine.pop(rng.randrange(len(mine))))
        else:
            cache.purge_expired()
    cache.close()
"""

_CHECK_ALL = """
    import sys, numpy as np, semcache
    cache = semcache.open(sys.argv[1], dim=16)
    entries = cache.entries(order="id", with_vectors=True)
    rows = [(e.id, e.vector) for e in entries if e.vector is not None]
    missed = [i for i, vector in rows
              if (h := cache.get(vector)) is None or h.entry_id != i]
    print(len(rows), missed)
"""


def test_every_committed_entry_is_in_the_mirror_after_concurrent_load(db_path):
    _open(db_path, max_entries=400).close()
    procs = [_spawn(_MIXED, db_path, str(seed), "8") for seed in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    report = verify(db_path)
    assert report["ok"], report["problems"]
    assert report["mirror"]["agrees"] or report["mirror"]["rebuild"], report["mirror"]
    out = _run(_CHECK_ALL, db_path)
    assert out.returncode == 0, out.stderr[-2000:]
    total, missed = out.stdout.split(" ", 1)
    assert int(total) > 50 and missed.strip() == "[]", out.stdout
    report = verify(db_path)
    assert report["ok"] and report["mirror"]["agrees"], report


# -- item 21: an older refresh flushed after a newer one ----------------------------------------

_HITTER = """
    import sys, numpy as np, semcache
    path, now = sys.argv[1], float(sys.argv[2])
    v = np.random.default_rng(10_000 + 1).standard_normal(16)
    v /= np.linalg.norm(v)
    cache = semcache.open(path, dim=16, similarity_threshold=0.9, refresh_on_access=True,
                          clock=lambda: now)
    hit = cache.get(v)
    assert hit is not None, "no hit"
    print("HIT", flush=True)
    sys.stdin.readline()          # the test says when to flush
    cache.flush()
    cache.close()
    print("FLUSHED", flush=True)
"""


def test_older_refresh_flushed_late_never_moves_the_index_back(db_path):
    t0 = 1_800_000_000.0
    with _open(db_path, clock=lambda: t0, refresh_on_access=True) as cache:
        cache.put(_vec(0), {"i": 0})
        entry = cache.put(_vec(1), {"i": 1}, ttl=100.0)  # expires at t0 + 100
        assert cache.get(_vec(1)).entry_id == entry
    older = _spawn(_HITTER, db_path, str(t0 + 50))    # refresh to t0 + 150, flushed last
    newer = _spawn(_HITTER, db_path, str(t0 + 80))    # refresh to t0 + 180, flushed first
    try:
        for p in (older, newer):
            assert p.stdout is not None and p.stdout.readline().strip() == "HIT", \
                p.stderr.read() if p.stderr else ""
        for p in (newer, older):
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
            assert p.stdout is not None and p.stdout.readline().strip() == "FLUSHED"
            assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    finally:
        for p in (older, newer):
            if p.poll() is None:
                p.kill()
    report = verify(db_path)
    assert report["ok"], report["problems"]
    assert report["vec0"]["agrees"] and report["mirror"]["agrees"], report
    with _open(db_path, clock=lambda: t0 + 160, refresh_on_access=False) as cache:
        (expires,) = sql_rows(db_path, "SELECT expires_at FROM entries WHERE id = ?",
                              (entry,))[0]
        assert expires == t0 + 180
        hit = cache.get(_vec(1))  # alive until t0 + 180: the index must not drop it at 150
        assert hit is not None and hit.entry_id == entry


# -- schema 2: files of schema 1 get the state token; old mirrors are rebuilt --------------------


def test_schema_1_file_is_migrated_and_its_old_mirror_rebuilt(db_path):
    import time as _time

    import apsw
    import sqlite_vec

    from semcache.store.sqlite.connection import APPLICATION_ID
    from semcache.store.sqlite.schema import MIGRATIONS

    _populate(db_path, range(30))
    with _open(db_path) as cache:  # a schema-1 file: rewind the database to migration 1
        uid = cache.stored_settings()["db_uid"]
    conn = apsw.Connection(db_path)
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    rows = conn.execute("SELECT key_hash, namespace, partition_id, prompt, response, size, "
                        "created_at, accessed_at, code, vector FROM entries").fetchall()
    settings = conn.execute("SELECT name, value FROM settings").fetchall()
    conn.close()
    for suffix in ("", "-wal", "-shm", "-codes"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(db_path + suffix)
    conn = apsw.Connection(db_path)
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    conn.execute("PRAGMA journal_mode=WAL")
    with conn:
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at REAL NOT NULL)")
        conn.execute(MIGRATIONS[0].sql)
        conn.execute("INSERT INTO schema_migrations VALUES (1, ?, ?)",
                     (MIGRATIONS[0].name, _time.time()))
        conn.executemany("INSERT INTO settings VALUES (?, ?)", settings)
        conn.execute("INSERT INTO partitions (id, namespace, scope) VALUES (1, 'default', '')")
        for r in rows:
            conn.execute("INSERT INTO entries (key_hash, namespace, partition_id, prompt, "
                         "response, size, created_at, accessed_at, code, vector) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", r)
            conn.execute("INSERT INTO entry_codes (entry_id, partition_id, expires_at, code) "
                         "VALUES (last_insert_rowid(), ?, 4611686018427387904, vec_bit(?))",
                         (r[2], r[8]))
    conn.close()
    with open(db_path + "-codes", "wb") as f:  # a format-1 mirror left by an older semcache
        f.write(b"SCMIRROR" + (1).to_bytes(4, "little") + b"\0" * 4084)
    assert _found(db_path, range(30)) == 30  # migrated to schema 2, mirror rebuilt
    report = verify(db_path)
    assert report["ok"] and report["database"]["schema_version"] == SCHEMA_VERSION, report
    assert report["mirror"]["agrees"], report["mirror"]
    with _open(db_path) as cache:
        assert cache.stored_settings()["db_uid"] == uid
        seq, token = sql_rows(db_path, "SELECT change_seq, state_token FROM sync_state")[0]
        assert seq > 0 and token != 0
