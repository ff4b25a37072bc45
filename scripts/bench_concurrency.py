#!/usr/bin/env python3
"""Throughput of puts and gets with 1, 2, 4 and 8 processes on one file, semcache beside
diskcache on the same load.

Each process writes its own ``--puts`` keys (a ~400-byte JSON value each), then reads
``--gets`` random keys written by any process (all present: every get is a hit). Beside
diskcache runs the bare-SQL WAL floor (``_FloorClient``: one key-value table, a put is one
INSERT in its own ``BEGIN IMMEDIATE`` transaction), the least any SQLite library pays. The
processes start together on a barrier; throughput is all operations of a phase divided by
the wall time of the slowest process in it. Each library runs in its own block on fresh
files, the three take turns (the order rotates from run to run), ``--runs`` runs per
point (3): medians, ranges and the load average at each block are reported. semcache runs its exact tier (``hash_only``:
no embedding, the same key-value work diskcache does); both use SQLite in WAL mode with
synchronous=NORMAL. Results go to benchmarks/results/concurrency.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CTX = mp.get_context("spawn")


def _value(worker: int, i: int) -> dict[str, Any]:
    return {"worker": worker, "i": i, "text": f"answer {worker}-{i} " + "lorem ipsum " * 30}


class _SemcacheClient:
    def __init__(self, path: str) -> None:
        import semcache

        self.c = semcache.open(path, hash_only=True, max_entries=None, ttl=None)

    def put(self, key: str, value: Any) -> None:
        self.c.put(key, value)

    def get(self, key: str) -> Any:
        hit = self.c.get(key, exact_only=True)
        return None if hit is None else hit.response

    def close(self) -> None:
        self.c.close()


class _DiskcacheClient:
    def __init__(self, path: str) -> None:
        import diskcache

        self.c = diskcache.Cache(path)

    def put(self, key: str, value: Any) -> None:
        self.c.set(key, value)

    def get(self, key: str) -> Any:
        return self.c.get(key)

    def close(self) -> None:
        self.c.close()


class _FloorClient:
    """The bare-SQL WAL floor: what any library on SQLite pays at least for the same load.
    One ``key TEXT PRIMARY KEY, value TEXT`` table, the value as JSON text; a put is
    ``BEGIN IMMEDIATE`` + one INSERT + COMMIT (durable like the others: WAL,
    synchronous=NORMAL, SQLite's own busy handler), a get one indexed SELECT."""

    def __init__(self, path: str) -> None:
        import apsw

        self.c = apsw.Connection(path)
        self.c.set_busy_timeout(60_000)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-16384",
                       "mmap_size=268435456"):
            self.c.execute(f"PRAGMA {pragma}").fetchall()
        self.c.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT)")

    def put(self, key: str, value: Any) -> None:
        self.c.execute("BEGIN IMMEDIATE")
        self.c.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(value)))
        self.c.execute("COMMIT")

    def get(self, key: str) -> Any:
        rows = self.c.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchall()
        return rows[0][0] if rows else None

    def close(self) -> None:
        self.c.close()


CLIENTS: dict[str, Any] = {"semcache": _SemcacheClient, "diskcache": _DiskcacheClient,
                           "sqlite floor": _FloorClient}


def _worker(lib: str, path: str, worker: int, procs: int, puts: int, gets: int,
            barrier: Any, out: Any) -> None:
    client = CLIENTS[lib](path)
    rng = random.Random(worker)
    barrier.wait()
    t0 = time.perf_counter()
    for i in range(puts):
        client.put(f"w{worker}-k{i}", _value(worker, i))
    t1 = time.perf_counter()
    barrier.wait()  # every key is written before anyone reads
    t2 = time.perf_counter()
    misses = 0
    for _ in range(gets):
        w, i = rng.randrange(procs), rng.randrange(puts)
        if client.get(f"w{w}-k{i}") is None:
            misses += 1
    t3 = time.perf_counter()
    client.close()
    out.put({"worker": worker, "put_s": t1 - t0, "get_s": t3 - t2, "misses": misses})


def run(lib: str, procs: int, puts: int, gets: int, workdir: str) -> dict[str, Any]:
    path = os.path.join(workdir, f"{lib.replace(' ', '-')}-{procs}")
    if lib != "diskcache":
        path += ".db"
    CLIENTS[lib](path).close()  # created (and migrated) before the clock starts
    barrier = CTX.Barrier(procs)
    out = CTX.Queue()
    ps = [CTX.Process(target=_worker, args=(lib, path, w, procs, puts, gets, barrier, out))
          for w in range(procs)]
    for p in ps:
        p.start()
    results = [out.get(timeout=1800) for _ in ps]
    for p in ps:
        p.join(60)
    if any(p.exitcode != 0 for p in ps):
        raise RuntimeError(f"{lib} worker failed: {[p.exitcode for p in ps]}")
    put_wall = max(r["put_s"] for r in results)
    get_wall = max(r["get_s"] for r in results)
    return {
        "library": lib, "processes": procs,
        "puts": procs * puts, "gets": procs * gets,
        "put_ops_per_s": round(procs * puts / put_wall),
        "get_ops_per_s": round(procs * gets / get_wall),
        "misses": sum(r["misses"] for r in results),
    }


def _summary(values: list[float], loads: list[float]) -> dict[str, Any]:
    return {"median": round(float(statistics.median(values))), "runs": [round(v) for v in values],
            "range": [round(min(values)), round(max(values))],
            "loadavg_1min": {"min": min(loads), "max": max(loads),
                             "mean": round(statistics.fmean(loads), 2)}}


def measure(procs: int, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Both libraries at one process count: ``--runs`` runs, each library in its own block
    (fresh files), the order alternating from run to run."""
    libs = list(CLIENTS)
    raw: dict[str, dict[str, list[float]]] = {
        lib: {"put": [], "get": [], "load": [], "misses": []} for lib in libs}
    for run_no in range(args.runs):
        for lib in libs[run_no % len(libs):] + libs[:run_no % len(libs)]:  # rotated
            shutil.rmtree(workdir, ignore_errors=True)
            os.makedirs(workdir)
            raw[lib]["load"].append(round(os.getloadavg()[0], 2))
            r = run(lib, procs, args.puts, args.gets, workdir)
            raw[lib]["put"].append(r["put_ops_per_s"])
            raw[lib]["get"].append(r["get_ops_per_s"])
            raw[lib]["misses"].append(r["misses"])
    point: dict[str, Any] = {"processes": procs}
    for lib in libs:
        rec = raw[lib]
        point[lib] = {"put_ops_per_s": _summary(rec["put"], rec["load"]),
                      "get_ops_per_s": _summary(rec["get"], rec["load"]),
                      "misses": int(sum(rec["misses"]))}
    for op in ("put", "get"):
        for other, suffix in (("diskcache", ""), ("sqlite floor", "_floor")):
            mine, theirs = raw["semcache"][op], raw[other][op]
            per_run = [a / b for a, b in zip(mine, theirs, strict=True)]
            point[f"{op}_ratio{suffix}"] = {
                "median": round(statistics.median(mine) / statistics.median(theirs), 2),
                "range": [round(min(per_run), 2), round(max(per_run), 2)]}
    return point


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 23 item 3 at 8 processes: puts >= 0.7x diskcache, or >= 0.9x the bare-SQL
    WAL floor of the same run when that floor is below diskcache; gets >= 1.0x diskcache."""
    row = next((r for r in rows if r["processes"] == 8), None)
    if row is None:
        return []
    floor = row["sqlite floor"]["put_ops_per_s"]["median"]
    dc = row["diskcache"]["put_ops_per_s"]["median"]
    by_floor = floor < dc
    put = row["put_ratio_floor"] if by_floor else row["put_ratio"]
    target = 0.9 if by_floor else 0.7
    get = row["get_ratio"]
    return [
        {"goal": "8 processes, puts / " + ("the bare-SQL WAL floor (below diskcache)"
                                            if by_floor else "diskcache"),
         "target": target, "measured": put["median"], "range": put["range"], "unit": "x",
         "at_least": True, "met": put["median"] >= target},
        {"goal": "8 processes, gets / diskcache", "target": 1.0, "measured": get["median"],
         "range": get["range"], "unit": "x", "at_least": True, "met": get["median"] >= 1.0},
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--puts", type=int, default=2000, help="puts per process")
    ap.add_argument("--gets", type=int, default=10000, help="gets per process")
    ap.add_argument("--runs", type=int, default=3, help="runs per point (median and range)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "concurrency.json"))
    args = ap.parse_args(argv)
    try:
        import diskcache
    except ImportError:
        print("diskcache is needed for the comparison: pip install diskcache", file=sys.stderr)
        return 2
    import apsw

    import semcache

    workdir = tempfile.mkdtemp(prefix="semcache-conc-")
    load_start = [round(x, 2) for x in os.getloadavg()]
    rows: list[dict[str, Any]] = []
    try:
        for procs in args.procs:
            point = measure(procs, args, workdir)
            rows.append(point)
            s, d, f = point["semcache"], point["diskcache"], point["sqlite floor"]
            print(f"{procs} proc: semcache put {s['put_ops_per_s']['median']}/s "
                  f"get {s['get_ops_per_s']['median']}/s | diskcache put "
                  f"{d['put_ops_per_s']['median']}/s get {d['get_ops_per_s']['median']}/s | "
                  f"floor put {f['put_ops_per_s']['median']}/s "
                  f"get {f['get_ops_per_s']['median']}/s | "
                  f"ratio put {point['put_ratio']['median']} {point['put_ratio']['range']} "
                  f"get {point['get_ratio']['median']} {point['get_ratio']['range']} | load "
                  f"{s['put_ops_per_s']['loadavg_1min']['mean']}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "what": "ops/s over all processes on one file; ratio = semcache / diskcache "
                "(ratio_floor: / the bare-SQL WAL floor); median of the runs, range = "
                "lowest and highest per-run value",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "puts_per_process": args.puts, "gets_per_process": args.gets, "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "sqlite": apsw.sqlite_lib_version(),
                    "loadavg_start": load_start,
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"semcache": semcache.__version__, "diskcache": diskcache.__version__},
        "rows": rows,
        "goals": goals(rows),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
