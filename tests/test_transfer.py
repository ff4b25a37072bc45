"""``semcache export`` / ``import`` (JSON Lines): exact round trips, bad lines, batching,
compatibility checks and the code mirror, through real subprocesses and real files; and
between a file and a PostgreSQL server in both directions (the ``engines`` tests)."""

from __future__ import annotations

import base64
import json
import logging
import time
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
from semcache.transfer import import_jsonl
from tests.conftest import mirror_rebuilds, sql_rows
from tests.engines import ENGINES, cache_exists, stored_state

ENTRY_COLUMNS = ("key_hash, namespace, prompt, response, metadata, size, tokens, created_at, "
                 "accessed_at, expires_at, ttl, hits, code, vector")


def entries_by_key(path: str) -> dict[bytes, tuple]:
    """Every column of every entry (plus its scope), keyed by key_hash; ids excluded."""
    rows = sql_rows(
        path, f"SELECT {', '.join('e.' + c.strip() for c in ENTRY_COLUMNS.split(','))}, p.scope "
        "FROM entries e JOIN partitions p ON p.id = e.partition_id")
    return {bytes(r[0]): r for r in rows}


def export_lines(path: str, out: Path) -> list[dict]:
    proc = run_cli("export", path, str(out))
    assert proc.returncode == 0, proc.stderr
    # splitlines() also splits on U+2028 & co: the export must escape them.
    return [json.loads(line) for line in out.read_text("utf-8").splitlines()]


def without_ids(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("id", "exported_at")} for r in records]


@pytest.fixture
def rich_cache(make_location) -> str:
    """Plain prompts, namespaces, expired entries, hits, metadata, odd JSON values, and
    entries written by the OpenAI wrapper (request scopes). A file, or a PostgreSQL schema
    for the tests marked to run on both engines."""
    path = make_location("src.db")
    make_cache(path)
    with semcache.open(path, similarity_threshold=0.88, max_entries=5000) as cache:
        cache.put("Ünïcödé prompt — 日本語 ✓", {"big": 2**63 - 1, "float": 0.1 + 0.2, "neg": -0.0,
                                                  "nested": [[], {}, None, "\u2028"]})
        cache.put("long answer", "x" * 100_000, metadata={"k": [1, 2]}, ttl=12.5)
        with StubOpenAIServer() as server:
            client = semcache.wrap(
                openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0), cache)
            for model in ("m1", "m2"):
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": PROMPTS[1]}])
        cache.get("long answer")
        cache.flush()
    return path


def test_export_then_import_round_trips_every_entry(rich_cache: str, tmp_path: Path) -> None:
    first = export_lines(rich_cache, tmp_path / "a.jsonl")
    header, records = first[0], first[1:]
    assert header["semcache_export"] == 3 and header["embedder"] == "hashing:v1:256"
    assert header["dim"] == 256 and header["projection_seed"] == 0
    assert header["settings"]["similarity_threshold"] == 0.88
    assert len(records) == 9
    assert {r["scope"] != "" for r in records} == {True, False}
    assert any(r["expires_at"] is not None and r["expires_at"] < time.time() for r in records)
    vec = np.frombuffer(base64.b64decode(records[0]["vector"]), dtype="<f4")
    assert vec.shape == (256,)

    target = str(tmp_path / "copy.db")
    proc = run_cli("import", target, str(tmp_path / "a.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "imported 9 entries" in proc.stdout
    second = export_lines(target, tmp_path / "b.jsonl")
    assert without_ids(second) == without_ids(first)
    # Every stored column is identical, including the recomputed 256-bit codes.
    assert entries_by_key(target) == entries_by_key(rich_cache)
    # The new file has the source's definition and stored tunables.
    with semcache.open(target) as copy:
        assert copy.settings["embedder"] == "hashing:v1:256"
        assert copy.similarity_threshold == 0.88 and copy.max_entries == 5000
        hit = copy.get(VARIANT)
        assert hit is not None and hit.kind == "semantic"
        assert copy.get("Ünïcödé prompt — 日本語 ✓").response["big"] == 2**63 - 1


def test_import_serves_the_wrapper_from_the_copy(rich_cache: str, tmp_path: Path) -> None:
    run_cli("export", rich_cache, str(tmp_path / "a.jsonl"))
    target = str(tmp_path / "copy.db")
    assert run_cli("import", target, str(tmp_path / "a.jsonl")).returncode == 0
    with StubOpenAIServer() as server, semcache.open(target) as cache:
        client = semcache.wrap(
            openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0), cache)
        answer = client.chat.completions.create(
            model="m2", messages=[{"role": "user", "content": PROMPTS[1]}])
        assert server.request_count == 0
        assert "Model: m2" in answer.choices[0].message.content


def test_reimport_replaces_same_keys(rich_cache: str, tmp_path: Path) -> None:
    run_cli("export", rich_cache, str(tmp_path / "a.jsonl"))
    before = entries_by_key(rich_cache)
    proc = run_cli("import", rich_cache, str(tmp_path / "a.jsonl"), "--json")
    assert json.loads(proc.stdout)["imported"] == 9
    assert entries_by_key(rich_cache) == before  # same rows (new ids), no duplicates
    assert run_cli("verify", rich_cache).returncode == 0


def test_export_and_import_through_pipes(rich_cache: str, tmp_path: Path) -> None:
    out = run_cli("export", rich_cache, "-")
    assert out.returncode == 0 and "exported 9 entries" in out.stderr
    lines = out.stdout.splitlines()
    assert json.loads(lines[0])["semcache_export"] == 3 and len(lines) == 10
    target = str(tmp_path / "piped.db")
    proc = run_cli("import", target, "-", "--json", stdin=out.stdout)
    assert json.loads(proc.stdout)["imported"] == 9
    assert entries_by_key(target) == entries_by_key(rich_cache)


def bad_file(tmp_path: Path, source: str) -> tuple[Path, dict[int, str]]:
    """An export with bad lines spliced in; returns the file and {line: what is wrong}."""
    lines = (tmp_path / "good.jsonl")
    run_cli("export", source, str(lines))
    good = lines.read_text("utf-8").splitlines()
    rec = json.loads(good[1])
    bad = {
        3: "{not json",
        5: json.dumps([1, 2, 3]),
        6: json.dumps({**rec, "key": "zz" * 32}),
        8: json.dumps({**rec, "vector": base64.b64encode(b"\0\0\x80?" * 10).decode()}),
        9: json.dumps({**rec, "vector": "###"}),
        10: json.dumps({**rec, "tokens": -1}),
        11: json.dumps({**rec, "created_at": "yesterday"}),
        12: json.dumps({k: v for k, v in rec.items() if k != "response"}),
    }
    out: list[str] = []
    it = iter(good)
    for lineno in range(1, len(good) + len(bad) + 1):
        out.append(bad[lineno] if lineno in bad else next(it))
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(out) + "\n", "utf-8")
    return path, bad


def test_bad_lines_are_reported_with_line_numbers_and_skipped(rich_cache: str,
                                                             tmp_path: Path) -> None:
    mixed, bad = bad_file(tmp_path, rich_cache)
    target = str(tmp_path / "t.db")
    proc = run_cli("import", target, str(mixed))
    assert proc.returncode == 0, proc.stderr
    assert "imported 9 entries" in proc.stdout and "skipped 8 bad line(s)" in proc.stdout
    reported = [line for line in proc.stderr.splitlines() if "skipped" in line]
    assert [int(line.split(":")[1]) for line in reported] == sorted(bad)
    assert "dimension 10" in proc.stderr and "key must be" in proc.stderr
    assert "tokens" in proc.stderr and "created_at" in proc.stderr
    report = json.loads(run_cli("import", str(tmp_path / "t2.db"), str(mixed), "--json").stdout)
    assert report["skipped"] == 8 and report["imported"] == 9
    assert [b["line"] for b in report["bad_lines"]] == sorted(bad)
    assert entries_by_key(target) == entries_by_key(rich_cache)


def test_strict_refuses_the_whole_file(rich_cache: str, tmp_path: Path) -> None:
    mixed, bad = bad_file(tmp_path, rich_cache)
    target = tmp_path / "strict.db"
    line = assert_one_line_error(run_cli("import", str(target), str(mixed), "--strict"), 1)
    assert "8 bad line(s)" in line and "line 3" in line and "nothing imported" in line
    assert not target.exists()  # the new file it would have created is not left behind
    existing = str(tmp_path / "existing.db")
    make_cache(existing)
    before = file_state(existing)
    assert_one_line_error(run_cli("import", existing, str(mixed), "--strict"), 1)
    assert file_state(existing) == before


def test_incompatible_embedder_is_refused(rich_cache: str, tmp_path: Path) -> None:
    run_cli("export", rich_cache, str(tmp_path / "a.jsonl"))
    other = str(tmp_path / "other.db")
    with semcache.open(other, embedder="hashing:v1:64") as cache:
        cache.put("q", "a")
    before = file_state(other)
    line = assert_one_line_error(run_cli("import", other, str(tmp_path / "a.jsonl")), 1)
    assert "dimension 256" in line and "64" in line
    assert file_state(other) == before
    # Same dimension, another model: refused too.
    vectors = str(tmp_path / "vectors.db")
    with semcache.open(vectors, dim=256) as cache:
        cache.put(np.ones(256), "a")
    line = assert_one_line_error(run_cli("import", vectors, str(tmp_path / "a.jsonl")), 1)
    assert "hashing:v1:256" in line


def test_bad_input_files(tmp_path: Path, rich_cache: str) -> None:
    assert "no input file" in assert_one_line_error(
        run_cli("import", str(tmp_path / "new.db"), str(tmp_path / "missing.jsonl")), 1)
    assert not (tmp_path / "new.db").exists()
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    assert "UTF-8" in assert_one_line_error(
        run_cli("import", str(tmp_path / "new.db"), str(binary)), 1)
    future = tmp_path / "future.jsonl"
    future.write_text(json.dumps({"semcache_export": 99}) + "\n")
    assert "version 99" in assert_one_line_error(run_cli("import", rich_cache, str(future)), 1)
    # an export into a missing directory names the file asked for, not its temporary twin
    target = tmp_path / "missing-dir" / "out.jsonl"
    line = assert_one_line_error(run_cli("export", rich_cache, str(target)), 1)
    assert repr(str(target)) in line and ".part" not in line


def test_large_import_is_batched_quietly_off_a_terminal(tmp_path: Path) -> None:
    source = str(tmp_path / "big.db")
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(1700, 256))
    with semcache.open(source, embedder="hashing", max_entries=None) as cache:
        for start in range(0, 1700, 500):
            for i in range(start, min(start + 500, 1700)):
                cache.put(f"question number {i}", {"answer": i}, vector=vectors[i])
    dump = tmp_path / "big.jsonl"
    assert run_cli("export", source, str(dump)).returncode == 0
    assert dump.stat().st_size > 1 << 20
    target = str(tmp_path / "big-copy.db")
    proc = run_cli("import", target, str(dump), "--batch-size", "400")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # stderr is a pipe: no progress bar (tests/test_progress.py)
    assert entries_by_key(target) == entries_by_key(source)
    quiet = run_cli("import", str(tmp_path / "q.db"), str(dump), "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_import_updates_a_live_mirror_in_another_process(
        tmp_path: Path, rich_cache: str, caplog: pytest.LogCaptureFixture) -> None:
    """A process with the code mirror open sees imported entries on its next lookup."""
    caplog.set_level(logging.INFO, logger="semcache")
    run_cli("export", rich_cache, str(tmp_path / "a.jsonl"))
    target = str(tmp_path / "live.db")
    with semcache.open(target, embedder="hashing") as cache:
        cache.put("warm", "up")
        assert cache.get(VARIANT) is None  # builds the mirror
        assert run_cli("import", target, str(tmp_path / "a.jsonl")).returncode == 0
        hit = cache.get(VARIANT)
        assert hit is not None and hit.kind == "semantic"
        assert mirror_rebuilds(caplog) <= 1


def test_import_in_process_batches_and_reports(tmp_path: Path, rich_cache: str) -> None:
    run_cli("export", rich_cache, str(tmp_path / "a.jsonl"))
    calls: list[tuple[int, int, int]] = []
    with semcache.open(str(tmp_path / "t.db"), embedder="hashing") as cache:
        report = import_jsonl(cache, str(tmp_path / "a.jsonl"), batch_size=2,
                              progress=lambda *a: calls.append(a))
    assert report.imported == 9 and report.bad_count == 0
    assert [c[2] for c in calls] == [2, 4, 6, 8, 9]


def server_codes(url: str) -> dict[bytes, bytes]:
    """key_hash -> 32-byte code of every entry of a PostgreSQL cache, read by hand."""
    import psycopg

    from tests.engines import _server

    base, schema = _server(url)
    with psycopg.connect(base, autocommit=True) as conn:
        rows = conn.execute(f'SELECT key_hash, code::text FROM "{schema}".entries').fetchall()
    return {bytes(k): int(bits, 2).to_bytes(32, "big") for k, bits in rows}


@pytest.mark.engines(*ENGINES)
def test_round_trip_through_the_other_engine(rich_cache: str, tmp_path: Path, engine: str,
                                             pg_url: str, make_location) -> None:
    """file -> server -> file, and server -> file -> server: every export equal (ids
    aside), every column of the file equal, the server's codes equal to the file's."""
    other = pg_url if engine == "sqlite" else str(tmp_path / "copy.db")
    back = make_location("back.db")  # the source's engine again
    first = export_lines(rich_cache, tmp_path / "a.jsonl")
    assert len(first) == 10
    proc = run_cli("import", other, str(tmp_path / "a.jsonl"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["imported"] == 9 and json.loads(proc.stdout)["created"]
    second = export_lines(other, tmp_path / "b.jsonl")
    assert without_ids(second) == without_ids(first)
    assert run_cli("import", back, str(tmp_path / "b.jsonl")).returncode == 0
    third = export_lines(back, tmp_path / "c.jsonl")
    assert without_ids(third) == without_ids(first)
    file_side = rich_cache if engine == "sqlite" else other
    server_side = other if engine == "sqlite" else rich_cache
    if engine == "sqlite":
        assert entries_by_key(back) == entries_by_key(rich_cache)
    codes = {k: bytes(r[12]) for k, r in entries_by_key(file_side).items()}
    assert server_codes(server_side) == codes  # the same 256-bit codes in both engines
    for target in (other, back):  # each copy serves like the source
        with semcache.open(target) as copy:
            assert copy.settings["embedder"] == "hashing:v1:256"
            assert copy.similarity_threshold == 0.88 and copy.max_entries == 5000
            hit = copy.get(VARIANT)
            assert hit is not None and hit.kind == "semantic"
            assert copy.get("Ünïcödé prompt — 日本語 ✓").response["big"] == 2**63 - 1
        assert run_cli("verify", target).returncode == 0


@pytest.mark.engines("postgres")
def test_a_refused_import_leaves_no_schema_and_changes_no_cache(rich_cache: str,
                                                                tmp_path: Path,
                                                                make_location) -> None:
    mixed, _ = bad_file(tmp_path, rich_cache)
    target = make_location("strict.db")
    line = assert_one_line_error(run_cli("import", target, str(mixed), "--strict"), 1)
    assert "nothing imported" in line and "password" not in line
    assert not cache_exists(target)  # the schema it would have created is not left behind
    before = stored_state(rich_cache)
    assert_one_line_error(run_cli("import", rich_cache, str(mixed), "--strict"), 1)
    assert stored_state(rich_cache) == before
