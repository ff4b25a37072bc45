#!/usr/bin/env python3
"""Several hosts on one PostgreSQL cache, simulated with processes (each with its own
connection pool), and writers killed with SIGKILL mid-write. Prints a JSON report.

``hosts``  ``--procs`` processes run a mixed load on one cache for ``--seconds``: puts,
           put_many, replacing puts of keys shared by every process, exact / semantic /
           get_many lookups, deletes, short-lived puts, purges, stats, in two namespaces.
           Every hit is checked as it is served: the response belongs to the entry's own
           prompt, the key asked for (exact), and the namespace asked in; no exception may
           escape. Then a fresh process finds every acknowledged put with its value (keys
           of one process only) and none of the acknowledged deletes, the shared counters
           equal what the processes counted, and ``semcache.verify`` finds nothing wrong.
``kill``   A writer (scripts/stress.py's: puts, put_many of 5, put+delete, gets, short-lived
           puts, purges) is killed with SIGKILL at a random instant, ``--kills`` times. After
           each kill: ``verify`` ok (counters equal the rows, every entry has its usage row
           and a vector of the pinned dimension), every acknowledged put there with its
           value, every acknowledged delete gone, each put_many all there or not at all,
           entries found by their vectors (the semantic tier).
``full``   both.

``--url`` is the server (``postgresql://...``); each run creates a fresh schema and drops it
at the end (``--keep`` keeps it). The processes talk to the server exactly as separate
hosts would: nothing is shared between them but the database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import stress  # noqa: E402  (scripts/stress.py: the writer, acks, values, vectors)

import semcache  # noqa: E402
from semcache.verify import verify  # noqa: E402

NAMESPACES = ("a", "b")
#: Keys every process writes (replacing each other's entries).
SHARED = [f"shared question number {i}" for i in range(24)]


def with_schema(url: str, schema: str) -> str:
    return url + ("&" if "?" in url else "?") + "schema=" + schema


def value(key: str, ns: str, worker: int) -> dict[str, Any]:
    return {"key": key, "ns": ns, "by": worker, "text": "answer " + "x" * (len(key) % 150)}


class Worker:
    """One simulated host: its own process, its own pool, its own view of what it did."""

    def __init__(self, url: str, worker: int, seed: int) -> None:
        self.cache = semcache.open(url, embedder="hashing", max_entries=None, ttl=None)
        self.w = worker
        self.rng = random.Random(seed * 1000 + worker)
        self.counts = {"puts": 0, "gets": 0, "hits": 0, "misses": 0, "deletes": 0,
                       "purges": 0, "stats": 0, "ops": 0, "wrong": 0}
        self.acked: list[tuple[str, str]] = []  # (namespace, key), this process's own keys
        self.deleted: list[tuple[str, str]] = []
        self.wrong: list[str] = []

    def check(self, hit: Any, ns: str, key: str | None) -> None:
        """A served hit must be the entry's own answer, in the namespace asked."""
        self.counts["gets"] += 1
        if hit is None:
            self.counts["misses"] += 1
            return
        self.counts["hits"] += 1
        r = hit.response
        ok = (isinstance(r, dict) and r.get("ns") == ns == hit.namespace
              and r.get("key") == hit.prompt and (key is None or r.get("key") == key))
        if not ok:
            self.counts["wrong"] += 1
            self.wrong.append(f"asked {key!r} in {ns}: got {r!r:.120} ({hit.kind})")

    def step(self, i: int) -> None:
        """One random operation (writes 40%, lookups 34%, deletes, purges, stats)."""
        ns = self.rng.choice(NAMESPACES)
        own = [k for n, k in self.acked[-200:] if n == ns]
        op = self.rng.random()
        if op < 0.40:
            self._write(i, ns, op)
        elif op < 0.74:
            self._lookup(i, ns, own, op)
        elif op < 0.84:
            key = f"w{self.w}-{i} to delete"
            eid = self.cache.put(key, value(key, ns, self.w), namespace=ns)
            self.counts["puts"] += 1
            if self.cache.delete(eid):
                self.counts["deletes"] += 1
                self.deleted.append((ns, key))
        elif op < 0.90:
            key = f"w{self.w}-{i} short lived"
            self.cache.put(key, value(key, ns, self.w), namespace=ns, ttl=0.05)
            self.counts["puts"] += 1
        elif op < 0.96:
            self.counts["purges"] += self.cache.purge_expired()
        else:
            self.cache.stats()
            self.counts["stats"] += 1
        self.counts["ops"] += 1

    def _write(self, i: int, ns: str, op: float) -> None:
        w = self.w
        if op < 0.25:
            key = f"w{w}-{i} what is the meaning of item {i}"
            self.cache.put(key, value(key, ns, w), namespace=ns)
            self.acked.append((ns, key))
            self.counts["puts"] += 1
        elif op < 0.30:
            keys = [f"w{w}-{i}-{j} batch entry" for j in range(8)]
            self.cache.put_many([(k, value(k, ns, w)) for k in keys], namespace=ns)
            self.acked += [(ns, k) for k in keys]
            self.counts["puts"] += len(keys)
        else:
            key = self.rng.choice(SHARED)  # every process replaces these
            self.cache.put(key, value(key, ns, w), namespace=ns)
            self.counts["puts"] += 1

    def _lookup(self, i: int, ns: str, own: list[str], op: float) -> None:
        rng = self.rng
        if op < 0.60:
            key = rng.choice(own) if own and rng.random() < 0.8 else rng.choice(SHARED)
            self.check(self.cache.get(key, namespace=ns), ns, key)
        elif op < 0.68:
            key = rng.choice(own) if own else f"nothing {i}"
            self.check(self.cache.get(key.replace("what is", "tell me"), namespace=ns), ns, None)
        else:
            keys = [rng.choice(own) if own else "none", rng.choice(SHARED), f"absent {i}"]
            for k, hit in zip(keys, self.cache.get_many(keys, namespace=ns), strict=True):
                self.check(hit, ns, k)


def worker_main(url: str, out_path: str, worker: int, seconds: float, seed: int) -> None:
    errors: list[str] = []
    try:
        host = Worker(url, worker, seed)
    except Exception as exc:  # noqa: BLE001 - reported, the parent fails the run
        Path(out_path).write_text(json.dumps({"errors": [f"open: {exc!r}"], "n_errors": 1}))
        return
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        try:
            host.step(i)
        except Exception as exc:  # noqa: BLE001 - every escape is a failure of the run
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
    try:
        host.cache.close()
    except Exception as exc:  # noqa: BLE001
        errors.append(f"close: {type(exc).__name__}: {exc}")
    Path(out_path).write_text(json.dumps({
        "counts": host.counts, "errors": errors[:50], "n_errors": len(errors),
        "wrong": host.wrong[:20], "acked": host.acked, "deleted": host.deleted}))


def check_main(url: str, acked_path: str, out_path: str) -> None:
    """A fresh process (a new host): what every other one acknowledged is there."""
    data = json.loads(Path(acked_path).read_text())
    with semcache.open(url) as cache:
        stats = cache.stats()
        missing = []
        for ns, key in data["acked"]:
            hit = cache.get(key, namespace=ns, exact_only=True)
            if hit is None or hit.response.get("key") != key or hit.response.get("ns") != ns:
                missing.append(f"{ns}/{key}")
        back = [f"{ns}/{k}" for ns, k in data["deleted"]
                if cache.get(k, namespace=ns, exact_only=True) is not None]
        rows = cache.count()
    Path(out_path).write_text(json.dumps({"stats": stats, "missing": missing[:20],
                                          "n_missing": len(missing), "resurrected": back[:20],
                                          "entries_rows": rows}))


def run_hosts(url: str, procs: int, seconds: float, workdir: str, seed: int) -> dict[str, Any]:
    semcache.open(url, embedder="hashing", max_entries=None, ttl=None).close()
    started = time.monotonic()
    workers = []
    for w in range(procs):
        out = os.path.join(workdir, f"hosts{procs}-w{w}.json")
        workers.append((out, subprocess.Popen(
            [sys.executable, __file__, "_worker", url, out, str(w), str(seconds), str(seed)])))
    exitcodes = [p.wait(timeout=seconds + 300) for _, p in workers]
    elapsed = time.monotonic() - started
    results = [json.loads(Path(o).read_text()) if os.path.exists(o) else None for o, _ in workers]
    total: dict[str, int] = {}
    acked: list[Any] = []
    deleted: list[Any] = []
    errors: list[str] = []
    wrong: list[str] = []
    for r in results:
        if r is None:
            continue
        errors += r["errors"]
        wrong += r.get("wrong", [])
        for k, v in r.get("counts", {}).items():
            total[k] = total.get(k, 0) + v
        acked += r.get("acked", [])
        deleted += r.get("deleted", [])
    acked_path = os.path.join(workdir, f"hosts{procs}-acked.json")
    Path(acked_path).write_text(json.dumps({"acked": acked, "deleted": deleted}))
    check_out = os.path.join(workdir, f"hosts{procs}-check.json")
    subprocess.run([sys.executable, __file__, "_check", url, acked_path, check_out],
                   check=True, timeout=600)
    check = json.loads(Path(check_out).read_text())
    stats = check["stats"]
    counters = {name: {"server": stats[name], "expected": total.get(name, 0)}
                for name in ("puts", "hits", "misses")}
    counters["entries"] = {"server": stats["entries"], "expected": check["entries_rows"]}
    report = {
        "processes": procs, "seconds": round(elapsed, 1), "operations": total.get("ops", 0),
        "ops_per_s": round(total.get("ops", 0) / max(elapsed, 1e-9)), "counts": total,
        "errors": errors[:10], "exceptions_escaped": sum(r["n_errors"] for r in results if r),
        "exitcodes": exitcodes, "wrong_answers": total.get("wrong", 0), "wrong": wrong[:10],
        "acked_puts": len(acked), "missing_after": check["n_missing"],
        "missing": check["missing"], "resurrected": len(check["resurrected"]),
        "counters": counters,
        "counters_ok": all(c["server"] == c["expected"] for c in counters.values()),
    }
    verified = verify(url)
    report["verify_ok"] = verified["ok"]
    report["verify_problems"] = verified["problems"]
    report["ok"] = (report["exceptions_escaped"] == 0 and exitcodes == [0] * procs
                    and report["wrong_answers"] == 0 and check["n_missing"] == 0
                    and not check["resurrected"] and report["counters_ok"]
                    and report["verify_ok"] and None not in results)
    return report


# -- kill -9 ------------------------------------------------------------------------------


def check_after_kill(url: str, puts: set[str], deletes: set[str], sample: int,
                     rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {"verify_problems": [], "lost": [], "resurrected": [],
                           "wrong_value": [], "torn_batches": [], "semantic_miss": 0}
    report = verify(url)
    out["verify_problems"] = report["problems"]
    with semcache.open(url, dim=stress.DIM) as cache:
        for key in puts:
            hit = cache.get(key, exact_only=True)
            if hit is None:
                out["lost"].append(key)
            elif hit.response != stress.value_for(key):
                out["wrong_value"].append(key)
        out["resurrected"] = [k for k in deletes if cache.get(k, exact_only=True) is not None]
        # put_many of 5 is one transaction: all of a batch's keys, or none.
        batches: dict[str, int] = {}
        for e in cache.entries(limit=None):
            if e.prompt and e.prompt.count("-") == 2:
                head = e.prompt.rsplit("-", 1)[0]
                batches[head] = batches.get(head, 0) + 1
        out["torn_batches"] = [h for h, n in batches.items() if n != 5]
        single = [k for k in puts if k.count("-") == 1]
        for key in rng.sample(single, min(sample, len(single))):
            hit = cache.get(stress.vector_for(key))
            if hit is None or hit.prompt != key:
                out["semantic_miss"] += 1
    return out


def run_kill(url: str, kills: int, workdir: str, seed: int, sample: int = 20) -> dict[str, Any]:
    rng = random.Random(seed)
    ack_path = os.path.join(workdir, "acks.log")
    totals = {"kills": 0, "verify_failures": 0, "lost": 0, "resurrected": 0, "wrong_values": 0,
              "torn_batches": 0, "semantic_misses": 0}
    failures: list[dict[str, Any]] = []
    started = time.monotonic()
    script = str(Path(__file__).resolve().parent / "stress.py")
    semcache.open(url, dim=stress.DIM, max_entries=None, ttl=None).close()
    for gen in range(kills):
        proc = subprocess.Popen([sys.executable, script, "_writer", url, ack_path, str(gen)],
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not stress._ready(ack_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            failures.append({"round": gen, "writer_died": proc.returncode, "stderr": err[-2000:]})
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        stress._mark_round(ack_path, gen)
        totals["kills"] += 1
        puts, deletes = stress.read_acks(ack_path)
        res = check_after_kill(url, puts, deletes, sample, rng)
        totals["verify_failures"] += bool(res["verify_problems"])
        for name, key in (("lost", "lost"), ("resurrected", "resurrected"),
                          ("wrong_values", "wrong_value"), ("torn_batches", "torn_batches")):
            totals[name] += len(res[key])
        totals["semantic_misses"] += res["semantic_miss"]
        if any(res[k] for k in ("verify_problems", "lost", "resurrected", "wrong_value",
                                "torn_batches", "semantic_miss")):
            res["round"] = gen
            res["lost"] = res["lost"][:10]
            failures.append(res)
    puts, deletes = stress.read_acks(ack_path)
    return {**totals, "acked_puts": len(puts), "acked_deletes": len(deletes),
            "seconds": round(time.monotonic() - started, 1), "failures": failures[:20],
            "ok": not failures}


def _drop(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    from semcache.store.postgres.conninfo import parse

    info = parse(url)
    with psycopg.connect(autocommit=True, **info.params) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        worker_main(argv[1], argv[2], int(argv[3]), float(argv[4]), int(argv[5]))
        return 0
    if argv and argv[0] == "_check":
        check_main(argv[1], argv[2], argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["hosts", "kill", "full"])
    ap.add_argument("--url", required=True, help="postgresql://... (a fresh schema is used)")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the schemas afterwards")
    ap.add_argument("--out", default="-", help="JSON report path ('-' = stdout only)")
    args = ap.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="semcache-pgstress-")
    schemas: list[str] = []

    def fresh() -> str:
        schemas.append("stress_" + uuid.uuid4().hex[:12])
        return with_schema(args.url, schemas[-1])

    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "loadavg_start": os.getloadavg()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        if args.command in ("hosts", "full"):
            report["hosts"] = run_hosts(fresh(), args.procs, args.seconds, workdir, args.seed)
        if args.command in ("kill", "full"):
            report["kill"] = run_kill(fresh(), args.kills, workdir, args.seed)
    finally:
        if not args.keep:
            for schema in schemas:
                _drop(args.url, schema)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["ok"] = all(report[k]["ok"] for k in ("hosts", "kill") if k in report)
    stress._write(report, args.out)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
