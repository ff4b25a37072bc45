"""What max_bytes costs on the put path: a single put and put_many, before and after.

Runs each configuration in a fresh interpreter, alternating them round by round so that
machine noise (other processes) spreads over all of them, and prints the median time per
put of every configuration and its ratio to the first. ``--trees BEFORE AFTER`` names two
source trees (e.g. an unpacked ``git archive`` of the commit before max_bytes, and this
one); the SQLite engine, exact tier (hash_only: the put path without an embedder).

    python scripts/bench_max_bytes.py --trees /tmp/base . --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time, tempfile, os
import semcache
mode, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kw = {"max_entries": None}
if mode == "bound":
    kw["max_bytes"] = 1 << 40          # enforced, never reached: the check alone
elif mode == "evicting":
    kw["max_bytes"] = 400 * 1024       # reached: every write evicts (steady state)
elif mode == "entries":
    kw["max_entries"] = 1500           # the max_entries bound, evicting, for comparison
with tempfile.TemporaryDirectory() as d:
    with semcache.open(os.path.join(d, "b.db"), hash_only=True, ttl=None, **kw) as c:
        resp = "answer " * 30
        for i in range(3000):  # warm up; fills the bound in the evicting modes
            c.put(f"warm {i}", resp)
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            c.put(f"single {i}", resp)
        single = (time.perf_counter() - t) / n
        single_cpu = (time.process_time() - cpu) / n
        t, cpu = time.perf_counter(), time.process_time()
        for b in range(n // batch):
            c.put_many([(f"many {b} {j}", resp) for j in range(batch)])
        many = (time.perf_counter() - t) / (n // batch * batch)
        many_cpu = (time.process_time() - cpu) / (n // batch * batch)
print(json.dumps({"single_us": single * 1e6, "many_us": many * 1e6,
                  "single_cpu_us": single_cpu * 1e6, "many_cpu_us": many_cpu * 1e6}))
"""


def run(tree: str, mode: str, n: int, batch: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(n), str(batch)], env=env,
                         capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    return dict(json.loads(out.stdout))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", nargs=2, metavar=("BEFORE", "AFTER"), required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--quick", action="store_true",
                    help="only before / after (max_bytes=None) / after (max_bytes not reached)")
    args = ap.parse_args()
    before, after = args.trees
    configs = [("before", before, "none"), ("after, max_bytes=None", after, "none"),
               ("after, max_bytes not reached", after, "bound"),
               ("after, max_bytes evicting", after, "evicting"),
               ("before, max_entries evicting", before, "entries"),
               ("after, max_entries evicting", after, "entries")]
    if args.quick:
        configs = configs[:3]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in configs}
    for r in range(args.rounds):
        order = configs if r % 2 == 0 else configs[::-1]  # alternate the order too
        for name, tree, mode in order:
            results[name].append(run(tree, mode, args.n, args.batch))
    kinds = ("single_us", "many_us", "single_cpu_us", "many_cpu_us")
    base = {k: statistics.median(x[k] for x in results["before"]) for k in kinds}
    print(f"medians of {args.rounds} alternated runs (min-max in brackets); wall time")
    print(f"{'configuration':30} {'put us':>22} {'ratio':>6} {'put_many us/entry':>22} "
          f"{'ratio':>6}")
    for name, _, _ in configs:
        runs = results[name]
        med = {k: statistics.median(x[k] for x in runs) for k in ("single_us", "many_us")}
        span = {k: f"[{min(x[k] for x in runs):.0f}-{max(x[k] for x in runs):.0f}]"
                for k in ("single_us", "many_us")}
        print(f"{name:30} {med['single_us']:8.1f} {span['single_us']:>13} "
              f"{med['single_us'] / base['single_us']:6.3f} {med['many_us']:8.2f} "
              f"{span['many_us']:>13} {med['many_us'] / base['many_us']:6.3f}")
    print("CPU time of the benchmark process (less sensitive to other processes' load)")
    for name, _, _ in configs:
        med = {k: statistics.median(x[k] for x in results[name]) for k in kinds}
        print(f"{name:30} put {med['single_cpu_us']:8.1f} us "
              f"{med['single_cpu_us'] / base['single_cpu_us']:6.3f}   put_many "
              f"{med['many_cpu_us']:7.2f} us/entry {med['many_cpu_us'] / base['many_cpu_us']:6.3f}")


if __name__ == "__main__":
    main()
