"""Faults and hostile input, with real files: corruption, read-only files and mounts, a full
disk, file permissions, no pickle, namespace isolation (hypothesis), and a bad-input table
over every public entry point that compares the file's bytes before and after."""

from __future__ import annotations

import ast
import contextlib
import itertools
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import semcache
from tests.engines import ENGINES, stored_state

ROOT = Path(__file__).resolve().parent.parent
DIM = 8


def _vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(DIM)


def _populated(path: str, n: int = 300) -> None:
    with semcache.open(path, dim=DIM, max_entries=None, ttl=None) as cache:
        for i in range(n):
            cache.put(f"q{i}", {"i": i, "pad": "p" * 300}, vector=_vec(i), metadata={"i": i})


def _run(code: str, *args: str, prefix: list[str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([*(prefix or []), sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


# -- corruption ------------------------------------------------------------------------------


def _all_calls(cache: semcache.Cache) -> None:
    for i in range(0, 300, 7):
        cache.get(f"q{i}")
        cache.get(_vec(i))
    cache.put("new", "v", vector=_vec(1000))
    cache.delete(3)
    cache.purge_expired()
    cache.stats()


@pytest.mark.parametrize("damage", ["truncate_half", "truncate_page", "zero_pages",
                                    "random_pages", "random_header"])
def test_damaged_file_raises_a_clear_error_naming_the_path(db_path, damage):
    _populated(db_path)
    data = bytearray(Path(db_path).read_bytes())
    mid = len(data) // 2 // 4096 * 4096
    if damage == "truncate_half":
        data = data[:mid]
    elif damage == "truncate_page":
        data = data[:4096]
    elif damage == "zero_pages":
        data[4096:mid] = bytes(mid - 4096)
    elif damage == "random_pages":
        data[4096:mid] = np.random.default_rng(0).bytes(mid - 4096)
    else:
        data[:100] = np.random.default_rng(1).bytes(100)
    Path(db_path).write_bytes(bytes(data))
    expected = semcache.NotASemcacheFileError if damage == "random_header" \
        else semcache.CorruptCacheError
    with pytest.raises(expected) as err:  # on open, or on the first operation that reads
        with semcache.open(db_path, dim=DIM) as cache:
            _all_calls(cache)
    assert db_path in str(err.value)
    assert isinstance(err.value, OSError)
    assert err.value.__cause__ is None  # no driver traceback chained under it


def test_corruption_found_on_later_operations_is_clear(db_path):
    _populated(db_path)
    size = os.path.getsize(db_path)
    with open(db_path, "r+b") as f:  # the last pages hold entries, not the schema
        f.seek(size - 4 * 4096)
        f.write(np.random.default_rng(2).bytes(3 * 4096))
    failures = []
    with contextlib.suppress(semcache.CorruptCacheError):
        cache = semcache.open(db_path, dim=DIM)
        for i in range(300):
            try:
                cache.get(f"q{i}")
            except semcache.SemcacheError as exc:
                failures.append(exc)
        with contextlib.suppress(semcache.SemcacheError):
            cache.close()
    assert all(isinstance(e, semcache.CacheFileError) and db_path in str(e) for e in failures)


def test_corrupt_mirror_is_rebuilt_silently_and_logged(db_path, caplog):
    _populated(db_path)
    with semcache.open(db_path, dim=DIM) as cache:
        assert cache.get(_vec(5)).response["i"] == 5  # builds the mirror
    mirror = db_path + "-codes"
    assert semcache.verify(db_path)["mirror"]["agrees"]
    with open(mirror, "r+b") as f:
        f.seek(4096 + 64)
        f.write(b"\xff" * 256)
    report = semcache.verify(db_path)
    assert report["ok"]  # derived data: not a problem of the file
    assert not report["mirror"]["valid"] and report["mirror"]["rebuild"]
    with caplog.at_level(logging.INFO, logger="semcache"), \
            semcache.open(db_path, dim=DIM) as cache:
        for i in range(0, 300, 10):
            assert cache.get(_vec(i)).response["i"] == i
    assert "rebuilt code mirror" in caplog.text
    assert semcache.verify(db_path)["mirror"]["agrees"]


def test_mirror_of_another_database_is_not_trusted(tmp_path):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    _populated(a, 50)
    with semcache.open(b, dim=DIM) as cache:
        cache.put("only in b", "b", vector=_vec(7))
    with semcache.open(a, dim=DIM) as cache:
        cache.get(_vec(1))
    shutil.copy(a + "-codes", b + "-codes")  # a's mirror next to b
    assert not semcache.verify(b)["mirror"]["valid"]
    with semcache.open(b, dim=DIM) as cache:
        hit = cache.get(_vec(7))
        assert hit.response == "b" and cache.get(_vec(1)) is None
    assert semcache.verify(b)["mirror"]["agrees"]


# -- verify ------------------------------------------------------------------------------------


def test_verify_healthy_file(db_path):
    _populated(db_path, 40)
    with semcache.open(db_path, dim=DIM) as cache:
        cache.get(_vec(3))
        cache.delete(4)
    report = semcache.verify(db_path)
    assert report["ok"] and report["problems"] == []
    assert report["database"]["integrity"] == "ok"
    assert report["database"]["schema_version"] == report["database"]["expected_schema_version"]
    assert report["database"]["entries"] == 39
    assert report["vec0"] == {"rows": 39, "orphans": 0, "missing": 0, "mismatched": 0,
                              "agrees": True}


def test_verify_finds_vec0_orphans_and_missing_codes(db_path):
    import apsw
    import sqlite_vec

    _populated(db_path, 40)
    before = semcache.verify(db_path)
    conn = apsw.Connection(db_path)
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    conn.execute("DELETE FROM entry_codes WHERE entry_id = 5")
    conn.execute("DELETE FROM entries WHERE id = 9")  # leaves its code row behind
    conn.close()
    report = semcache.verify(db_path)
    assert before["ok"] and not report["ok"]
    assert report["vec0"]["missing"] == 1 and report["vec0"]["missing_ids"] == [5]
    assert report["vec0"]["orphans"] == 1 and report["vec0"]["orphan_ids"] == [9]


def test_verify_reports_integrity_damage_and_refuses_foreign_files(tmp_path, db_path):
    _populated(db_path)
    with open(db_path, "r+b") as f:
        f.seek(os.path.getsize(db_path) // 2)
        f.write(np.random.default_rng(3).bytes(8192))
    report = semcache.verify(db_path)
    assert report["ok"] is False and report["problems"]
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 500)
    with pytest.raises(semcache.NotASemcacheFileError):
        semcache.verify(str(text))
    with pytest.raises(semcache.CacheFileError):
        semcache.verify(str(tmp_path / "missing.db"))


# -- read-only -------------------------------------------------------------------------------

_READONLY_CHILD = """
    import sys, numpy as np, semcache
    path, readonly = sys.argv[1], sys.argv[2] == "1"
    with semcache.open(path, dim=8, readonly=readonly) as cache:
        assert cache.get("q1").response["i"] == 1
        assert cache.get(np.random.default_rng(2).standard_normal(8)).response["i"] == 2
        assert cache.get_many(["q3", "nope"])[0].response["i"] == 3
        assert cache.stats()["entries"] == 300
        for call in (lambda: cache.put("z", "b"), lambda: cache.delete(1),
                     lambda: cache.invalidate("q1"), lambda: cache.clear(),
                     lambda: cache.purge_expired()):
            try:
                call()
            except semcache.ReadOnlyCacheError as exc:
                assert path in str(exc), exc
            else:
                raise AssertionError("a write on a read-only file did not raise")
    print("OK")
"""


def _unprivileged() -> list[str]:
    """A command prefix under which file permissions apply (root ignores them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions would not apply")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


@pytest.mark.parametrize("readonly", [False, True])
def test_write_protected_file_reads_and_refuses_writes(db_path, readonly):
    _populated(db_path)
    os.chmod(db_path, 0o444)
    before = Path(db_path).read_bytes()
    proc = _run(_READONLY_CHILD, db_path, "1" if readonly else "0", prefix=_unprivileged())
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr
    assert Path(db_path).read_bytes() == before


def test_read_only_directory_gives_a_clear_error(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    path = str(d / "cache.db")
    _populated(path)
    before = Path(path).read_bytes()
    os.chmod(d, 0o555)
    try:
        code = """
            import sys, semcache
            try:
                semcache.open(sys.argv[1], dim=8, readonly=True).get("q1")
            except semcache.ReadOnlyCacheError as exc:
                print("ERR", exc)
            else:
                print("OK")
        """
        proc = _run(code, path, prefix=_unprivileged())
    finally:
        os.chmod(d, 0o755)
    assert proc.returncode == 0, proc.stderr
    # SQLite must create <db>-shm to read a WAL file: documented in docs/reliability.md.
    assert proc.stdout.startswith("ERR") and "directory" in proc.stdout and path in proc.stdout
    assert Path(path).read_bytes() == before


@contextlib.contextmanager
def _mount(kind: str, target: Path, source: Path | None = None) -> Iterator[None]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount")
    target.mkdir(exist_ok=True)
    if kind == "tmpfs":
        cmds = [["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)]]
    else:
        cmds = [["mount", "--bind", str(source), str(target)],
                ["mount", "-o", "remount,bind,ro", str(target)]]
    for i, cmd in enumerate(cmds):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            if i:
                subprocess.run(["umount", str(target)], capture_output=True)
            pytest.skip(f"cannot {' '.join(cmd)} here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


def test_read_only_mount(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _populated(str(src / "cache.db"))
    with _mount("ro", tmp_path / "ro", src):
        path = str(tmp_path / "ro" / "cache.db")
        for readonly in ("0", "1"):
            proc = _run(_READONLY_CHILD, path, readonly)
            assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr


# -- disk full -------------------------------------------------------------------------------

_FILLER = """
    import os, sys, semcache, numpy as np
    path, limit = sys.argv[1], int(sys.argv[2])
    if limit:
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    cache = semcache.open(path, dim=8, max_entries=None, ttl=None)
    rng = np.random.default_rng(0)
    acked = 0
    try:
        while True:
            cache.put(f"q{acked}", os.urandom(1500).hex(), vector=rng.standard_normal(8))
            acked += 1
    except semcache.CacheFileError as exc:
        assert path in str(exc), exc
        print("FULL", acked, type(exc).__name__, exc)
    for i in range(acked):                      # reads still work on the full disk
        assert cache.get(f"q{i}", exact_only=True) is not None
    cache.get(rng.standard_normal(8))           # mirror may not fit: SQL search instead
    try:
        cache.close()
    except semcache.CacheFileError:
        pass                                    # batched hit counts may not fit either
"""

_AFTER_FULL = """
    import sys, semcache
    path, acked = sys.argv[1], int(sys.argv[2])
    with semcache.open(path, dim=8) as cache:
        assert semcache.verify(path)["database"]["integrity"] == "ok"
        missing = [i for i in range(acked) if cache.get(f"q{i}", exact_only=True) is None]
        assert missing == [], missing
    print("OK")
"""


def _check_full(path: str, limit: int) -> None:
    proc = _run(_FILLER, path, str(limit))
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])  # no SIGBUS/SIGXFSZ
    assert proc.returncode != -signal.SIGBUS
    assert proc.stdout.startswith("FULL"), proc.stdout
    acked = int(proc.stdout.split()[1])
    assert acked > 0
    after = _run(_AFTER_FULL, path, str(acked))
    assert after.returncode == 0 and "OK" in after.stdout, after.stderr[-2000:]


def test_disk_full_tmpfs(tmp_path):
    with _mount("tmpfs", tmp_path / "small"):
        _check_full(str(tmp_path / "small" / "cache.db"), 0)


def test_file_size_limit(tmp_path):
    """Where nothing can be mounted: RLIMIT_FSIZE makes writes fail with EFBIG."""
    _check_full(str(tmp_path / "cache.db"), 600_000)


# -- permissions, pickle ----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_files_follow_umask_and_are_never_world_writable(tmp_path, umask):
    code = """
        import os, sys, numpy as np, semcache
        os.umask(int(sys.argv[2]))
        cache = semcache.open(sys.argv[1], dim=8)
        cache.put("q", "a", vector=np.ones(8))
        cache.get(np.ones(8))                   # builds the mirror
        cache.put("r", "b", vector=-np.ones(8))
        d = os.path.dirname(sys.argv[1])
        for name in sorted(os.listdir(d)):
            print(name, os.stat(os.path.join(d, name)).st_mode & 0o777)
        cache.close()
    """
    proc = _run(code, str(tmp_path / "c.db"), str(umask))
    assert proc.returncode == 0, proc.stderr
    modes = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines()}
    assert {"c.db", "c.db.lock", "c.db-codes", "c.db-wal", "c.db-shm"} <= modes.keys()
    for name, mode in modes.items():
        assert not mode & 0o002, f"{name} is world-writable ({mode:o})"
        assert not mode & ~(0o666 & ~umask), f"{name} ignores the umask ({mode:o})"


def test_no_code_path_unpickles():
    banned = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
    found = []
    for path in (ROOT / "semcache").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            elif isinstance(node, ast.Attribute) and node.attr in ("loads", "load") and \
                    isinstance(node.value, ast.Name) and node.value.id in banned:
                names = [node.value.id]
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n in banned]
    assert found == []


def test_a_stored_pickle_is_data_not_code(db_path):
    """A response that happens to be pickle bytes' text stays text."""
    import pickle  # noqa: S403 - producing the payload only; nothing is ever unpickled

    payload = pickle.dumps({"x": 1}).hex()
    with semcache.open(db_path, hash_only=True) as cache:
        cache.put("p", payload)
    with semcache.open(db_path, hash_only=True) as cache:
        assert cache.get("p").response == payload


# -- namespace isolation (property) -----------------------------------------------------------

_NS = ["A", "B", "tenant-7"]
_EXAMPLES = itertools.count()
_PROMPTS = ["alpha", "beta", "gamma", "delta"]
_op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(_NS), st.sampled_from(_PROMPTS),
              st.integers(0, 3)),
    st.tuples(st.just("invalidate"), st.sampled_from(_NS), st.sampled_from(_PROMPTS),
              st.just(0)),
    st.tuples(st.just("clear"), st.sampled_from(_NS), st.just(""), st.just(0)),
    st.tuples(st.just("delete_last"), st.sampled_from(_NS), st.just(""), st.just(0)),
)


@pytest.mark.engines(*ENGINES)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(_op, min_size=1, max_size=25))
def test_no_sequence_of_operations_leaks_across_namespaces(make_location, ops):
    """The same prompts and the same vectors in every namespace: a get in one namespace only
    ever returns that namespace's entry, and exactly the last one put there."""
    path = make_location(f"ns{next(_EXAMPLES)}.db")  # a new cache per example
    model: dict[tuple[str, str], tuple[int, int]] = {}
    last: dict[str, tuple[str, int]] = {}
    with semcache.open(path, dim=DIM, max_entries=None, ttl=None,
                       similarity_threshold=0.999) as cache:
        for n, (op, ns, prompt, v) in enumerate(ops):
            if op == "put":
                eid = cache.put(prompt, {"ns": ns, "n": n}, namespace=ns, vector=_vec(v))
                model[(ns, prompt)] = (n, v)
                last[ns] = (prompt, eid)
            elif op == "invalidate":
                cache.invalidate(prompt, namespace=ns)
                model.pop((ns, prompt), None)
            elif op == "clear":
                cache.clear(ns)
                model = {k: val for k, val in model.items() if k[0] != ns}
            elif op == "delete_last" and ns in last:
                last_prompt, eid = last.pop(ns)
                if cache.delete(eid):  # still the live entry of that prompt
                    del model[(ns, last_prompt)]
            for q_ns in _NS:
                for q in _PROMPTS:
                    hit = cache.get(q, namespace=q_ns, exact_only=True)
                    want = model.get((q_ns, q))
                    if want is None:
                        assert hit is None
                    else:
                        assert hit.namespace == q_ns and hit.response == {"ns": q_ns,
                                                                         "n": want[0]}
                for v in range(4):
                    hit = cache.get(_vec(v), namespace=q_ns)
                    if hit is not None:
                        assert hit.namespace == q_ns and hit.response["ns"] == q_ns
                        assert any(k[0] == q_ns and val[1] == v for k, val in model.items())
                    else:
                        assert not any(k[0] == q_ns and val[1] == v
                                       for k, val in model.items())


# -- the bad-input table ---------------------------------------------------------------------

_BIG = 16 * 1024 * 1024 + 1
BAD = [
    # get
    ("get int", lambda c: c.get(5), semcache.InvalidTypeError),
    ("get bytes", lambda c: c.get(b"q"), semcache.InvalidTypeError),
    ("get empty", lambda c: c.get(""), semcache.EmptyPromptError),
    ("get whitespace", lambda c: c.get(" \n\t"), semcache.EmptyPromptError),
    ("get huge prompt", lambda c: c.get("x" * (1024 * 1024 + 1)), semcache.TooLargeError),
    ("get wrong dim", lambda c: c.get(np.ones(DIM + 1)), semcache.DimensionError),
    ("get NaN vector", lambda c: c.get(np.full(DIM, np.nan)), semcache.InvalidVectorError),
    ("get inf vector", lambda c: c.get(np.array([np.inf] + [1.0] * (DIM - 1))),
     semcache.InvalidVectorError),
    ("get list with NaN", lambda c: c.get([math.nan] * DIM), semcache.InvalidVectorError),
    ("get zero vector", lambda c: c.get(np.zeros(DIM)), semcache.InvalidVectorError),
    ("get 2-D", lambda c: c.get(np.ones((2, DIM))), semcache.InvalidVectorError),
    ("get namespace int", lambda c: c.get("q", namespace=3), semcache.InvalidTypeError),
    ("get namespace empty", lambda c: c.get("q", namespace=""), semcache.InvalidInputError),
    ("get namespace NUL", lambda c: c.get("q", namespace="a\x00b"), semcache.InvalidInputError),
    ("get namespace huge", lambda c: c.get("q", namespace="n" * 300), semcache.InvalidInputError),
    # get_many
    ("get_many str", lambda c: c.get_many("q"), semcache.InvalidTypeError),
    ("get_many None", lambda c: c.get_many(None), semcache.InvalidTypeError),
    ("get_many bad item", lambda c: c.get_many(["q", 5]), semcache.InvalidTypeError),
    ("get_many empty item", lambda c: c.get_many(["q", ""]), semcache.EmptyPromptError),
    ("get_many wrong dim", lambda c: c.get_many([np.ones(3)]), semcache.DimensionError),
    # put
    ("put empty", lambda c: c.put("", "a"), semcache.EmptyPromptError),
    ("put None prompt", lambda c: c.put(None, "a"), semcache.InvalidTypeError),
    ("put huge prompt", lambda c: c.put("é" * (600 * 1024), "a"), semcache.TooLargeError),
    ("put huge response", lambda c: c.put("q", "x" * _BIG), semcache.TooLargeError),
    ("put bytes response", lambda c: c.put("q", b"raw"), semcache.SerializationError),
    ("put object response", lambda c: c.put("q", object()), semcache.SerializationError),
    ("put inf response", lambda c: c.put("q", {"x": math.inf}), semcache.SerializationError),
    ("put NaN vector", lambda c: c.put("q", "a", vector=np.full(DIM, np.nan)),
     semcache.InvalidVectorError),
    ("put wrong dim", lambda c: c.put("q", "a", vector=np.ones(3)), semcache.DimensionError),
    ("put vector twice", lambda c: c.put(np.ones(DIM), "a", vector=np.ones(DIM)),
     semcache.InvalidInputError),
    ("put ttl 0", lambda c: c.put("q", "a", ttl=0), semcache.InvalidInputError),
    ("put ttl NaN", lambda c: c.put("q", "a", ttl=math.nan), semcache.InvalidInputError),
    ("put ttl inf", lambda c: c.put("q", "a", ttl=math.inf), semcache.InvalidInputError),
    ("put ttl negative", lambda c: c.put("q", "a", ttl=-3), semcache.InvalidInputError),
    ("put ttl bool", lambda c: c.put("q", "a", ttl=True), semcache.InvalidTypeError),
    ("put ttl str", lambda c: c.put("q", "a", ttl="60"), semcache.InvalidTypeError),
    ("put metadata list", lambda c: c.put("q", "a", metadata=[1]), semcache.SerializationError),
    ("put metadata set", lambda c: c.put("q", "a", metadata={"s": {1}}),
     semcache.SerializationError),
    ("put metadata huge", lambda c: c.put("q", "a", metadata={"m": "x" * 70_000}),
     semcache.TooLargeError),
    ("put tokens negative", lambda c: c.put("q", "a", tokens=-1), semcache.InvalidInputError),
    ("put namespace int", lambda c: c.put("q", "a", namespace=1), semcache.InvalidTypeError),
    # put_many: all or nothing, checked before anything is written
    ("put_many not pairs", lambda c: c.put_many(["q"]), semcache.InvalidTypeError),
    ("put_many triple", lambda c: c.put_many([("q", "a", "b")]), semcache.InvalidTypeError),
    ("put_many last bad", lambda c: c.put_many([("ok1", "a"), ("ok2", "b"), ("", "c")]),
     semcache.EmptyPromptError),
    ("put_many bad response", lambda c: c.put_many([("ok1", "a"), ("ok2", {1, 2})]),
     semcache.SerializationError),
    ("put_many bad ttl", lambda c: c.put_many([("ok1", "a")], ttl=-1), semcache.InvalidInputError),
    # delete / invalidate / clear
    ("delete str", lambda c: c.delete("1"), semcache.InvalidTypeError),
    ("delete float", lambda c: c.delete(1.0), semcache.InvalidTypeError),
    ("delete bool", lambda c: c.delete(True), semcache.InvalidTypeError),
    ("invalidate empty", lambda c: c.invalidate(""), semcache.EmptyPromptError),
    ("invalidate int", lambda c: c.invalidate(7), semcache.InvalidTypeError),
    ("invalidate wrong dim", lambda c: c.invalidate(np.ones(2)), semcache.DimensionError),
    ("invalidate bad ns", lambda c: c.invalidate("existing", namespace=""),
     semcache.InvalidInputError),
    ("clear bad ns", lambda c: c.clear(namespace=5), semcache.InvalidTypeError),
    ("clear empty ns", lambda c: c.clear(namespace=""), semcache.InvalidInputError),
    # round 2: what an attacker found (raw RecursionError, OverflowError, UnicodeEncodeError)
    ("put response nested 100k", lambda c: c.put("q", _nested(100_000)),
     semcache.SerializationError),
    ("put metadata nested 100k", lambda c: c.put("q", "a", metadata={"m": _nested(100_000)}),
     semcache.SerializationError),
    ("put ttl 9.3e18", lambda c: c.put("q", "a", ttl=9.3e18), semcache.InvalidInputError),
    ("put ttl 1e300", lambda c: c.put("q", "a", ttl=1e300), semcache.InvalidInputError),
    ("put tokens 2**63", lambda c: c.put("q", "a", tokens=2**63), semcache.InvalidInputError),
    ("delete 2**63", lambda c: c.delete(2**63), semcache.InvalidInputError),
    ("put surrogate prompt", lambda c: c.put("q\ud800", "a"), semcache.InvalidInputError),
    ("get surrogate prompt", lambda c: c.get("q\ud800"), semcache.InvalidInputError),
    ("put surrogate response", lambda c: c.put("q", "a\udfff"), semcache.SerializationError),
    ("put surrogate metadata", lambda c: c.put("q", "a", metadata={"k": "\ud800"}),
     semcache.SerializationError),
    ("put surrogate namespace", lambda c: c.put("q", "a", namespace="\ud800"),
     semcache.InvalidInputError),
    ("put complex vector", lambda c: c.put("q", "a", vector=np.ones(DIM) * (1 + 1j)),
     semcache.InvalidVectorError),
    ("get complex vector", lambda c: c.get(np.ones(DIM, dtype=complex)),
     semcache.InvalidVectorError),
    ("put whitespace namespace", lambda c: c.put("q", "a", namespace="   "),
     semcache.InvalidInputError),
]


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.engines(*ENGINES)
@pytest.mark.parametrize("name,call,error", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_the_documented_error_and_writes_nothing(location, engine, name, call,
                                                                  error):
    with semcache.open(location, dim=DIM, ttl=None) as cache:
        cache.put("existing", "value", vector=_vec(0))
        cache.get(_vec(0))  # mirror built
        cache.flush()
        before = stored_state(location)
        mirror = Path(location + "-codes").read_bytes() if engine == "sqlite" else None
        with pytest.raises(error) as exc_info:
            call(cache)
        assert isinstance(exc_info.value, semcache.SemcacheError)
        assert str(exc_info.value)
        assert stored_state(location) == before
        if mirror is not None:
            assert Path(location + "-codes").read_bytes() == mirror
        assert cache.stats()["entries"] == 1
        assert cache.get("existing").response == "value"


BAD_OPEN = [
    ({"similarity_threshold": 1.0001}, semcache.ThresholdError),
    ({"similarity_threshold": -0.5}, semcache.ThresholdError),
    ({"similarity_threshold": math.nan}, semcache.ThresholdError),
    ({"similarity_threshold": True}, semcache.ThresholdError),
    ({"max_entries": 0}, semcache.ConfigurationError),
    ({"max_entries": 2.5}, semcache.ConfigurationError),
    ({"ttl": 0}, semcache.InvalidInputError),
    ({"ttl": math.inf}, semcache.InvalidInputError),
    ({"namespace": ""}, semcache.InvalidInputError),
    ({"dim": 0}, semcache.ConfigurationError),
    ({"dim": 16}, semcache.ConfigurationError),  # the file is pinned to dim 8
    ({"seed": -1}, semcache.ConfigurationError),
    ({"refresh_on_access": "yes"}, semcache.ConfigurationError),
    ({"embedder": "hashing"}, semcache.EmbedderMismatchError),
    ({"stream_chunk_length": 0}, semcache.ConfigurationError),  # a wrap() option, not open()'s
]


@pytest.mark.engines(*ENGINES)
@pytest.mark.parametrize("kwargs,error", BAD_OPEN, ids=[str(k) for k, _ in BAD_OPEN])
def test_bad_open_arguments_on_an_existing_file_write_nothing(location, kwargs, error):
    with semcache.open(location, dim=DIM) as cache:
        cache.put("existing", "value")
    before = stored_state(location)
    args = {"dim": DIM, **kwargs}
    if "embedder" in kwargs:
        args.pop("dim")
    with pytest.raises(error):
        semcache.open(location, **args)
    assert stored_state(location) == before


@pytest.mark.parametrize("path,error", [(123, semcache.InvalidTypeError),
                                        ("", semcache.InvalidInputError),
                                        (":memory:", semcache.InvalidInputError)])
def test_bad_paths(path, error):
    with pytest.raises(error):
        semcache.open(path, hash_only=True)


@pytest.mark.engines(*ENGINES)
def test_closed_cache_refuses_everything(location):
    cache = semcache.open(location, dim=DIM)
    cache.put("q", "a")
    cache.close()
    before = stored_state(location)
    for call in (lambda: cache.get("q"), lambda: cache.put("r", "b"), lambda: cache.delete(1),
                 lambda: cache.get_many(["q"]), lambda: cache.put_many([("r", "b")]),
                 lambda: cache.invalidate("q"), lambda: cache.clear(),
                 lambda: cache.purge_expired(), lambda: cache.flush()):
        with pytest.raises(semcache.CacheClosedError):
            call()
    assert stored_state(location) == before
