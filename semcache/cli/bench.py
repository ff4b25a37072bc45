"""``semcache bench``: a quick, self-contained lookup benchmark on a temporary file.

It is a smoke-sized measurement for "how fast is it on this machine", not the project's
benchmark suite (scripts/ writes those results, see docs/benchmarks.md).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from semcache.cli import output as fmt

_TOPICS = ("billing", "login", "backups", "search", "exports", "alerts", "invoices", "webhooks")


def _prompt(i: int) -> str:
    return (f"How do I configure the {_TOPICS[i % len(_TOPICS)]} service for account "
            f"number {i} in region {i % 13}?")


def _paraphrase(i: int) -> str:
    return (f"Please, how do I configure the {_TOPICS[i % len(_TOPICS)]} service for account "
            f"number {i} in region {i % 13}?")


def _measure(fn: Callable[[Any], Any], items: list[Any]) -> tuple[list[float], int]:
    times: list[float] = []
    hits = 0
    for item in items:
        t0 = time.perf_counter()
        result = fn(item)
        times.append(time.perf_counter() - t0)
        hits += result is not None
    return times, hits


def _row(name: str, times: list[float], hits: int) -> dict[str, Any]:
    arr = np.asarray(times) * 1e6
    return {
        "operation": name, "n": len(times),
        "p50_us": round(float(np.percentile(arr, 50)), 1) if len(arr) else None,
        "p99_us": round(float(np.percentile(arr, 99)), 1) if len(arr) else None,
        "ops_per_s": round(len(arr) / (arr.sum() / 1e6), 1) if arr.sum() else None,
        "hit_rate": round(hits / len(times), 3) if times else None,
    }


def run_bench(entries: int = 2000, queries: int = 500, embedder: str = "hashing",
              seed: int = 0) -> dict[str, Any]:
    """Fill a temporary cache with ``entries`` prompts and time ``queries`` lookups of each
    kind: exact hits, semantic hits by vector, semantic hits by text (embedding included),
    and misses. Returns the rows of the table (microseconds)."""
    import semcache

    entries = max(entries, 1)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="semcache-bench-") as tmp:
        path = os.path.join(tmp, "bench.db")
        cache = semcache.open(path, embedder=embedder, ttl=None, max_entries=None)
        try:
            prompts = [_prompt(i) for i in range(entries)]
            t0 = time.perf_counter()
            for start in range(0, entries, 500):
                chunk = prompts[start:start + 500]
                cache.put_many([(p, {"answer": f"answer {start + j}"})
                                for j, p in enumerate(chunk)])
            put_s = time.perf_counter() - t0
            picks = [rng.randrange(entries) for _ in range(queries)]
            rows = []
            # Warm up (embedder load, mirror build) outside the timings.
            cache.get(_paraphrase(0))
            times, hits = _measure(cache.get, [prompts[i] for i in picks])
            rows.append(_row("exact hit (text)", times, hits))
            stored = cache.entries(order="id", with_vectors=True)
            nprng = np.random.default_rng(seed)
            vecs = []
            for i in picks[:queries]:
                v = stored[i].vector
                assert v is not None
                noisy = v + nprng.normal(0, 0.01, v.shape).astype(np.float32)
                vecs.append(noisy / np.linalg.norm(noisy))
            times, hits = _measure(cache.get, vecs)
            rows.append(_row("semantic hit (vector)", times, hits))
            times, hits = _measure(cache.get, [_paraphrase(i) for i in picks])
            rows.append(_row("semantic (text, embeds)", times, hits))
            misses = [f"Unrelated question {rng.random():.12f} about gardening and tomatoes"
                      for _ in range(queries)]
            times, hits = _measure(cache.get, misses)
            rows.append(_row("miss (text, embeds)", times, hits))
            settings = cache.settings
        finally:
            cache.close()
    return {
        "entries": entries, "queries": queries, "embedder": settings["embedder"],
        "threshold": settings["similarity_threshold"],
        "put_entries_per_s": round(entries / put_s, 1) if put_s else None,
        "rows": rows,
    }


def print_bench(result: dict[str, Any]) -> None:
    print(f"semcache bench: {result['entries']} entries, {result['queries']} lookups per kind, "
          f"embedder {result['embedder']} (threshold {result['threshold']:g})")
    print(f"puts: {result['put_entries_per_s']:.0f} entries/s (batches of 500)")
    print()
    print(fmt.table(
        ["operation", "p50 µs", "p99 µs", "ops/s", "hit rate"],
        [[r["operation"], f"{r['p50_us']:.1f}", f"{r['p99_us']:.1f}", f"{r['ops_per_s']:.0f}",
          f"{r['hit_rate'] * 100:.0f}%"] for r in result["rows"] if r["n"]],
        "lrrrr"))
