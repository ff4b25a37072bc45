"""The ``semcache`` command line, run as a real subprocess on real cache files, and (the
tests marked ``engines``) on PostgreSQL URLs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import openai
import pytest
from cli_helpers import (
    PROMPTS,
    VARIANT,
    assert_one_line_error,
    file_state,
    make_cache,
    run_cli,
)

import semcache
from semcache.demo.openai_stub import StubOpenAIServer
from tests.engines import ENGINES, cache_exists, stored_state

both_engines = pytest.mark.engines(*ENGINES)


@pytest.fixture
def cache_file(location: str) -> tuple[str, dict[str, int]]:
    """A small cache (tests/cli_helpers.py make_cache): a file, or a PostgreSQL URL for
    the tests marked ``both_engines``."""
    return location, make_cache(location)


def as_json(proc) -> object:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- general ---------------------------------------------------------------------------------

def test_help_version_and_module_entry_point() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("stats", "ls", "show", "get", "purge", "vacuum", "verify", "export",
                    "import", "bench", "demo"):
        assert command in proc.stdout
    assert run_cli("--version").stdout.startswith("semcache ")


def test_console_script_is_installed(tmp_path: Path) -> None:
    import shutil
    import subprocess

    exe = shutil.which("semcache")
    if exe is None:
        pytest.skip("semcache console script not on PATH")
    proc = subprocess.run([exe, "stats", str(tmp_path / "missing.db")], capture_output=True,
                          text=True, timeout=60)
    assert_one_line_error(proc, 1)


# -- stats / ls / show ---------------------------------------------------------------------------

@both_engines
def test_stats(cache_file) -> None:
    path, _ = cache_file
    proc = run_cli("stats", path)
    assert proc.returncode == 0, proc.stderr
    assert "entries:" in proc.stdout and "hashing:v1:256" in proc.stdout
    assert "tenant-7" in proc.stdout
    data = as_json(run_cli("stats", path, "--json"))
    assert data["stats"]["entries"] == 5
    assert data["stats"]["exact_hits"] == 3
    assert data["settings"]["embedder"] == "hashing:v1:256"
    by_ns = {n["namespace"]: n for n in data["namespaces"]}
    assert by_ns["tenant-7"]["entries"] == 2 and by_ns["tenant-7"]["expired"] == 1
    # --json is accepted before the command too.
    assert as_json(run_cli("--json", "stats", path))["stats"]["entries"] == 5


@both_engines
def test_ls_filters_and_sorting(cache_file) -> None:
    path, ids = cache_file
    proc = run_cli("ls", path)
    assert proc.returncode == 0, proc.stderr
    assert "capital of France" in proc.stdout and "expired" in proc.stdout
    everything = as_json(run_cli("ls", path, "--json"))
    assert everything["total"] == 5
    newest = [e["id"] for e in everything["entries"]]
    assert newest[0] == ids["hash"] and newest[-1] in (ids["expired"], ids["old"])
    hits = as_json(run_cli("ls", path, "--sort", "hits", "--json"))["entries"]
    assert hits[0]["id"] == ids["france"] and hits[0]["hits"] == 3
    expired = as_json(run_cli("ls", path, "--expired", "--json"))["entries"]
    assert [e["id"] for e in expired] == [ids["expired"]] and expired[0]["expired"]
    live = as_json(run_cli("ls", path, "--live", "--json"))
    assert live["total"] == 4 and ids["expired"] not in [e["id"] for e in live["entries"]]
    ns = as_json(run_cli("ls", path, "--namespace", "tenant-7", "--json"))["entries"]
    assert {e["id"] for e in ns} == {ids["hash"], ids["expired"]}
    limited = as_json(run_cli("ls", path, "--limit", "2", "--json"))
    assert len(limited["entries"]) == 2 and limited["total"] == 5
    assert "2 of 5 entries shown" in run_cli("ls", path, "--limit", "2").stdout
    assert_one_line_error(run_cli("ls", path, "--expired", "--live"), 2)


@both_engines
def test_show(cache_file) -> None:
    path, ids = cache_file
    proc = run_cli("show", path, str(ids["billing"]))
    assert proc.returncode == 0, proc.stderr
    assert PROMPTS[0] in proc.stdout and '"steps"' in proc.stdout
    rec = as_json(run_cli("show", path, str(ids["billing"]), "--json"))
    assert rec["response"] == {"steps": [1, 2, 3], "ok": True}
    assert rec["metadata"] == {"source": "test"} and rec["tokens"] == 40
    assert rec["vector_dim"] == 256 and len(rec["key_hash"]) == 64
    line = assert_one_line_error(run_cli("show", path, "9999"), 1)
    assert "9999" in line
    assert_one_line_error(run_cli("show", path, "not-a-number"), 2)


# -- get ---------------------------------------------------------------------------------------

@both_engines
def test_get_exact_semantic_and_miss(cache_file) -> None:
    path, ids = cache_file
    exact = as_json(run_cli("get", path, PROMPTS[1], "--json"))
    assert exact["hit"] and exact["kind"] == "exact" and exact["similarity"] == 1.0
    assert exact["response"] == "Paris" and exact["entry_id"] == ids["france"]
    semantic = as_json(run_cli("get", path, VARIANT, "--json"))
    assert semantic["kind"] == "semantic" and semantic["entry_id"] == ids["billing"]
    assert 0.9 <= semantic["similarity"] < 1.0
    human = run_cli("get", path, VARIANT)
    assert human.stdout.startswith("HIT semantic") and "similarity=0.9" in human.stdout
    miss = as_json(run_cli("get", path, "Completely unrelated: tomatoes in winter", "--json"))
    assert miss == {"hit": False, "namespace": "default", "threshold": 0.9}
    assert run_cli("get", path, "tomatoes in winter").stdout.startswith("MISS")
    other_ns = as_json(run_cli("get", path, PROMPTS[2], "--namespace", "tenant-7", "--json"))
    assert other_ns["kind"] == "exact"
    assert not as_json(run_cli("get", path, PROMPTS[2], "--json"))["hit"]  # default namespace
    assert not as_json(run_cli("get", path, VARIANT, "--exact-only", "--json"))["hit"]


@both_engines
def test_get_finds_llm_entries_in_any_request_scope(location: str) -> None:
    path = location
    with StubOpenAIServer() as server, semcache.open(path, embedder="hashing") as cache:
        client = semcache.wrap(
            openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0), cache)
        client.chat.completions.create(
            model="stub-model", messages=[{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": PROMPTS[0]}])
    exact = as_json(run_cli("get", path, PROMPTS[0], "--json"))
    assert exact["kind"] == "exact" and exact["scope"] != ""
    assert exact["metadata"]["model"] == "stub-model"
    semantic = as_json(run_cli("get", path, VARIANT, "--json"))
    assert semantic["kind"] == "semantic" and semantic["scope"] == exact["scope"]
    human = run_cli("get", path, PROMPTS[0])
    assert "You asked:" in human.stdout  # the assistant message, not raw JSON


# -- read-only inspection ------------------------------------------------------------------------

def test_inspection_never_writes_or_loads_a_model(tmp_path: Path) -> None:
    """stats/ls/show/verify/export on a MiniLM-pinned file: nothing written, no torch."""
    path = str(tmp_path / "minilm.db")
    rng = np.random.default_rng(0)
    with semcache.open(path, embedder="minilm") as cache:
        entry = cache.put("a question", "an answer", vector=rng.normal(size=384))
    before = file_state(path)
    listing = sorted(os.listdir(tmp_path))
    commands = [["stats", path], ["ls", path], ["show", path, str(entry)], ["verify", path],
                ["export", path, str(tmp_path / "x.jsonl")],
                ["get", path, "a question", "--exact-only"]]
    code = (
        "import sys; from semcache.cli import main\n"
        f"for argv in {commands!r}:\n"
        "    assert main(argv) == 0, argv\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)\n")
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False False"
    assert file_state(path) == before
    new = set(os.listdir(tmp_path)) - set(listing)
    assert new <= {"x.jsonl", "minilm.db-shm", "minilm.db-wal"}, new


@both_engines
def test_inspection_of_hash_only_file_pins_nothing(location: str) -> None:
    path = location
    with semcache.open(path, hash_only=True) as cache:
        cache.put("q", "a")
    before = stored_state(path)
    for args in (["stats", path], ["ls", path], ["get", path, "q"], ["verify", path]):
        assert run_cli(*args).returncode == 0
    assert as_json(run_cli("get", path, "q", "--json"))["kind"] == "exact"
    assert stored_state(path) == before


# -- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["stats", "ls", "show", "get", "purge", "vacuum", "verify",
                                     "export"])
def test_missing_file_is_an_error_and_is_not_created(tmp_path: Path, command: str) -> None:
    path = tmp_path / "nope.db"
    extra = {"show": ["1"], "get": ["hello"], "purge": ["--expired"],
             "export": [str(tmp_path / "out.jsonl")]}.get(command, [])
    line = assert_one_line_error(run_cli(command, str(path), *extra), 1)
    assert "nope.db" in line
    assert not path.exists()
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a database\n" * 200)
    assert "not" in assert_one_line_error(run_cli("stats", str(text)), 1)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert "empty" in assert_one_line_error(run_cli("ls", str(empty)), 1)
    assert_one_line_error(run_cli("stats", str(tmp_path)), 1)  # a directory
    import apsw

    other = apsw.Connection(str(tmp_path / "other.db"))
    other.execute("CREATE TABLE t (x)")
    other.close()
    line = assert_one_line_error(run_cli("verify", str(tmp_path / "other.db")), 1)
    assert "not a semcache" in line
    # serve opens the cache inside the server's startup: it exited 3 with a traceback
    line = assert_one_line_error(run_cli("serve", "--upstream", "http://127.0.0.1:9",
                                         "--cache", str(text), "--port", "0"), 1)
    assert str(text) in line and "not" in line
    line = assert_one_line_error(run_cli(
        "serve", "--upstream", "http://127.0.0.1:9", "--port", "0",
        "--cache", "postgresql://u:secret-pw@127.0.0.1:1/db"), 1)
    assert "secret-pw" not in line


@both_engines
def test_usage_errors_exit_2(cache_file) -> None:
    path, _ = cache_file
    for args in ([], ["frobnicate"], ["stats"], ["ls", path, "--limit", "-3"],
                 ["ls", path, "--sort", "random"], ["get", path],
                 ["demo", "--latency", "fast"], ["import", path]):
        proc = run_cli(*args)
        assert_one_line_error(proc, 2)


# -- purge / vacuum / verify ------------------------------------------------------------------------

def count(path: str) -> int:
    return as_json(run_cli("stats", path, "--json"))["stats"]["entries"]


@both_engines
def test_purge(cache_file) -> None:
    path, ids = cache_file
    # usage errors exit 2, as docs/cli.md says
    assert "--expired" in assert_one_line_error(run_cli("purge", path), 2)
    assert_one_line_error(run_cli("purge", path, "--older-than", "soon"), 2)
    assert_one_line_error(run_cli("purge", path, "--older-than", "7x"), 2)
    assert_one_line_error(run_cli("purge", path, "--all", "--expired"), 2)
    dry = as_json(run_cli("purge", path, "--expired", "--dry-run", "--json"))
    assert dry == {"deleted": 0, "matching": 1, "dry_run": True} and count(path) == 5
    assert as_json(run_cli("purge", path, "--expired", "--json"))["deleted"] == 1
    assert as_json(run_cli("stats", path, "--json"))["stats"]["expirations"] == 1
    assert as_json(run_cli("purge", path, "--older-than", "30m", "--json"))["deleted"] == 1
    assert as_json(run_cli("purge", path, "--namespace", "tenant-7", "--json"))["deleted"] == 1
    remaining = {e["id"] for e in as_json(run_cli("ls", path, "--json"))["entries"]}
    assert remaining == {ids["billing"], ids["france"]}
    # --all with no terminal and no --yes: refused, nothing deleted.
    line = assert_one_line_error(run_cli("purge", path, "--all"), 1)
    assert "--yes" in line and count(path) == 2
    proc = run_cli("purge", path, "--all", "--yes")
    assert proc.returncode == 0 and "deleted 2" in proc.stdout
    assert count(path) == 0


@both_engines
def test_purge_keeps_the_code_mirror_in_step(cache_file) -> None:
    path, ids = cache_file
    with semcache.open(path) as cache:  # builds the mirror with a semantic lookup
        assert cache.get(VARIANT).entry_id == ids["billing"]
        assert run_cli("purge", path, "--namespace", "default", "--yes").returncode == 0
        assert cache.get(VARIANT) is None and cache.get(PROMPTS[1]) is None


@both_engines
def test_vacuum_and_verify(cache_file, engine: str) -> None:
    path, _ = cache_file
    run_cli("purge", path, "--all", "--yes")
    with semcache.open(path) as cache:
        cache.put_many([(f"question {i} " * 20, "x" * 2000) for i in range(200)])
        cache.clear()
        cache.put(PROMPTS[0], "kept")
    result = as_json(run_cli("vacuum", path, "--json"))
    if engine == "sqlite":
        size = os.path.getsize(path)
        assert result["bytes_after"] < result["bytes_before"] and os.path.getsize(path) <= size
    else:  # VACUUM (not FULL: no lock on readers) frees space for reuse, returns little
        assert result["bytes_after"] > 0 and result["expired"] == 0
        assert result["counter_drift"] == 0 and result["hnsw_rebuilt"] == 0
    assert "vacuumed" in run_cli("vacuum", path).stdout
    verified = as_json(run_cli("verify", path, "--json"))
    assert verified["ok"] is True
    assert "OK" in run_cli("verify", path).stdout
    assert as_json(run_cli("get", path, VARIANT, "--json"))["response"] == "kept"


def test_verify_reports_corruption(cache_file) -> None:
    path, _ = cache_file
    with open(path, "r+b") as f:  # overwrite pages after the header with garbage
        f.seek(8192)
        f.write(os.urandom(16384))
    proc = run_cli("verify", path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


# -- bench ---------------------------------------------------------------------------------------

def test_bench(tmp_path: Path) -> None:
    result = as_json(run_cli("bench", "--entries", "200", "--queries", "30", "--json",
                             cwd=tmp_path))
    rows = {r["operation"]: r for r in result["rows"]}
    assert rows["exact hit (text)"]["hit_rate"] == 1.0
    assert rows["semantic hit (vector)"]["hit_rate"] == 1.0
    assert rows["semantic (text, embeds)"]["hit_rate"] == 1.0
    assert rows["miss (text, embeds)"]["hit_rate"] == 0.0
    assert all(r["p50_us"] > 0 for r in rows.values())
    human = run_cli("bench", "--entries", "100", "--queries", "10", cwd=tmp_path)
    assert human.returncode == 0 and "p50" in human.stdout
    assert os.listdir(tmp_path) == []  # the temporary file is gone


@pytest.mark.engines("postgres")
@pytest.mark.parametrize("command", ["stats", "ls", "show", "get", "purge", "vacuum", "verify",
                                     "export"])
def test_missing_schema_is_an_error_and_is_not_created(location: str, tmp_path: Path,
                                                       command: str) -> None:
    extra = {"show": ["1"], "get": ["hello"], "purge": ["--expired"],
             "export": [str(tmp_path / "out.jsonl")]}.get(command, [])
    line = assert_one_line_error(run_cli(command, location, *extra), 1)
    schema = location.rsplit("schema=", 1)[1]
    assert schema in line and "password" not in line
    assert not cache_exists(location)
    assert not (tmp_path / "out.jsonl").exists()
