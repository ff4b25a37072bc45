"""Helpers for the command-line tests: run ``python -m semcache`` in a real subprocess,
and build small real cache files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import semcache

#: Prompts and near-variants that the hashing embedder scores >= its 0.90 threshold.
PROMPTS = [
    "How do I configure the billing service for account number 5 in region 5?",
    "What is the capital of France?",
    "Explain what a hash table is, with an example.",
]
VARIANT = "Please, how do I configure the billing service for account number 5 in region 5?"


def run_cli(*args: str, stdin: str | None = None, cwd: str | Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m semcache ARGS`` with stdin closed (or fed), never a terminal."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("SEMCACHE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "semcache", *args], input=stdin if stdin is not None else "",
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and one line on stderr, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def make_cache(path: str | Path) -> dict[str, int]:
    """A hashing-embedder cache with plain prompts, two namespaces, an expired entry,
    hits, metadata and tokens. Returns the ids by name."""
    ids: dict[str, int] = {}
    past = time.time() - 3600
    with semcache.open(str(path), embedder="hashing", clock=lambda: past) as old:
        ids["expired"] = old.put("An old question that has expired", "old answer", ttl=60,
                                 namespace="tenant-7")
        ids["old"] = old.put("An old question that never expires", "kept", ttl=None)
    with semcache.open(str(path)) as cache:
        ids["billing"] = cache.put(PROMPTS[0], {"steps": [1, 2, 3], "ok": True},
                                   metadata={"source": "test"}, tokens=40)
        ids["france"] = cache.put(PROMPTS[1], "Paris", tokens=7)
        ids["hash"] = cache.put(PROMPTS[2], "A map from keys to buckets.",
                                namespace="tenant-7")
        for _ in range(3):
            assert cache.get(PROMPTS[1]) is not None
        cache.flush()
    return ids


def file_state(path: str | Path) -> tuple[bytes, bytes]:
    """Bytes of the database and its WAL (a missing WAL reads as empty)."""
    def read(p: str) -> bytes:
        try:
            return Path(p).read_bytes()
        except FileNotFoundError:
            return b""
    return read(str(path)), read(str(path) + "-wal")
