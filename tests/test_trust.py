"""Hits people can trust, through the real cache: the near-miss guard in the lookup
pipeline, per-namespace thresholds, feedback shared by processes, and calibrate."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import semcache
from tests.cli_helpers import run_cli
from tests.engines import ENGINES

# Every test runs on an SQLite file and on a PostgreSQL schema.
pytestmark = pytest.mark.engines(*ENGINES)


class SameVector:
    """Every text gets the same vector: any stored prompt is a cosine-1.0 candidate, so
    only the guard (or feedback) can stop a wrong answer."""

    name = "test-same:v1"
    dim = 8

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.tile(np.ones(self.dim, dtype=np.float32) / np.sqrt(self.dim), (len(texts), 1))


def open_same(path: str | Path, **settings: object) -> semcache.Cache:
    return semcache.open(path, embedder=SameVector(), **settings)


@pytest.mark.parametrize("stored, asked", [
    ("How do I enable two-factor authentication?", "How do I disable two-factor authentication?"),
    ("What was the GDP of France in 2019?", "What was the GDP of France in 2020?"),
    ("How do I convert EUR to USD?", "How do I convert USD to EUR?"),
    ("Is it safe to run the migration now?", "Is it not safe to run the migration now?"),
])
def test_the_guard_rejects_near_misses_and_counts_them(location: str, stored: str, asked: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with open_same(location) as cache:
        cache.put(stored, "the stored answer")
        with caplog.at_level(logging.DEBUG, logger="semcache"):
            assert cache.get(asked) is None
        assert cache.stats()["guard_rejections"] == 1
        assert any("guard rejected entry" in r.getMessage() for r in caplog.records)
        # the prompts themselves are not logged
        assert not any(asked in r.getMessage() for r in caplog.records)


def test_rewording_still_hits_and_guard_false_turns_it_off(location: str) -> None:
    with open_same(location) as cache:
        cache.put("How do I enable two-factor authentication?", "Settings > Security")
        hit = cache.get("How can I turn on two-factor authentication?")
        assert hit is not None and hit.kind == "semantic"
    with open_same(location, guard=False) as cache:
        hit = cache.get("How do I disable two-factor authentication?")
        assert hit is not None  # no guard: the cosine alone decides
        assert cache.settings["guard"] is False
    with open_same(location) as cache:
        assert cache.settings["guard"] is False  # the setting is stored in the file


def test_the_guard_tries_the_next_candidate(location: str) -> None:
    with open_same(location) as cache:
        cache.put("What was the GDP of France in 2019?", "2019 answer")
        cache.put("What was the GDP of France in 2020?", "2020 answer")
        cache.put("What was the GDP of Spain in 2019?", "Spain answer")
        for year in ("2019", "2020"):
            hit = cache.get(f"Tell me the GDP of France in {year}")
            assert hit is not None and hit.response == f"{year} answer"


def test_vector_lookups_and_prompt_less_entries_skip_the_guard(location: str) -> None:
    vec = np.ones(8, dtype=np.float32)
    with open_same(location, store_prompts=False) as cache:
        cache.put("How do I enable the firewall?", "answer")
        assert cache.get(vec) is not None
        # no stored prompt to compare with: the guard cannot judge (docs/quality.md)
        assert cache.get("How do I disable the firewall?") is not None


def test_thresholds_per_namespace_are_stored_for_every_process(location: str) -> None:
    path = location
    with semcache.open(path, embedder="hashing", similarity_threshold=0.9) as cache:
        cache.set_threshold("strict", 0.99)
        assert cache.threshold("strict") == 0.99 and cache.threshold() == 0.9
        cache.set_threshold("whole", 1)  # an int is a valid threshold; it reads as a float
        assert type(cache.threshold("whole")) is float
    code = ("import semcache, sys\n"
            "c = semcache.open(sys.argv[1])\n"
            "print(c.threshold('strict'), c.threshold('other'))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["0.99", "0.9"]
    with semcache.open(path) as cache:
        with pytest.raises(semcache.ThresholdError):
            cache.set_threshold("strict", 1.5)
        cache.set_threshold("strict", None)
        assert cache.threshold("strict") == 0.9


def test_a_namespace_threshold_or_bound_set_elsewhere_reaches_an_open_cache(
        location: str) -> None:
    """`semcache calibrate --apply` or a script run beside live workers: what it sets for a
    namespace is read again by every open cache within a second, not at its next open."""
    rng = np.random.default_rng(3)
    stored = rng.standard_normal(16)
    stored /= np.linalg.norm(stored)
    side = rng.standard_normal(16)
    side -= side.dot(stored) * stored
    side /= np.linalg.norm(side)
    query = 0.95 * stored + np.sqrt(1 - 0.95**2) * side  # cosine 0.95 to the stored vector
    with semcache.open(location, embedder=None, dim=16, similarity_threshold=0.9) as cache:
        cache.put("stored", "answer", vector=stored, namespace="strict")
        assert cache.get(query, namespace="strict") is not None
        assert cache.error_bound("strict") is None
        code = ("import semcache, sys\n"
                "with semcache.open(sys.argv[1]) as c:\n"
                "    c.set_threshold('strict', 0.99)\n"
                "    c.set_error_bound('strict', 0.02)\n")
        subprocess.run([sys.executable, "-c", code, location], check=True)
        deadline = time.monotonic() + 10
        while cache.threshold("strict") != 0.99 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.threshold("strict") == 0.99 and cache.threshold() == 0.9
        assert cache.error_bound("strict") == 0.02
        assert cache.get(query, namespace="strict") is None  # 0.95 is under the new floor


_JUDGE = """
import sys, semcache
sys.path.insert(0, sys.argv[2])
from tests.test_trust import SameVector
cache = semcache.open(sys.argv[1], embedder=SameVector())
hit = cache.get("How do I reset my password at work?")
assert hit is not None and hit.kind == "semantic", hit
cache.feedback(hit, False)
cache.close()
"""


def test_a_wrong_verdict_stops_that_pair_in_every_process(location: str) -> None:
    path = location
    with open_same(path) as cache:
        entry = cache.put("How do I reset my password?", "Use the reset link")
    subprocess.run([sys.executable, "-c", _JUDGE, str(path), str(Path(__file__).parents[1])],
                   check=True, capture_output=True)
    with open_same(path) as cache:
        assert cache.get("How do I reset my password at work?") is None  # judged wrong
        other = cache.get("How can I reset my password?")  # another query still hits
        assert other is not None and other.entry_id == entry
        cache.feedback(other, True)
        [wrong, right] = cache.verdicts()
        assert (wrong.correct, right.correct) == (False, True)
        assert wrong.kind == "semantic" and wrong.similarity == pytest.approx(1.0)
        stats = cache.stats()
        assert stats["feedback_wrong"] == 1 and stats["feedback_right"] == 1


def test_a_wrong_exact_answer_is_deleted(location: str) -> None:
    with open_same(location) as cache:
        cache.put("What is 2 + 2?", "5")
        hit = cache.get("What is 2 + 2?")
        assert hit is not None and hit.kind == "exact"
        cache.feedback(hit, False)
        assert cache.get("What is 2 + 2?", exact_only=True) is None
        with pytest.raises(semcache.InvalidInputError):
            cache.feedback(hit.entry_id, False, similarity=3.0)


def test_calibrate_from_feedback_says_what_it_needs(location: str) -> None:
    path = location
    with semcache.open(path, embedder="hashing") as cache:
        entry = cache.put("How do I configure the billing service?", "answer")
        for _ in range(5):
            cache.feedback(entry, True, query="Configure the billing service how?",
                           similarity=0.95)
    proc = run_cli("calibrate", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["threshold"] is None and out["needed"] > 0 and not out["applied"]
    assert "more" in out["message"]
    with semcache.open(path) as cache:
        assert cache.threshold() == 0.9  # nothing changed


def test_calibrate_from_labelled_pairs_applies_and_plots(tmp_path: Path, location: str) -> None:
    path = location
    with semcache.open(path, embedder="hashing"):
        pass
    pairs = tmp_path / "pairs.jsonl"
    lines = []
    for i in range(400):  # identical texts: similarity 1.0, all the same question
        q = f"How do I configure billing account number {i}?"
        lines.append(json.dumps({"query": q, "stored": q, "same": True}))
    pairs.write_text("\n".join(lines) + "\n")
    plot = tmp_path / "curve.png"
    proc = run_cli("calibrate", str(path), "--pairs", str(pairs), "--apply", "--plot",
                   str(plot), "--namespace", "billing")
    assert proc.returncode == 0, proc.stderr
    assert "applied" in proc.stdout and plot.stat().st_size > 0
    with semcache.open(path) as cache:
        assert cache.threshold("billing") < 0.9 and cache.threshold() == 0.9
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q"}\n')
    proc = run_cli("calibrate", str(path), "--pairs", str(bad))
    assert proc.returncode == 1 and "line 1" in proc.stderr
