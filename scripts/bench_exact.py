"""Exact-tier latency: semcache vs diskcache vs an in-memory dict + sha256, same run.

    python scripts/bench_exact.py [--entries 1000] [--rounds 20]

Each lookup is timed on its own (perf_counter_ns); the systems take turns round by round
so that machine noise hits all of them alike. Responses are 1 KB strings. Prints medians,
p99s and ratios and writes benchmarks/results/exact.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import string
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import semcache

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def _payload(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + " ") for _ in range(1024))


def _time_calls(fn: Callable[[str], object], keys: list[str], out: list[int]) -> None:
    clock = time.perf_counter_ns
    for k in keys:
        t0 = clock()
        fn(k)
        out.append(clock() - t0)


def _summary(samples: list[int]) -> dict[str, float]:
    a = np.asarray(samples, dtype=np.float64) / 1000.0  # microseconds
    return {"median_us": float(np.median(a)), "p99_us": float(np.percentile(a, 99)),
            "mean_us": float(a.mean()), "n": int(a.size)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()

    import diskcache  # benchmark-only dependency (pip install -e ".[bench]")

    rng = random.Random(7)
    prompts = [f"question {i}: " + _payload(rng)[:60] for i in range(args.entries)]
    values = [_payload(rng) for _ in prompts]
    misses = [p + " (never stored)" for p in prompts]
    tmp = Path(tempfile.mkdtemp(prefix="semcache-bench-"))

    cache = semcache.open(str(tmp / "semcache.db"), hash_only=True, max_entries=None)
    cache.put_many(list(zip(prompts, values, strict=True)))
    dc = diskcache.Cache(str(tmp / "diskcache"))
    for p, v in zip(prompts, values, strict=True):
        dc.set(p, v)
    memo: dict[str, str] = {}
    for p, v in zip(prompts, values, strict=True):
        memo[hashlib.sha256(p.encode()).hexdigest()] = v

    def semcache_get(p: str) -> object:
        return cache.get(p, exact_only=True)

    def dict_get(p: str) -> object:
        return memo.get(hashlib.sha256(p.encode()).hexdigest())

    systems: dict[str, Callable[[str], object]] = {
        "semcache": semcache_get, "diskcache": dc.get, "dict+sha256": dict_get,
    }
    for name, fn in systems.items():  # correctness before speed
        assert fn(prompts[0]) is not None, name
        assert fn(misses[0]) is None, name
        if name == "semcache":
            assert cache.get(prompts[0]).response == values[0]

    hit: dict[str, list[int]] = {n: [] for n in systems}
    miss: dict[str, list[int]] = {n: [] for n in systems}
    for _ in range(args.rounds):
        for name, fn in systems.items():
            _time_calls(fn, prompts, hit[name])
            _time_calls(fn, misses, miss[name])

    result = {
        "benchmark": "exact tier lookup, 1 KB responses",
        "entries": args.entries, "lookups_per_system": args.entries * args.rounds,
        "machine": {"python": platform.python_version(), "cpu": platform.processor(),
                    "cores": __import__("os").cpu_count()},
        "hit": {n: _summary(v) for n, v in hit.items()},
        "miss": {n: _summary(v) for n, v in miss.items()},
    }
    for kind in ("hit", "miss"):
        base = result[kind]["semcache"]["median_us"]
        result[kind + "_ratio_semcache_over"] = {
            n: base / result[kind][n]["median_us"] for n in systems if n != "semcache"}
    cache.close()
    dc.close()

    print(f"exact tier, {args.entries} entries x {args.rounds} rounds, 1 KB responses")
    print(f"{'system':<14}{'hit p50':>10}{'hit p99':>10}{'miss p50':>10}{'miss p99':>10}  (us)")
    for n in systems:
        h, m = result["hit"][n], result["miss"][n]
        print(f"{n:<14}{h['median_us']:>10.2f}{h['p99_us']:>10.2f}"
              f"{m['median_us']:>10.2f}{m['p99_us']:>10.2f}")
    for kind in ("hit", "miss"):
        ratios = ", ".join(f"{v:.2f}x {n}" for n, v in result[kind + "_ratio_semcache_over"].items())
        print(f"semcache {kind} p50 = {ratios}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "exact.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'exact.json'}")


if __name__ == "__main__":
    main()
