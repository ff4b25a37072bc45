#!/usr/bin/env python3
"""Stress and fault runs for semcache, with real processes and real files.

Subcommands (all print a JSON report; ``--out`` also writes it to a file):

``kill``     A writer process doing puts, put_many, deletes, gets (which batch hit updates)
             and purges is killed with SIGKILL at a random instant, ``--kills`` times. After
             every kill this process opens the file afresh and checks: it opens, PRAGMA
             integrity_check is ok, the vec0 table agrees with ``entries``, the code mirror
             agrees with SQLite or is rebuilt by the next semantic search (and then agrees),
             every put the writer acknowledged is there with its value (a put is acknowledged
             through an append-only file only AFTER ``put()`` returned), and every
             acknowledged delete stays deleted.
``mixed``    ``--procs`` processes run a mixed load (puts, exact / semantic / vector gets,
             get_many, deletes, purges, stats) on one file for ``--seconds``; no exception may
             escape, "database is locked" must never reach a caller, a fresh process then
             finds every acknowledged put, and the shared counters add up.
``corrupt``  ``--trials`` random corruptions (truncation, overwritten ranges, zeroed pages)
             of a populated file; every public call must either work or raise a
             ``semcache.CacheFileError`` naming the path, never a raw driver error.
``full``     all three (the defaults are the full run) and writes
             benchmarks/results/stress.json.

Nothing read back is unpickled: acks and reports are JSON / plain text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import semcache  # noqa: E402
from semcache.verify import verify  # noqa: E402

DIM = 16


def vector_for(key: str) -> np.ndarray:
    """A deterministic random vector per key (so any process can recompute it)."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def value_for(key: str) -> dict[str, Any]:
    return {"key": key, "text": f"answer for {key} " + "x" * (len(key) * 7 % 200)}


class Acks:
    """Append-only ack log: one line per completed operation, written with O_APPEND.

    A line is written only after the operation returned, so a process killed at any
    instant leaves only acks of operations that completed (a torn last line is ignored).
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, *lines: str) -> None:
        os.write(self._fd, "".join(line + "\n" for line in lines).encode())

    def close(self) -> None:
        os.close(self._fd)


def read_acks(path: str) -> tuple[set[str], set[str]]:
    """(acknowledged put keys, acknowledged deleted keys) from an ack log."""
    puts: set[str] = set()
    deletes: set[str] = set()
    try:
        data = Path(path).read_text()
    except FileNotFoundError:
        return puts, deletes
    for line in data.split("\n")[:-1]:  # the last piece has no newline: maybe torn
        kind, _, key = line.partition(" ")
        if kind == "P":
            puts.add(key)
        elif kind == "D":
            deletes.add(key)
    return puts, deletes


# ----------------------------------------------------------------------- kill loop


def writer_main(path: str, ack_path: str, gen: int) -> None:
    """The process that gets killed. Runs until killed."""
    acks = Acks(ack_path)
    rng = random.Random(gen)
    cache = semcache.open(path, dim=DIM, max_entries=None, ttl=None)
    acks.write("R ready")
    own: list[str] = []
    i = 0
    while True:
        i += 1
        op = rng.random()
        if op < 0.55:
            key = f"k{gen}-{i}"
            cache.put(key, value_for(key), vector=vector_for(key))
            acks.write(f"P {key}")
            own.append(key)
        elif op < 0.65:
            keys = [f"k{gen}-{i}-{j}" for j in range(5)]
            cache.put_many([(k, value_for(k)) for k in keys], vector=vector_for(keys[0]))
            acks.write(*(f"P {k}" for k in keys))
        elif op < 0.75:
            key = f"x{gen}-{i}"
            eid = cache.put(key, value_for(key), vector=vector_for(key))
            cache.delete(eid)
            acks.write(f"D {key}")
        elif op < 0.9 and own:
            key = rng.choice(own)
            cache.get(key, exact_only=True)
            cache.get(vector_for(key))
        elif op < 0.95:
            key = f"t{gen}-{i}"
            cache.put(key, value_for(key), vector=vector_for(key), ttl=0.2)
        else:
            cache.purge_expired()


def check_file(path: str, puts: set[str], deletes: set[str], sample: int,
               rng: random.Random) -> dict[str, Any]:
    """Everything checked after a kill. Returns counts of each kind of failure."""
    out: dict[str, Any] = {"open_error": None, "integrity_ok": False, "vec0_ok": False,
                           "mirror_agreed_at_once": False, "mirror_ok_after_search": False,
                           "lost": [], "resurrected": [], "wrong_value": [], "semantic_miss": 0}
    report = verify(path)
    out["integrity_ok"] = report["database"].get("integrity") == "ok"
    out["vec0_ok"] = bool(report["vec0"].get("agrees"))
    out["mirror_agreed_at_once"] = bool(report["mirror"].get("agrees"))
    if not report["ok"]:
        out["verify_problems"] = report["problems"]
    try:
        cache = semcache.open(path, dim=DIM)
    except semcache.SemcacheError as exc:
        out["open_error"] = f"{type(exc).__name__}: {exc}"
        return out
    try:
        for key in puts:
            hit = cache.get(key, exact_only=True)
            if hit is None:
                out["lost"].append(key)
            elif hit.response != value_for(key):
                out["wrong_value"].append(key)
        for key in deletes:
            if cache.get(key, exact_only=True) is not None:
                out["resurrected"].append(key)
        single = [k for k in puts if k.count("-") == 1]
        for key in rng.sample(single, min(sample, len(single))):
            hit = cache.get(vector_for(key))  # the mirror is rebuilt here if it is behind
            if hit is None or hit.prompt != key:
                out["semantic_miss"] += 1
    finally:
        cache.close()
    after = verify(path)
    out["mirror_ok_after_search"] = bool(after["mirror"].get("agrees")) or not puts
    return out


def run_kill(kills: int, workdir: str, seed: int, sample: int = 20,
             early_fraction: float = 0.1, max_delay: float = 0.4) -> dict[str, Any]:
    """``kills`` rounds of: start the writer, SIGKILL it at a random instant, check the file."""
    rng = random.Random(seed)
    path = os.path.join(workdir, "kill.db")
    ack_path = os.path.join(workdir, "acks.log")
    totals = {"kills": 0, "killed_before_ready": 0, "open_errors": 0, "integrity_failures": 0,
              "vec0_disagreements": 0, "mirror_stale_after_kill": 0,
              "mirror_bad_after_search": 0, "lost": 0, "resurrected": 0, "wrong_values": 0,
              "semantic_misses": 0}
    failures: list[dict[str, Any]] = []
    started = time.monotonic()
    for gen in range(kills):
        proc = subprocess.Popen([sys.executable, __file__, "_writer", path, ack_path, str(gen)],
                                stderr=subprocess.PIPE)
        early = rng.random() < early_fraction
        if early:
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            deadline = time.monotonic() + 60
            while not _ready(ack_path) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, max_delay))
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            failures.append({"round": gen, "writer_died": proc.returncode, "stderr": err[-2000:]})
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        _mark_round(ack_path, gen)
        totals["kills"] += 1
        puts, deletes = read_acks(ack_path)
        if early and f"R {gen}" not in _rounds_ready(ack_path):
            totals["killed_before_ready"] += 1
        if not os.path.exists(path):
            continue  # killed before the file was even created
        res = check_file(path, puts, deletes, sample, rng)
        totals["open_errors"] += res["open_error"] is not None
        totals["integrity_failures"] += not res["integrity_ok"]
        totals["vec0_disagreements"] += not res["vec0_ok"] and res["open_error"] is None
        totals["mirror_stale_after_kill"] += not res["mirror_agreed_at_once"]
        totals["mirror_bad_after_search"] += not res["mirror_ok_after_search"]
        totals["lost"] += len(res["lost"])
        totals["resurrected"] += len(res["resurrected"])
        totals["wrong_values"] += len(res["wrong_value"])
        totals["semantic_misses"] += res["semantic_miss"]
        bad = (res["open_error"] or not res["integrity_ok"] or not res["vec0_ok"]
               or not res["mirror_ok_after_search"] or res["lost"] or res["resurrected"]
               or res["wrong_value"] or res["semantic_miss"])
        if bad:
            res["round"] = gen
            res["lost"] = res["lost"][:10]
            failures.append(res)
    puts, deletes = read_acks(ack_path)
    with semcache.open(path, dim=DIM) as cache:
        entries = cache.stats()["entries"]
    return {
        **totals,
        "acked_puts": len(puts), "acked_deletes": len(deletes), "entries_at_end": entries,
        "seconds": round(time.monotonic() - started, 1), "failures": failures[:20],
        "ok": not failures,
    }


def _ready(ack_path: str) -> bool:
    """Whether the current round's writer has reported ready (after the last round mark)."""
    try:
        with open(ack_path, "rb") as f:
            f.seek(max(0, os.path.getsize(ack_path) - 65536))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return False
    return "R ready\n" in tail.rsplit("\nE ", 1)[-1]


def _mark_round(ack_path: str, gen: int) -> None:
    """Separate rounds in the log, so 'ready' of the next writer is told from the last."""
    acks = Acks(ack_path)
    acks.write(f"E {gen}")
    acks.close()


def _rounds_ready(ack_path: str) -> set[str]:
    """'R <gen>' for each round whose writer reported ready before being killed."""
    ready: set[str] = set()
    seen_ready = False
    for line in Path(ack_path).read_text().split("\n"):
        if line == "R ready":
            seen_ready = True
        elif line.startswith("E "):
            if seen_ready:
                ready.add("R " + line[2:])
            seen_ready = False
    return ready


# ----------------------------------------------------------------------- mixed load


def worker_main(path: str, out_path: str, worker: int, seconds: float, seed: int) -> None:
    """One process of the mixed load; writes a JSON summary of what it did and saw."""
    rng = random.Random(seed * 1000 + worker)
    counts = {"puts": 0, "gets": 0, "hits": 0, "misses": 0, "deletes": 0, "purges": 0,
              "stats": 0, "ops": 0}
    errors: list[str] = []
    acked: list[str] = []
    deleted: list[str] = []
    own: list[str] = []
    try:
        cache = semcache.open(path, embedder="hashing", max_entries=None, ttl=None)
    except Exception as exc:  # noqa: BLE001 - reported, the parent fails the run
        errors.append(f"open: {type(exc).__name__}: {exc}")
        Path(out_path).write_text(json.dumps({"counts": counts, "errors": errors,
                                              "acked": [], "deleted": []}))
        return
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        op = rng.random()
        try:
            if op < 0.30:
                key = f"w{worker}-{i} what is the meaning of item {i}"
                cache.put(key, value_for(key))
                acked.append(key)
                own.append(key)
                counts["puts"] += 1
            elif op < 0.35:
                keys = [f"w{worker}-{i}-{j} batch" for j in range(4)]
                cache.put_many([(k, value_for(k)) for k in keys])
                acked.extend(keys)
                counts["puts"] += len(keys)
            elif op < 0.60:
                key = rng.choice(own) if own and rng.random() < 0.7 else f"nothing {i}"
                hit = cache.get(key)
                counts["gets"] += 1
                counts["hits" if hit is not None else "misses"] += 1
            elif op < 0.70:
                key = rng.choice(own) if own else f"nothing {i}"
                hit = cache.get(key.replace("what is", "tell me"))  # semantic tier
                counts["gets"] += 1
                counts["hits" if hit is not None else "misses"] += 1
            elif op < 0.78:
                keys = [rng.choice(own) if own else "none"] + [f"absent {i}"]
                hits = cache.get_many(keys)
                counts["gets"] += len(hits)
                n = sum(h is not None for h in hits)
                counts["hits"] += n
                counts["misses"] += len(hits) - n
            elif op < 0.86:
                key = f"w{worker}-{i} to delete"
                eid = cache.put(key, value_for(key))
                counts["puts"] += 1
                if cache.delete(eid):
                    counts["deletes"] += 1
                    deleted.append(key)
            elif op < 0.92:
                key = f"w{worker}-{i} short lived"
                cache.put(key, value_for(key), ttl=0.05)
                counts["puts"] += 1
            elif op < 0.97:
                counts["purges"] += cache.purge_expired()
            else:
                cache.stats()
                counts["stats"] += 1
            counts["ops"] += 1
        except Exception as exc:  # noqa: BLE001 - every escape is a failure of the run
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
    try:
        cache.close()
    except Exception as exc:  # noqa: BLE001
        errors.append(f"close: {type(exc).__name__}: {exc}")
    Path(out_path).write_text(json.dumps({"counts": counts, "errors": errors[:50],
                                          "n_errors": len(errors), "acked": acked,
                                          "deleted": deleted}))


def check_main(path: str, acked_path: str, out_path: str) -> None:
    """A fresh process: every acknowledged put readable, deleted ones gone; counters."""
    data = json.loads(Path(acked_path).read_text())
    with semcache.open(path, embedder="hashing") as cache:
        before = cache.stats()
        missing = [k for k in data["acked"]
                   if (h := cache.get(k, exact_only=True)) is None or h.response != value_for(k)]
        present = [k for k in data["deleted"] if cache.get(k, exact_only=True) is not None]
        rows = cache.count()
    Path(out_path).write_text(json.dumps({"stats": before, "missing": missing[:20],
                                          "n_missing": len(missing), "resurrected": present[:20],
                                          "entries_rows": rows}))


def run_mixed(procs: int, seconds: float, workdir: str, seed: int) -> dict[str, Any]:
    path = os.path.join(workdir, f"mixed{procs}.db")
    semcache.open(path, embedder="hashing", max_entries=None, ttl=None).close()
    started = time.monotonic()
    workers = []
    for w in range(procs):
        out = os.path.join(workdir, f"mixed{procs}-w{w}.json")
        workers.append((out, subprocess.Popen(
            [sys.executable, __file__, "_worker", path, out, str(w), str(seconds), str(seed)])))
    exitcodes = [p.wait(timeout=seconds + 300) for _, p in workers]
    elapsed = time.monotonic() - started
    results = [json.loads(Path(out).read_text()) if os.path.exists(out) else None
               for out, _ in workers]
    errors = [e for r in results if r for e in r["errors"]]
    n_errors = sum(r["n_errors"] for r in results if r)
    total: dict[str, int] = {}
    acked: list[str] = []
    deleted: list[str] = []
    for r in results:
        if r is None:
            continue
        for k, v in r["counts"].items():
            total[k] = total.get(k, 0) + v
        acked += r["acked"]
        deleted += r["deleted"]
    acked_path = os.path.join(workdir, f"mixed{procs}-acked.json")
    Path(acked_path).write_text(json.dumps({"acked": acked, "deleted": deleted}))
    check_out = os.path.join(workdir, f"mixed{procs}-check.json")
    subprocess.run([sys.executable, __file__, "_check", path, acked_path, check_out],
                   check=True, timeout=600)
    check = json.loads(Path(check_out).read_text())
    stats = check["stats"]
    counters = {
        "puts": (stats["puts"], total.get("puts", 0)),
        "hits": (stats["hits"], total.get("hits", 0)),
        "misses": (stats["misses"], total.get("misses", 0)),
        "entries": (stats["entries"], check["entries_rows"]),
        "entries_balance": (stats["entries"], stats["puts"] - total.get("deletes", 0)
                            - stats["expirations"] - stats["evictions"]),
    }
    counters_ok = all(a == b for a, b in counters.values())
    locked = sum("locked" in e.lower() for e in errors)
    report = {
        "processes": procs, "seconds": round(elapsed, 1), "operations": total.get("ops", 0),
        "counts": total, "exceptions_escaped": n_errors, "database_locked_seen": locked,
        "errors": errors[:10], "exitcodes": exitcodes,
        "acked_puts": len(acked), "missing_after": check["n_missing"],
        "resurrected": len(check["resurrected"]),
        "counters": {k: {"file": a, "expected": b} for k, (a, b) in counters.items()},
        "counters_ok": counters_ok,
        "verify_ok": verify(path)["ok"],
    }
    report["ok"] = (n_errors == 0 and exitcodes == [0] * procs and check["n_missing"] == 0
                    and not check["resurrected"] and counters_ok and report["verify_ok"])
    return report


# ----------------------------------------------------------------------- corruption


def _public_calls(vecs: np.ndarray) -> list[tuple[str, Any]]:
    return [
        ("get", lambda c: [c.get(f"q{i}", namespace=f"n{i % 3}") for i in range(0, 600, 13)]),
        ("vector get", lambda c: [c.get(vecs[i], namespace=f"n{i % 3}") for i in range(0, 600, 41)]),
        ("get_many", lambda c: c.get_many([f"q{i}" for i in range(10)])),
        ("put", lambda c: c.put("new", "v", vector=vecs[0])),
        ("put_many", lambda c: c.put_many([("a", "b"), ("c", "d")], vector=vecs[1])),
        ("delete", lambda c: c.delete(5)),
        ("invalidate", lambda c: c.invalidate("q7", namespace="n1")),
        ("purge_expired", lambda c: c.purge_expired()),
        ("stats", lambda c: c.stats()),
        ("flush", lambda c: c.flush()),
        ("clear", lambda c: c.clear("n2")),
        ("close", lambda c: c.close()),
    ]


def run_corrupt(trials: int, workdir: str, seed: int) -> dict[str, Any]:
    """Random damage to a populated file; count raw (non-semcache) exceptions."""
    rng = random.Random(seed)
    path = os.path.join(workdir, "corrupt.db")
    vecs = np.random.default_rng(seed).standard_normal((600, 8))
    with semcache.open(path, dim=8, max_entries=None, ttl=None) as cache:
        for i in range(600):
            cache.put(f"q{i}", {"i": i, "pad": "y" * 200}, vector=vecs[i], namespace=f"n{i % 3}",
                      metadata={"i": i})
    good = Path(path).read_bytes()
    kinds = {"truncate": 0, "overwrite": 0, "zero_range": 0, "random_page": 0}
    outcome = {"opened_and_worked": 0, "refused_at_open": 0, "raised_later": 0, "raw": 0}
    raw: dict[str, str] = {}
    unnamed = 0
    for _ in range(trials):
        data = bytearray(good)
        kind = rng.choice(list(kinds))
        kinds[kind] += 1
        if kind == "truncate":
            data = data[:rng.randrange(0, len(data))]
        elif kind == "random_page":
            page = rng.randrange(0, len(data) // 4096)
            data[page * 4096:(page + 1) * 4096] = os.urandom(4096)
        else:
            at, n = rng.randrange(0, len(data)), rng.choice([1, 16, 512, 4096, 30000])
            n = min(n, len(data) - at)
            data[at:at + n] = os.urandom(n) if kind == "overwrite" else bytes(n)
        for suffix in ("-wal", "-shm", "-codes"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        Path(path).write_bytes(bytes(data))
        try:
            cache = semcache.open(path, dim=8)
        except semcache.CacheFileError as exc:
            outcome["refused_at_open"] += 1
            unnamed += path not in str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - counted: the goal is none
            outcome["raw"] += 1
            raw.setdefault(f"open: {type(exc).__name__}", traceback.format_exc()[-800:])
            continue
        failed = False
        for name, call in _public_calls(vecs):
            try:
                call(cache)
            except semcache.CacheFileError as exc:
                failed = True
                unnamed += path not in str(exc)
            except Exception as exc:  # noqa: BLE001
                failed = True
                outcome["raw"] += 1
                raw.setdefault(f"{name}: {type(exc).__name__}", traceback.format_exc()[-800:])
        try:
            cache.close()
        except semcache.CacheFileError:
            pass
        outcome["raised_later" if failed else "opened_and_worked"] += 1
    return {"trials": trials, "kinds": kinds, "outcomes": outcome, "raw_exceptions": raw,
            "errors_not_naming_path": unnamed,
            "ok": outcome["raw"] == 0 and unnamed == 0}


# ----------------------------------------------------------------------- main


def _write(report: dict[str, Any], out: str | None) -> None:
    text = json.dumps(report, indent=2)
    if out == "-" or out is None:
        print(text)
    if out and out != "-":
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_writer":
        writer_main(argv[1], argv[2], int(argv[3]))
        return 0
    if argv and argv[0] == "_worker":
        worker_main(argv[1], argv[2], int(argv[3]), float(argv[4]), int(argv[5]))
        return 0
    if argv and argv[0] == "_check":
        check_main(argv[1], argv[2], argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["kill", "mixed", "corrupt", "full"])
    ap.add_argument("--kills", type=int, default=120)
    ap.add_argument("--procs", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    ap.add_argument("--out", default=None, help="JSON report path ('-' = stdout only)")
    args = ap.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="semcache-stress-")
    os.makedirs(workdir, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "sqlite": _sqlite_version()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        if args.command in ("kill", "full"):
            report["kill"] = run_kill(args.kills, workdir, args.seed)
        if args.command in ("mixed", "full"):
            report["mixed"] = [run_mixed(n, args.seconds, workdir, args.seed) for n in args.procs]
        if args.command in ("corrupt", "full"):
            report["corrupt"] = run_corrupt(args.trials, workdir, args.seed)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    parts = [v for k, v in report.items() if k in ("kill", "corrupt")]
    parts += report.get("mixed", [])
    report["ok"] = all(p["ok"] for p in parts)
    out = args.out
    if out is None and args.command == "full":
        out = str(ROOT / "benchmarks" / "results" / "stress.json")
    _write(report, out or "-")
    return 0 if report["ok"] else 1


def _sqlite_version() -> str:
    import apsw

    return apsw.sqlite_lib_version()


if __name__ == "__main__":
    sys.exit(main())
