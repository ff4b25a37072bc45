"""Export format 3 carries trust state: the copy refuses what the original refuses
(issue 20, item 9).

A per-namespace threshold and a wrong verdict used to be lost by export/import, so the copy
served answers the original never would. Copies here go file -> file and file ->
PostgreSQL through the real CLI; formats 1 and 2 still import.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import semcache
from semcache.transfer import import_jsonl
from tests.cli_helpers import run_cli
from tests.engines import ENGINES

pytestmark = pytest.mark.engines(*ENGINES)

STORED = "How do I reset my password?"
JUDGED = "How do I reset my password please?"  # similarity ~0.84 (hashing): judged wrong
STILL_FINE = "how do i reset my password"  # ~0.94: never judged
STRICT_ASK = "How can I reset my password?"  # ~0.80: under the strict namespace's threshold


def _original(path: Path) -> dict[str, object]:
    """A file whose trust state refuses two lookups that its file-level settings allow."""
    with semcache.open(path, embedder="hashing", similarity_threshold=0.5, guard=False) as c:
        c.put(STORED, "Use the reset link", namespace="support")
        c.put(STORED, "Call the service desk", namespace="strict")
        c.put("What is 2 + 2?", "5", namespace="support")
        hit = c.get(JUDGED, namespace="support")
        assert hit is not None and hit.kind == "semantic"
        c.feedback(hit, False, namespace="support")  # this pair is never served again
        c.feedback(c.get("What is 2 + 2?", namespace="support"), False,
                   namespace="support")  # a wrong exact answer: deleted, verdict kept
        c.feedback(c.get(STILL_FINE, namespace="support"), True, namespace="support")
        loose = c.get(STRICT_ASK, namespace="strict")
        assert loose is not None and loose.similarity < 0.9
        c.set_threshold("strict", 0.9)
        return _behaviour(c)


def _behaviour(c: semcache.Cache) -> dict[str, object]:
    """What a cache serves and knows, comparable between an original and its copy."""
    def served(text: str, ns: str) -> object:
        hit = c.get(text, namespace=ns)
        return None if hit is None else hit.response

    return {
        "judged": served(JUDGED, "support"), "fine": served(STILL_FINE, "support"),
        "exact-wrong": served("What is 2 + 2?", "support"),
        "strict": served(STRICT_ASK, "strict"), "strict-exact": served(STORED, "strict"),
        "threshold": c.threshold("strict"),
        "verdicts": sorted((v.namespace, v.kind, round(v.similarity, 6), v.correct,
                            v.query_hash) for v in c.verdicts()),
    }


def test_the_copy_refuses_what_the_original_refuses(tmp_path: Path, location: str) -> None:
    source = tmp_path / "original.db"
    before = _original(source)
    assert before["judged"] is None and before["exact-wrong"] is None
    assert before["strict"] is None and before["fine"] == "Use the reset link"
    export = tmp_path / "export.jsonl"
    assert run_cli("export", str(source), str(export)).returncode == 0
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert lines[0]["semcache_export"] == 3
    namespaces = {x["namespace_state"]: x for x in lines if "namespace_state" in x}
    assert namespaces["strict"]["settings"] == {"similarity_threshold": 0.9}
    assert [v["kind"] for v in namespaces["support"]["trust"]["verdicts"]] == ["exact"]
    [judged_entry] = [x for x in lines if "response" in x and x.get("trust")]
    assert {v["correct"] for v in judged_entry["trust"]["verdicts"]} == {False, True}

    proc = run_cli("import", location, str(export))  # a new file, or a new schema
    assert proc.returncode == 0, proc.stderr
    with semcache.open(location) as copy:
        assert _behaviour(copy) == before
    # importing the same export again changes nothing (verdicts are not doubled)
    with semcache.open(location) as copy:
        import_jsonl(copy, str(export))
        assert _behaviour(copy) == before


def test_into_an_existing_cache_settings_are_kept_and_said(tmp_path: Path,
                                                           location: str) -> None:
    _original(tmp_path / "original.db")
    export = tmp_path / "export.jsonl"
    run_cli("export", str(tmp_path / "original.db"), str(export))
    with semcache.open(location, embedder="hashing", similarity_threshold=0.5, guard=False):
        pass
    proc = run_cli("import", location, str(export))
    assert proc.returncode == 0, proc.stderr
    assert "namespace 'strict': similarity_threshold 0.9" in proc.stderr
    with semcache.open(location) as copy:
        assert copy.threshold("strict") == 0.5  # the existing cache's own
        assert copy.get(JUDGED, namespace="support") is None  # entry trust came along


def test_formats_1_and_2_still_import(tmp_path: Path, location: str) -> None:
    header = {"embedder": "hashing:v1:256", "dim": 256, "projection_seed": 0,
              "settings": {"similarity_threshold": 0.5}, "exported_at": 1.0}
    record = {"id": 1, "namespace": "default", "scope": "", "prompt": STORED, "key": None,
              "response": "Use the reset link", "metadata": None, "tokens": 0,
              "created_at": 1700000000.0, "accessed_at": None, "expires_at": None,
              "ttl": None, "hits": 0, "vector": None}
    for version, extra in ((1, {"key_hash": "00" * 32}), (2, {})):
        path = tmp_path / f"v{version}.jsonl"
        path.write_text(json.dumps({"semcache_export": version, **header}) + "\n"
                        + json.dumps({**record, **extra}) + "\n")
        target = location if version == 2 else str(tmp_path / "v1.db")
        proc = run_cli("import", target, str(path))
        assert proc.returncode == 0, proc.stderr
        with semcache.open(target) as copy:
            assert copy.get(STORED).response == "Use the reset link"


def test_bad_trust_sections_are_bad_lines_and_newer_keys_are_said(tmp_path: Path,
                                                                  location: str) -> None:
    header = {"semcache_export": 3, "embedder": "hashing:v1:256", "dim": 256,
              "projection_seed": 0, "settings": {}, "exported_at": 1.0}
    good = {"id": 1, "namespace": "default", "scope": "", "prompt": STORED, "key": None,
            "response": "r", "created_at": 1700000000.0,
            "trust": {"verdicts": [], "calibration": {"right": 3}}}
    bad_verdict = {**good, "prompt": "another", "trust": {"verdicts": [
        {"query_hash": "zz", "kind": "semantic", "similarity": 0.9, "correct": False,
         "created_at": 1.0}]}}
    bad_threshold = {"namespace_state": "x", "settings": {"similarity_threshold": 7}}
    newer = {"namespace_state": "y", "settings": {"learning_rate": 0.01}}
    path = tmp_path / "v3.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in (header, good, bad_verdict,
                                                      bad_threshold, newer)) + "\n")
    proc = run_cli("import", location, str(path))
    assert proc.returncode == 0, proc.stderr
    assert ":3: skipped" in proc.stderr and ":4: skipped" in proc.stderr
    assert "settings.learning_rate" in proc.stderr and "trust.calibration" in proc.stderr
    assert "imported 1 entries" in proc.stdout
