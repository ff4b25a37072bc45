"""Micro-benchmark of the Hamming scan (semcache.kernels) at 10k / 100k / 1M rows.

For each size it times, in its own blocks (never interleaved query by query: a big scan
evicts the other variant's data from the caches), alternated block by block in rotating
order, 3 runs:

* ``numpy pruned`` / ``faiss pruned``: the hot path, top-16 with the threshold cut of cosine
  0.9 and the partition filter (``semcache.kernels.scan.topk`` with each kernel);
* ``numpy full`` / ``faiss full``: exact top-16 over every row with the partition + expiry
  filters (what a threshold below ~0.85 uses);
* ``mirror search``: ``CodeMirror.search`` on an mmap'd mirror file (the kernel ``auto``
  picks), pruned;
* ``naive``: ``np.bitwise_count(codes ^ q).sum(1)``, the textbook numpy baseline.

Reports medians and the range of the 3 run medians in ms, with the load average at each
block. At the largest size it also measures the mirror: open (header only) + first search,
the full checksum pass it no longer does at open, file bytes and RSS per entry after a
search. Results: benchmarks/results/kernels.json.

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

from semcache.kernels import hamming
from semcache.kernels.hamming import NUMPY, Workspace, half_distance_cut
from semcache.kernels.scan import topk
from semcache.store.sqlite.mirror import EXPIRES_NEVER, CodeMirror

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "kernels.json"
K = 16
THRESHOLD = 0.9
RUNS = 3


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


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def time_blocks(variants: dict[str, Callable[[int], object]], queries: int, block: int,
                runs: int = RUNS) -> dict[str, dict[str, object]]:
    """Each variant answers ``block`` queries in a row (its own block), variants in rotating
    order; ``runs`` rounds. Per variant: median of all, median of each run, load per block."""
    names = list(variants)
    per_run: dict[str, list[list[float]]] = {n: [] for n in names}
    loads: dict[str, list[float]] = {n: [] for n in names}
    for fn in variants.values():  # warm-up: maps pages, fills caches, loads faiss
        for i in range(min(block, 20)):
            fn(i % queries)
    for r in range(runs):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            fn = variants[name]
            samples = []
            loads[name].append(_load())
            for j in range(block):
                t0 = time.perf_counter()
                fn((r * block + j) % queries)
                samples.append(time.perf_counter() - t0)
            per_run[name].append(samples)
    out: dict[str, dict[str, object]] = {}
    for name in names:
        meds = [float(np.median(s)) * 1e3 for s in per_run[name]]
        allv = np.concatenate([np.asarray(s) for s in per_run[name]]) * 1e3
        out[name] = {"median_ms": round(float(np.median(allv)), 4),
                     "p99_ms": round(float(np.percentile(allv, 99)), 4),
                     "run_medians_ms": [round(m, 4) for m in meds],
                     "range_ms": [round(min(meds), 4), round(max(meds), 4)],
                     "loadavg_1min": loads[name], "n": int(allv.size)}
    return out


def bench_size(n: int, block: int, tmpdir: str) -> dict[str, object]:
    rng = np.random.default_rng(n)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, (64, 32), dtype=np.uint8)
    for i, q in enumerate(queries):  # each query has a near neighbour at ~cosine 0.95
        row = codes[(i * 7919) % n]
        row[:] = q
        row[rng.integers(0, 32, 6)] ^= 1
    lo, hi = np.ascontiguousarray(codes[:, :16]), np.ascontiguousarray(codes[:, 16:])
    parts = np.zeros(n, dtype=np.int32)
    parts[::7] = 1  # another namespace
    exp = np.full(n, EXPIRES_NEVER, dtype=np.uint32)
    exp[::11] = 1000  # long expired
    path = os.path.join(tmpdir, f"bench-{n}.db-codes")
    mirror = CodeMirror.create(path, "bench", (1, 1), np.arange(1, n + 1), parts, exp, codes)
    now = int(time.time())
    cut = (half_distance_cut(THRESHOLD), half_distance_cut(THRESHOLD, 256))
    variants: dict[str, Callable[[int], object]] = {}
    kernels = [NUMPY]
    try:
        kernels.append(hamming.load_faiss_kernel())  # type: ignore[arg-type]
    except ImportError:
        print("faiss not installed: numpy kernel only")
    for kern in kernels:
        ws = Workspace(kern.chunk_rows)

        def pruned(i: int, kern=kern, ws=ws) -> object:
            return topk(lo, hi, queries[i], K, half_cut=cut[0], full_cut=cut[1], partition=0,
                        partitions=parts, kernel=kern, workspace=ws)

        def full(i: int, kern=kern, ws=ws) -> object:
            return topk(lo, hi, queries[i], K, partition=0, partitions=parts, expires=exp,
                        now_u32=now, kernel=kern, workspace=ws)

        variants[f"{kern.name} pruned"] = pruned
        variants[f"{kern.name} full"] = full
    variants["mirror search"] = lambda i: mirror.search(queries[i], K, partition=0, now=now,
                                                        min_cosine=THRESHOLD)
    words = codes.view("<u8")
    variants["naive"] = lambda i: np.bitwise_count(words ^ queries[i].view("<u8")).sum(1)
    result: dict[str, object] = {"rows": n, "kernel_for_mirror": hamming.active_kernel().name}
    result.update(time_blocks(variants, len(queries), block))
    mirror.close()
    return result


def bench_open(n: int, tmpdir: str, repeats: int = 9) -> dict[str, object]:
    """Open (header checks only) + first search; the full checksum pass; file and RSS."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    path = os.path.join(tmpdir, "open.db-codes")
    CodeMirror.create(path, "bench", (1, 1), np.arange(1, n + 1), np.zeros(n, dtype=np.int32),
                      np.full(n, EXPIRES_NEVER, dtype=np.uint32), codes, capacity=n).close()
    q = codes[0]
    opened, verified = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m = CodeMirror.open(path, "bench")
        m.verify_step()  # what the index does before the first search
        m.search(q, K, partition=0, now=time.time(), min_cosine=THRESHOLD)
        opened.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        m.verify_all()
        verified.append(time.perf_counter() - t0)
        m.close()
    rss0 = _rss_bytes()
    m = CodeMirror.open(path, "bench")
    for _ in range(3):
        m.search(q, K, partition=0, now=time.time(), min_cosine=THRESHOLD)
    rss1 = _rss_bytes()
    m.close()
    return {
        "rows": n,
        "open_plus_first_search_ms": round(float(np.median(opened)) * 1e3, 3),
        "full_checksum_pass_ms": round(float(np.median(verified)) * 1e3, 3),
        "file_bytes_per_entry": round(os.path.getsize(path) / n, 3),
        "rss_bytes_per_entry_after_pruned_search": round((rss1 - rss0) / n, 2),
        "loadavg_1min": _load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    results = []
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmpdir:
        for n in args.sizes:
            block = max(10, int((0.2 if args.quick else 1.0) * min(400, 4e7 / n)))
            res = bench_size(n, block, tmpdir)
            results.append(res)
            line = "  ".join(f"{k} {v['median_ms']:.3f} [{v['range_ms'][0]:.3f}-"  # type: ignore[index]
                             f"{v['range_ms'][1]:.3f}]" for k, v in res.items()
                             if isinstance(v, dict))
            print(f"{n:>9} rows  {line}  (load {_load()})", flush=True)
        opened = bench_open(max(args.sizes), tmpdir)
        print(f"open + first search {opened['rows']} rows: "
              f"{opened['open_plus_first_search_ms']} ms (the full checksum pass it skips: "
              f"{opened['full_checksum_pass_ms']} ms); file {opened['file_bytes_per_entry']} "
              f"B/entry; RSS {opened['rss_bytes_per_entry_after_pruned_search']} B/entry")
    report = {
        "benchmark": "semcache.kernels hamming scan",
        "k": K, "threshold_for_cut": THRESHOLD, "runs": RUNS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "loadavg_start": load_start,
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "scan": results,
        "mirror_open": opened,
        "note": "each variant timed in its own blocks, blocks alternated; medians over all "
                "samples, range = min..max of the 3 run medians",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
