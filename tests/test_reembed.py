"""``semcache reembed SRC DST --embedder NAME`` (issue 24 item 4), on both engines.

What is carried (keys, namespaces, scopes, TTLs, metadata, usage, tunables), what is not
(thresholds, verdicts: cosines of the old space), what is skipped and counted (entries
without a prompt, expired ones), and the interruption: a real ``semcache reembed`` process
killed with SIGKILL mid-run, then run again, completes with every entry once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import semcache
from semcache.embedders import get_embedder
from semcache.reembed import reembed
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.engines import ENGINES, cache_exists
from tests.word_embedder import WordEmbedder

pytestmark = pytest.mark.engines(*ENGINES)
HASHING = get_embedder("hashing")


def _fill(location: str, clock: list[float]) -> None:
    """A cache on WordEmbedder: plain prompts in two namespaces, a request entry, an
    entry without prompt, an expired one, a threshold and a verdict."""
    with semcache.open(location, embedder=WordEmbedder(), ttl=3600, max_bytes=10 ** 7,
                       similarity_threshold=0.8, clock=lambda: clock[0]) as src:
        src.put("capital of France", "Paris", metadata={"src": "atlas"}, tokens=5)
        src.put("capital of Peru", "Lima", namespace="tenant-7", ttl=None)
        src.store(b"request key", {"choices": []}, text="weather in Oslo", scope="gpt-x")
        src.put("soon gone", "x", ttl=10)
        hit = src.get("capital of France")
        assert hit is not None
        src.feedback(hit, True, query="capital of France")
        src.set_threshold("tenant-7", 0.99)
    with semcache.open(location, store_prompts=False, clock=lambda: clock[0]) as src:
        src.put("a prompt not kept", "secret answer")


def test_reembed_carries_entries_and_tunables_not_cosines(make_location) -> None:  # noqa: ANN001
    src, dst = make_location("src.db"), make_location("dst.db")
    now = [time.time() - 60]
    _fill(src, now)
    report = reembed(src, dst, "hashing", batch_size=2)
    assert (report.copied, report.no_prompt, report.expired, report.already) == (3, 1, 1, 0)
    assert report.created and report.embedder.startswith("hashing")
    assert "similarity_threshold" in report.not_carried and "verdicts (feedback)" in \
        report.not_carried
    with semcache.open(src, readonly=True, create=False) as old, \
            semcache.open(dst, create=False) as new:
        assert new.embedder_name == report.embedder and new.semantic
        # tunables carried, the thresholds and verdicts not
        assert (new.ttl, new.max_bytes) == (3600, 10 ** 7)
        assert new.stored_settings().get("similarity_threshold") is None
        assert new.settings["namespace_thresholds"] == {} and new.verdicts() == []
        assert new.settings["store_prompts"] is False  # the source's choice, carried
        before = {e.key_hash: e for e in old.entries() if e.prompt is not None
                  and e.prompt != "soon gone"}
        after = {e.key_hash: e for e in new.entries(with_vectors=True)}
        assert set(after) == set(before)  # the same exact keys, so exact hits still work
        for key, e in after.items():
            o = before[key]
            assert (e.namespace, e.scope, e.prompt, e.response, e.metadata, e.tokens,
                    e.created_at, e.expires_at, e.ttl, e.hits) == \
                (o.namespace, o.scope, o.prompt, o.response, o.metadata, o.tokens,
                 o.created_at, o.expires_at, o.ttl, o.hits)
            assert e.vector is not None and np.allclose(e.vector, HASHING.embed([e.prompt])[0])
        assert new.lookup(b"request key", text="weather in Oslo", scope="gpt-x") is not None
        assert new.get("capital of Peru", namespace="tenant-7").response == "Lima"
        paraphrase = new.get("Capital of France?")  # cosine 0.903 with hashing
        assert paraphrase is not None and paraphrase.kind == "semantic"


def test_the_command_refuses_what_it_cannot_do(make_location) -> None:  # noqa: ANN001
    src, dst = make_location("src.db"), make_location("dst.db")
    _fill(src, [time.time() - 60])  # "soon gone" expired
    proc = run_cli("reembed", src, src, "--embedder", "hashing")
    assert "same cache" in assert_one_line_error(proc, 1)
    assert run_cli("reembed", src, dst).returncode == 2  # --embedder is required
    with semcache.open(dst, embedder=WordEmbedder()):
        pass
    proc = run_cli("reembed", src, dst, "--embedder", "hashing")
    assert "test-words" in assert_one_line_error(proc, 1)  # pinned to another embedder
    proc = run_cli("reembed", make_location("missing.db"), make_location("x.db"),
                   "--embedder", "hashing")
    assert_one_line_error(proc, 1)
    assert not cache_exists(make_location("x.db"))
    done = run_cli("--json", "reembed", src, make_location("ok.db"), "--embedder", "hashing")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["copied"] == 3 and done.stderr == ""  # no bar off a tty
    text = run_cli("reembed", src, make_location("ok.db"), "--embedder", "hashing").stdout
    assert "3 entries were already there" in text and "not carried" in text


def _count(location: str) -> int:
    try:
        with semcache.open(location, readonly=True, create=False) as c:
            return c.count()
    except (semcache.CacheNotFoundError, semcache.NotASemcacheFileError):
        return 0  # not created yet, or created but still empty (its first write pending)


def test_killed_mid_run_then_run_again_completes_without_duplicates(
        make_location, tmp_path: Path) -> None:  # noqa: ANN001
    src, dst = make_location("src.db"), make_location("dst.db")
    n = 1200
    with semcache.open(src, embedder="hashing", ttl=None, max_entries=None) as cache:
        cache.put_many([(f"question {i} about topic {i % 37}", f"answer {i}") for i in range(n)])
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    # MiniLM, a real model: slow enough on a shared machine to be caught mid-run.
    proc = subprocess.Popen([sys.executable, "-m", "semcache", "reembed", src, dst,
                             "--embedder", "minilm", "--batch-size", "8"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _count(dst) < 100 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL
    copied_before = _count(dst)
    assert 0 < copied_before < n, copied_before  # really interrupted mid-run
    again = run_cli("--json", "reembed", src, dst, "--embedder", "minilm", timeout=600)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["already"] == copied_before and report["created"] is False
    assert report["copied"] + report["already"] == n
    with semcache.open(src, readonly=True, create=False) as old, \
            semcache.open(dst, readonly=True, create=False) as new:
        keys = [e.key_hash for e in new.entries()]
        assert len(keys) == len(set(keys)) == n  # every entry once
        assert set(keys) == {e.key_hash for e in old.entries()}
        assert new.embedder_name.startswith("minilm")
        assert new.stats()["bytes"] == sum(e.size for e in new.entries())
