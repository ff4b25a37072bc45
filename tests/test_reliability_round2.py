"""Reliability round 2: what an attacker and a newcomer found (issue 11). Each test
reproduces a reported failure with real files and real processes."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import semcache
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.conftest import mirror_rebuilds, sql_rows

ROOT = Path(__file__).resolve().parent.parent
DIM = 8


def _run(code: str, *args: str, timeout: float = 120) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# -- wrong answers -----------------------------------------------------------------------------


def test_an_edited_export_cannot_answer_for_another_namespace(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    with semcache.open(path, embedder="hashing") as cache:
        cache.put("What is the admin password policy?", "A's answer", namespace="A")
    out = tmp_path / "x.jsonl"
    assert run_cli("export", path, str(out)).returncode == 0
    header, record = out.read_text().splitlines()
    rec = json.loads(record)
    rec.update(namespace="B", response="B's answer", key_hash=rec.get("key_hash", "00" * 32))
    out.write_text(header + "\n" + json.dumps(rec) + "\n")
    assert run_cli("import", path, str(out)).returncode == 0
    with semcache.open(path) as cache:
        hit = cache.get("What is the admin password policy?", namespace="A")
        assert hit is not None and hit.namespace == "A" and hit.response == "A's answer"
        other = cache.get("What is the admin password policy?", namespace="B")
        assert other is not None and other.namespace == "B" and other.response == "B's answer"


def test_imported_vectors_are_normalized(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    base = unit(np.arange(1, DIM + 1, dtype=np.float64))
    with semcache.open(path, dim=DIM, similarity_threshold=0.9):
        pass
    rng = np.random.default_rng(3)
    ortho = rng.standard_normal(DIM)
    ortho -= (ortho @ base) * base
    query = unit(0.75 * base + np.sqrt(1 - 0.75**2) * unit(ortho))  # true cosine 0.75
    rec = {"namespace": "default", "scope": "", "prompt": None, "response": "far",
           "created_at": time.time(), "vector": base64.b64encode(
               (10 * base).astype("<f4").tobytes()).decode()}
    src = tmp_path / "v.jsonl"
    src.write_text(json.dumps(rec) + "\n")
    assert run_cli("import", path, str(src)).returncode == 0
    with semcache.open(path) as cache:
        assert cache.get(query) is None  # a norm-10 vector must not inflate the cosine
        hit = cache.get(base)
        assert hit is not None and hit.similarity == pytest.approx(1.0, abs=1e-5)


# -- stale state -------------------------------------------------------------------------------


def test_one_database_through_a_symlink_shares_lock_and_mirror(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="semcache")
    real = tmp_path / "real" / "llm.db"
    real.parent.mkdir()
    link = tmp_path / "link.db"
    with semcache.open(real, dim=DIM) as cache:
        cache.put("q", "a", vector=np.ones(DIM))
    link.symlink_to(real)
    with semcache.open(link) as a, semcache.open(real) as b:
        assert a.path == b.path == str(real)
        for i in range(20):
            a.put(f"a{i}", i, vector=np.arange(DIM) + i)
            assert b.get(np.arange(DIM) + i) is not None
        assert mirror_rebuilds(caplog) <= 2
    assert not (tmp_path / "link.db.lock").exists()
    assert not (tmp_path / "link.db-codes").exists()


# -- crashes and hangs -------------------------------------------------------------------------


_HOLD_LOCK = """
    import sys, time, pathlib, semcache
    from semcache.store import open_store
    store = open_store(sys.argv[1])
    with store.write():
        pathlib.Path(sys.argv[2]).touch()
        time.sleep(60)
"""


def test_close_does_not_wait_behind_another_process_and_says_what_it_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "c.db")
    flag = tmp_path / "held"
    cache = semcache.open(path, dim=DIM)
    cache.put("q", "a", vector=np.ones(DIM))
    holder = _run(_HOLD_LOCK, path, str(flag))
    try:
        deadline = time.time() + 30
        while not flag.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert flag.exists(), holder.stderr.read() if holder.stderr else ""
        for _ in range(3):
            assert cache.get("q") is not None  # reads never wait for the write lock
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="semcache"):
            cache.close()
        assert time.monotonic() - started < 8
        assert any("dropped" in r.getMessage() and "3 hit(s)" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
    finally:
        holder.kill()
        holder.wait()


def test_threads_racing_close_only_ever_see_cache_closed(tmp_path: Path) -> None:
    cache = semcache.open(tmp_path / "c.db", dim=DIM)
    for i in range(50):
        cache.put(f"q{i}", i, vector=np.arange(DIM) + i)
    errors: list[BaseException] = []
    stop = threading.Event()

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            try:
                i = int(rng.integers(50))
                cache.get(f"q{i}")
                cache.get(np.arange(DIM) + i)
                cache.put(f"t{seed}-{i}", i, vector=rng.standard_normal(DIM))
            except semcache.CacheClosedError:
                return
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
                return

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    cache.close()
    stop.set()
    for t in threads:
        t.join(10)
    assert errors == []


def test_reads_keep_working_when_hit_counts_cannot_be_written(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    """A full disk (or any write failure) while flushing batched hits never fails a get."""
    code = """
        import sys, time, resource, signal, numpy as np, semcache, os
        import semcache.cache._writer as batcher
        batcher.FLUSH_INTERVAL = 0.01
        path = sys.argv[1]
        cache = semcache.open(path, dim=8, max_entries=None, ttl=None)
        rng = np.random.default_rng(0)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = os.path.getsize(path) + os.path.getsize(path + "-wal")
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4096, size + 4096))
        n = 0
        try:
            while True:
                cache.put(f"q{n}", os.urandom(2000).hex(), vector=rng.standard_normal(8))
                n += 1
        except semcache.CacheFileError:
            pass
        for round in range(200):                     # each get may trigger a flush
            assert cache.get(f"q{round % max(n, 1)}", exact_only=True) is not None or n == 0
            time.sleep(0.002)
        print("OK", n)
        cache.close()
    """
    proc = _run(code, str(tmp_path / "c.db"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.startswith("OK"), err[-2000:]
    assert err.count("not written yet") <= 1  # one warning, not one per get


def test_a_worker_stopped_by_sigterm_loses_at_most_one_flush_interval(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    with semcache.open(path, dim=DIM) as cache:
        cache.put("q", "a", vector=np.ones(DIM))
    code = """
        import sys, time, signal, pathlib, semcache
        signal.signal(signal.SIGTERM, signal.SIG_DFL)   # like a worker that re-raises it
        cache = semcache.open(sys.argv[1])
        for _ in range(7):
            cache.get("q")
        pathlib.Path(sys.argv[2]).touch()
        time.sleep(60)
    """
    flag = tmp_path / "hits-done"
    worker = _run(code, path, str(flag))
    deadline = time.time() + 30
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(2.5)  # quiet: no more lookups, only the timer can write the batch
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    assert sql_rows(path, "SELECT hits FROM entries") == [(7,)]
    with semcache.open(path) as cache:
        assert cache.stats()["exact_hits"] == 7


# -- bad settings never poison a file -------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    {"ttl": 1e300}, {"namespace": "\ud800"}, {"dim": 10**9}, {"embedder": None, "dim": 10**9},
    {"similarity_threshold": 2}, {"max_entries": 2**70},
])
def test_a_failed_open_leaves_no_file(tmp_path: Path, settings: dict) -> None:
    path = tmp_path / "new.db"
    with pytest.raises(semcache.SemcacheError):
        semcache.open(path, **settings)
    assert list(tmp_path.iterdir()) == []


def test_an_import_header_with_poisonous_settings_creates_nothing(tmp_path: Path) -> None:
    for bad in ({"ttl": 1e300}, {"namespace": "\ud800"}):
        src = tmp_path / "h.jsonl"
        src.write_text(json.dumps({"semcache_export": 2, "embedder": "hashing:v1:256",
                                   "dim": 256, "settings": bad}) + "\n")
        proc = run_cli("import", str(tmp_path / "t.db"), str(src))
        assert_one_line_error(proc, 1)
        assert not (tmp_path / "t.db").exists()
    src.write_text(json.dumps({"semcache_export": 2, "embedder": "none", "dim": 10**9}) + "\n")
    assert_one_line_error(run_cli("import", str(tmp_path / "t.db"), str(src)), 1)
    assert not (tmp_path / "t.db").exists()


def test_one_bad_line_in_a_big_import_is_skipped_not_fatal(tmp_path: Path) -> None:
    src_db = str(tmp_path / "src.db")
    with semcache.open(src_db, dim=DIM, max_entries=None) as cache:
        cache.put_many([(f"q{i}", i) for i in range(700)], vector=None)
    export = tmp_path / "x.jsonl"
    assert run_cli("export", src_db, str(export)).returncode == 0
    lines = export.read_text().splitlines()
    bad = json.loads(lines[600])
    bad["ttl"] = 1e300  # passes the parser, refused by the cache
    lines[600] = json.dumps(bad)
    export.write_text("\n".join(lines) + "\n")
    proc = run_cli("import", str(tmp_path / "t.db"), str(export))
    assert proc.returncode == 0, proc.stderr
    assert "imported 699 entries" in proc.stdout and "skipped 1 bad line" in proc.stdout
    assert ":601: skipped: ttl" in proc.stderr and "Traceback" not in proc.stderr


def test_a_dangling_symlink_at_the_lock_path_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "victim"
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "c.db"
    Path(str(path) + ".lock").symlink_to(target)
    with pytest.raises(semcache.CacheFileError, match="symlink"):
        semcache.open(path, dim=DIM)
    assert not target.exists()


# -- what a newcomer hit -----------------------------------------------------------------------------


def test_a_new_file_without_a_real_embedder_says_so(tmp_path: Path, monkeypatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import semcache.embedders as embedders

    monkeypatch.setattr(embedders, "default_embedder_name", lambda: "hashing")
    with caplog.at_level(logging.WARNING, logger="semcache"), \
            pytest.warns(UserWarning, match="hashing"):
        cache = semcache.open(tmp_path / "c.db")
    with cache:
        assert cache.stats()["embedder"].startswith("hashing")
    # one warning, not a log line as well (issue 20 item 14: tests/test_missing_weights.py)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_init_cache_only_changes_what_the_caller_passed(tmp_path: Path) -> None:
    path = tmp_path / "llm.db"
    with semcache.open(path, embedder="hashing", max_entries=50_000, similarity_threshold=0.8):
        pass
    try:
        cache = semcache.init_cache(path)
        assert cache.max_entries == 50_000 and cache.similarity_threshold == 0.8
        cache = semcache.init_cache(path, max_entries=123)
        assert cache.max_entries == 123 and cache.similarity_threshold == 0.8
        fresh = semcache.init_cache(tmp_path / "new.db", embedder="hashing")
        assert fresh.max_entries == 1000 and fresh.similarity_threshold == 0.95
    finally:
        semcache.disable_cache()


def test_cli_vacuum_repairs_what_hand_made_sql_broke(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    with semcache.open(path, dim=DIM) as cache:
        for i in range(5):
            cache.put(f"q{i}", i, vector=np.arange(DIM) + i)
    subprocess.run(["sqlite3", path, "DELETE FROM entries WHERE prompt = 'q2'"], check=True)
    assert run_cli("verify", path).returncode == 1  # entry_codes has an orphan
    proc = run_cli("vacuum", path)
    assert proc.returncode == 0, proc.stderr
    verify = run_cli("verify", path)
    assert verify.returncode == 0, verify.stdout


def test_cli_errors_a_newcomer_hits(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\nnot an export\n")
    line = assert_one_line_error(run_cli("import", str(tmp_path / "new.db"), str(text)), 1)
    assert "not a semcache export" in line
    assert not (tmp_path / "new.db").exists()
    path = str(tmp_path / "c.db")
    with semcache.open(path, dim=DIM):
        pass
    assert_one_line_error(run_cli("show", path, str(2**70)), 2)
    with pytest.raises(semcache.CacheFileError, match="does not exist"):
        semcache.open(tmp_path / "a" / "b" / "llm.db")


def test_demo_without_openai_is_one_line(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['openai'] = None\n"
            "from semcache.cli import main\n"
            "sys.exit(main(['demo', '--dir', sys.argv[1]]))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1 and "openai" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
