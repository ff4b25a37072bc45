#!/usr/bin/env python3
"""Where the time of bench_concurrency's load goes, per process: CPU inside and outside the
write lock, CPU spent waiting for it, and the batched-hit flushes of the gets.

The same load as ``scripts/bench_concurrency.py`` (each process puts ``--puts`` keys, then
gets ``--gets`` random keys of any process), semcache's exact tier only, with its write lock
and flush wrapped to time them (``time.thread_time`` for CPU, ``perf_counter`` for wall).
CPU times are the figures to compare on a shared machine: wall times move with the load.
``--lib diskcache`` runs diskcache's side for its CPU per operation (no lock figures).
Prints one line per phase; nothing is written.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CTX = mp.get_context("spawn")
_FIELDS = ("wait_cpu", "held_cpu", "held_wall", "flushes", "flush_rows", "flush_cpu")


def _value(worker: int, i: int) -> dict[str, Any]:  # bench_concurrency's value
    return {"worker": worker, "i": i, "text": f"answer {worker}-{i} " + "lorem ipsum " * 30}


def _instrument(stats: dict[str, float]) -> None:
    """Wrap the write lock's file lock and the writer's flush to add to ``stats``."""
    from semcache.cache import _writer
    from semcache.store.sqlite import locking

    acquire, release = locking._FlockFile.acquire, locking._FlockFile.release
    since: list[tuple[float, float]] = []

    def timed_acquire(self: Any, timeout: float) -> bool:
        cpu = time.thread_time()
        ok = bool(acquire(self, timeout))
        stats["wait_cpu"] += time.thread_time() - cpu
        if ok:
            since.append((time.thread_time(), time.perf_counter()))
        return ok

    def timed_release(self: Any) -> None:
        cpu, wall = since.pop()
        stats["held_cpu"] += time.thread_time() - cpu
        stats["held_wall"] += time.perf_counter() - wall
        release(self)

    flush = _writer.Writer.flush

    def timed_flush(self: Any, timeout: float | None) -> bool:
        rows, cpu = len(self._access), time.thread_time()
        ok = bool(flush(self, timeout))
        stats["flush_cpu"] += time.thread_time() - cpu
        if ok and rows:
            stats["flushes"] += 1
            stats["flush_rows"] += rows
        return ok

    locking._FlockFile.acquire = timed_acquire  # type: ignore[method-assign]
    locking._FlockFile.release = timed_release  # type: ignore[method-assign]
    _writer.Writer.flush = timed_flush  # type: ignore[method-assign]


def _worker(lib: str, path: str, worker: int, procs: int, puts: int, gets: int,
            barrier: Any, out: Any) -> None:
    stats = dict.fromkeys(_FIELDS, 0.0)
    if lib == "semcache":
        import semcache

        _instrument(stats)
        cache = semcache.open(path, hash_only=True, max_entries=None, ttl=None)
        put, get = cache.put, lambda key: cache.get(key, exact_only=True)
    else:
        import diskcache

        cache = diskcache.Cache(path)
        put, get = cache.set, cache.get
    rng = random.Random(worker)
    phases: dict[str, dict[str, float]] = {}
    barrier.wait()
    for phase in ("put", "get", "close"):
        if phase == "get":
            barrier.wait()
        before, cpu, wall = dict(stats), time.process_time(), time.perf_counter()
        if phase == "put":
            for i in range(puts):
                put(f"w{worker}-k{i}", _value(worker, i))
        elif phase == "get":
            for _ in range(gets):
                get(f"w{rng.randrange(procs)}-k{rng.randrange(puts)}")
        else:
            cache.close()
        phases[phase] = {k: stats[k] - before[k] for k in _FIELDS}
        phases[phase].update(cpu=time.process_time() - cpu, wall=time.perf_counter() - wall)
    out.put(phases)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--puts", type=int, default=2000, help="puts per process")
    ap.add_argument("--gets", type=int, default=10000, help="gets per process")
    ap.add_argument("--lib", choices=("semcache", "diskcache"), default="semcache")
    args = ap.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="semcache-prof-")
    try:
        path = os.path.join(workdir, "cache" if args.lib == "diskcache" else "cache.db")
        if args.lib == "semcache":
            import semcache

            semcache.open(path, hash_only=True, max_entries=None, ttl=None).close()
        barrier, out = CTX.Barrier(args.procs), CTX.Queue()
        ps = [CTX.Process(target=_worker, args=(args.lib, path, w, args.procs, args.puts,
                                                args.gets, barrier, out))
              for w in range(args.procs)]
        for p in ps:
            p.start()
        results = [out.get(timeout=1800) for _ in ps]
        for p in ps:
            p.join(60)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()[0]
    for phase, ops in (("put", args.puts), ("get", args.gets), ("close", 1)):
        total = {k: sum(r[phase][k] for r in results) for k in (*_FIELDS, "cpu")}
        wall = max(r[phase]["wall"] for r in results)
        n = args.procs * ops
        line = (f"{args.lib} {args.procs} proc {phase}: {n / wall:,.0f} ops/s (slowest process "
                f"{wall:.2f} s), CPU {total['cpu'] / n * 1e6:.1f} us/op")
        if args.lib == "semcache":
            line += (f", lock: waiting {total['wait_cpu'] / n * 1e6:.1f} us CPU/op, held "
                     f"{total['held_cpu'] / n * 1e6:.1f} us CPU / "
                     f"{total['held_wall'] / n * 1e6:.1f} us wall per op; flushes "
                     f"{total['flushes']:.0f} ({total['flush_rows']:.0f} rows, "
                     f"{total['flush_cpu'] * 1e3:.0f} ms CPU)")
        print(line + f"; load {load:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
