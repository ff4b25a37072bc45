"""Micro-benchmark of the Hamming scan (semcache.kernels) at 10k / 100k / 1M rows.

For each size it times, interleaved query by query so that machine noise hits every variant
alike: ``hamming_topk`` (k=10, no filter), ``hamming_topk`` with the partition + expiry
filters, ``CodeMirror.search`` on an mmap'd mirror, and the naive baseline
``np.bitwise_count(codes ^ q).sum(1)``. It reports median and p99 in milliseconds and the
naive / scan ratio, plus mirror open (with checksum verification) time and RSS per entry at
the largest size. Results go to benchmarks/results/kernels.json.

Usage: python scripts/bench_kernels.py [--sizes 10000 100000 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from semcache.kernels.hamming import Workspace, hamming_topk
from semcache.kernels.mirror import EXPIRES_NEVER, CodeMirror

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "kernels.json"
K = 10


def _rss_bytes() -> int:
    """Resident set size of this process (Linux), 0 elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _stats(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1e3
    return {
        "median_ms": round(float(np.median(arr)), 4),
        "p99_ms": round(float(np.percentile(arr, 99)), 4),
        "repeats": len(samples),
    }


def bench_size(n: int, repeats: int, naive_repeats: int, tmpdir: str) -> dict[str, object]:
    rng = np.random.default_rng(n)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    words = codes.view("<u8")
    cols = [np.ascontiguousarray(words[:, i]) for i in range(4)]
    parts = np.zeros(n, dtype=np.int32)
    parts[::7] = 1  # another namespace
    exp = np.full(n, EXPIRES_NEVER, dtype=np.uint32)
    exp[::11] = 1000  # long expired
    path = os.path.join(tmpdir, f"bench-{n}.db-codes")
    mirror = CodeMirror.create(path, "bench", 1, np.arange(n), parts, exp, codes)
    ws = Workspace()
    now = time.time()

    variants: dict[str, Callable[[np.ndarray], object]] = {
        "topk": lambda q: hamming_topk(*cols, q, K, workspace=ws),
        "topk_filtered": lambda q: hamming_topk(
            *cols, q, K, partition=0, partitions=parts, expires=exp, now_u32=int(now), workspace=ws
        ),
        "mirror_search": lambda q: mirror.search(q, K, partition=0, now=now),
        "naive": lambda q: np.bitwise_count(words ^ q).sum(1),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats + 5):
        q = rng.integers(0, 256, 32, dtype=np.uint8).view("<u8")
        for name, fn in variants.items():
            if name == "naive" and r >= naive_repeats + 5:
                continue
            t0 = time.perf_counter()
            fn(q)
            dt = time.perf_counter() - t0
            if r >= 5:  # warm-up
                samples[name].append(dt)
    mirror.close()
    result: dict[str, object] = {"rows": n}
    for name, s in samples.items():
        result[name] = _stats(s)
    med = {name: float(np.median(s)) for name, s in samples.items()}
    result["naive_over_topk"] = round(med["naive"] / med["topk"], 2)
    return result


def bench_open(n: int, tmpdir: str, repeats: int = 15) -> dict[str, object]:
    """Open (+ checksum verification) + first search latency, file size and RSS per entry."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    path = os.path.join(tmpdir, "open.db-codes")
    parts = np.zeros(n, dtype=np.int32)
    exp = np.full(n, EXPIRES_NEVER, dtype=np.uint32)
    CodeMirror.create(path, "bench", 1, np.arange(n), parts, exp, codes, capacity=n).close()
    q = codes[0].view("<u8")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m = CodeMirror.open(path, "bench")
        m.search(q, K, partition=0, now=time.time())
        times.append(time.perf_counter() - t0)
        m.close()
    rss0 = _rss_bytes()
    m = CodeMirror.open(path, "bench", verify=False)
    for _ in range(3):
        m.search(q, K, partition=0, now=time.time())
    rss1 = _rss_bytes()
    m.close()
    return {
        "rows": n,
        "open_verify_search": _stats(times),
        "file_bytes_per_entry": round(os.path.getsize(path) / n, 3),
        "rss_bytes_per_entry_after_search": round((rss1 - rss0) / n, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    scale = 0.2 if args.quick else 1.0
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for n in args.sizes:
            # ~20 s of scanning per size at most; at least 60 repeats for a usable p99.
            repeats = max(60, int(scale * min(3000, 2e8 / n)))
            naive_repeats = max(20, repeats // 5)
            res = bench_size(n, repeats, naive_repeats, tmpdir)
            results.append(res)
            print(
                f"{n:>9} rows  topk {res['topk']['median_ms']:.3f} ms (p99 "
                f"{res['topk']['p99_ms']:.3f})  filtered {res['topk_filtered']['median_ms']:.3f}"
                f"  mirror {res['mirror_search']['median_ms']:.3f}"
                f"  naive {res['naive']['median_ms']:.3f}  ratio {res['naive_over_topk']}x"
            )
        opened = bench_open(max(args.sizes), tmpdir)
        print(
            f"open+verify+search {opened['rows']} rows: "
            f"{opened['open_verify_search']['median_ms']:.1f} ms; "
            f"file {opened['file_bytes_per_entry']} B/entry; "
            f"RSS {opened['rss_bytes_per_entry_after_search']} B/entry"
        )
    report = {
        "benchmark": "semcache.kernels hamming scan",
        "k": K,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "loadavg_1min": round(os.getloadavg()[0], 2),
        },
        "scan": results,
        "mirror_open": opened,
        "note": "medians over interleaved repeats; other processes share the 2 cores",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
