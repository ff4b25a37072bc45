"""Cache-level workloads of scripts/bench_postgres.py: ``semcache.open(url)`` next to
``semcache.open(file)``, the same calls on both engines, in the same run.

1. Exact hit latency: ``cache.get(prompt, exact_only=True)`` on a hash-only cache of
   ``EXACT_ENTRIES`` entries (~400-byte JSON answers), one process.
2. Semantic get at N entries (vector in -> decision out, ``cache.get(vector)``): the 999
   paraphrase origins (MiniLM vectors) + random unit filler up to N, queried with the 999
   paraphrases at threshold 0.92; PostgreSQL through HNSW (semcache's plan for a big
   partition) and through the exact ``bit_count`` scan, and the SQLite file (code mirror).
   Each target is timed in its own block of queries, blocks alternated over the rounds.
   Decisions (which entry answers, or a miss) are compared with the SQLite file's.
3. Throughput from 1 and 8 processes (each its own cache object, and on PostgreSQL its own
   pool - as separate hosts would), started together on a barrier, for ``seconds``:
   ``put`` with a 384-d vector (HNSW / mirror maintained), ``put`` hash-only (exact tier),
   ``put_many`` of 100 vectors (entries/s), and exact-hit ``get``. Fresh cache per round.
   ``put_relaxed``: ``put`` on PostgreSQL with ``?synchronous_commit=off`` (the opt-in
   relaxed durability, reported apart; SQLite runs its usual ``put`` beside it).

Both engines are built with the same entries: through the store in big transactions
(SQLite: ``write_entries`` as put_many does, minus the per-entry validation; PostgreSQL:
binary COPY with the HNSW index built once at the end). Private members are used only to
build (and to pin PostgreSQL's search plan): every timed call is the public API.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

import semcache
from semcache.cache._writes import write_entries
from semcache.kernels.projection import validate_matrix
from semcache.keys import vector_key_hash
from semcache.store.base import NewEntry
from semcache.store.codecs import encode_response, encode_vector

DIM, THRESHOLD = 384, 0.92
EXACT_ENTRIES = 10_000
VALUE = {"text": "lorem ipsum dolor sit amet " * 14}
CHUNK = 50_000


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


def with_schema(url: str, schema: str) -> str:
    return url + ("&" if "?" in url else "?") + "schema=" + schema


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def remove_file(path: str) -> None:
    from semcache.store.sqlite.store import SQLITE_FILES

    for suffix in SQLITE_FILES:
        try:
            os.remove(path + suffix)
        except OSError:
            pass


# -- building -----------------------------------------------------------------------------


def _entries(cache: semcache.Cache, start: int, vecs: np.ndarray, now: float,
             seen: set[bytes]) -> list[NewEntry]:
    """What ``put_many([(v, {"id": i}), ...])`` writes, without its per-entry checks (a
    vector seen before - the paraphrase data repeats a few origins - is skipped)."""
    unit = validate_matrix(vecs, DIM)
    codes = cache._identity.encoder.encode_unit(unit, single=False)  # type: ignore[union-attr]
    out = []
    for i in range(vecs.shape[0]):
        key = vector_key_hash(vecs[i], "default")
        if key in seen:
            continue
        seen.add(key)
        out.append(NewEntry(key_hash=key, namespace="default", scope="", prompt=None,
                            response=encode_response({"id": start + i}), metadata=None,
                            tokens=0, created_at=now, expires_at=None, ttl=None,
                            code=codes[i].tobytes(), vector=encode_vector(unit[i])))
    return out


def _chunks(origins: np.ndarray, size: int, filler: Any):
    yield 0, origins
    for offset, block in filler(size - len(origins)):
        yield len(origins) + offset, block


def build_semantic(location: str, size: int, origins: np.ndarray, filler: Any) -> float:
    """A cache at ``location`` with the origins then filler up to ``size``; seconds."""
    t0 = time.perf_counter()
    now = time.time()
    seen: set[bytes] = set()
    with semcache.open(location, dim=DIM, similarity_threshold=THRESHOLD, max_entries=None,
                       ttl=None) as cache:
        if location.startswith("postgres"):
            def rows():
                for start, block in _chunks(origins, size, filler):
                    yield from _entries(cache, start, block, now, seen)
            cache._store.bulk_insert(rows(), defer_index=True)  # type: ignore[attr-defined]
        else:
            for start, block in _chunks(origins, size, filler):
                write_entries(cache._writer, _entries(cache, start, block, now, seen),
                              cache._settings.tunables(), now)
        assert cache.stats()["entries"] == len(seen)
    return time.perf_counter() - t0


def semantic_location(kind: str, url: str, workdir: Path, size: int, origins: np.ndarray,
                      filler: Any, rebuild: bool) -> tuple[str, float | None]:
    """The cache of ``size`` entries for ``kind`` ("sqlite" / "postgres"), built once."""
    marker = f"bench-cache-{size}-{len(origins)}-v1"
    if kind == "sqlite":
        loc = str(workdir / f"cache-{size}.db")
    else:
        loc = with_schema(url, f"bench_cache_{size}")
    if not rebuild:
        try:
            with semcache.open(loc) as cache:
                if cache.stored_settings().get("bench_marker") == marker:
                    return loc, None
        except semcache.SemcacheError:
            pass
    if kind == "sqlite":
        remove_file(loc)
    else:
        drop_schema(url, f"bench_cache_{size}")
    seconds = build_semantic(loc, size, origins, filler)
    with semcache.open(loc) as cache:
        cache._store.write_settings({"bench_marker": marker})
    if kind == "postgres":
        settle(url, f"bench_cache_{size}")
    print(f"  built {kind} cache of {size} in {seconds:.1f} s", flush=True)
    return loc, seconds


def settle(url: str, schema: str) -> None:
    """After a bulk load, what a server does on its own a while later - analyze the new
    tables, write the dirty pages out - done now, so that autovacuum and the checkpointer
    do not run during the timed searches (a production cache is not measured mid-load)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()]
        for table in tables:
            conn.execute(f'VACUUM (ANALYZE) "{schema}"."{table}"')
        conn.execute("CHECKPOINT")


# -- latency ------------------------------------------------------------------------------


class Target:
    """One cache searched by ``cache.get(vector)``; ``plan`` pins PostgreSQL's."""

    def __init__(self, location: str, plan: str | None = None) -> None:
        self.cache = semcache.open(location)
        if plan is not None:  # the engine's plan switch (benchmark only)
            store: Any = self.cache._store
            store.exact_scan_below = 0 if plan == "hnsw" else 1 << 62
        self.cache.get(np.ones(DIM, dtype=np.float32))  # map the mirror / warm the pool

    def decide(self, v: np.ndarray) -> tuple[int | None, float]:
        hit = self.cache.get(v)
        return (None, 0.0) if hit is None else (int(hit.response["id"]), hit.similarity)

    def close(self) -> None:
        self.cache.close()


def answer_groups(n_origins: int) -> list[str]:
    """The origin text of each origin id. 48 origins of the paraphrase set repeat another's
    text; embedded in different batches, their vectors differ in the last bits, so both are
    stored, and which of the two a query gets is decided by ~1e-7 of cosine (pgvector sums in
    float32, SQLite rescoring in float64). Same text, same answer: compare decisions by it."""
    pairs = json.loads((Path(__file__).resolve().parent.parent / "benchmarks" / "data" /
                        "paraphrase_pairs.json").read_text())
    return [p["origin"] for p in pairs][:n_origins]


def semantic_latency(targets: dict[str, Target], queries: np.ndarray, rounds: int,
                     limits: dict[str, int], groups: list[str] | None = None) -> dict[str, Any]:
    """p50 per round (median and range over rounds), p99 of all samples, decisions."""
    per_round: dict[str, list[float]] = {name: [] for name in targets}
    samples: dict[str, list[float]] = {name: [] for name in targets}
    decisions: dict[str, list[tuple[int | None, float]]] = {name: [] for name in targets}
    names = list(targets)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times = []
            for i in range(min(len(queries), limits.get(name, len(queries)))):
                start = time.perf_counter()
                got = targets[name].decide(queries[i])
                times.append(time.perf_counter() - start)
                if r == 0:
                    decisions[name].append(got)
            per_round[name].append(pct(times, 50))
            samples[name] += times
    out: dict[str, Any] = {
        name: {"p50_ms": statistics.median(v), "range_ms": [min(v), max(v)],
               "p99_ms": pct(samples[name], 99), "n": len(samples[name]),
               "hits": sum(d[0] is not None for d in decisions[name])}
        for name, v in per_round.items()}
    ref = decisions.get("sqlite")
    for name in targets:
        if ref is None or name == "sqlite":
            continue
        pairs = list(zip(decisions[name], ref, strict=False))
        def answer(decision: tuple[int | None, float]) -> object:
            i = decision[0]
            return i if groups is None or i is None or i >= len(groups) else groups[i]

        out[name]["agreement_with_sqlite"] = sum(
            answer(a) == answer(b) for a, b in pairs) / len(pairs)
        out[name]["same_entry_as_sqlite"] = sum(a[0] == b[0] for a, b in pairs) / len(pairs)
        out[name]["cosine_max_diff"] = max((abs(a[1] - b[1]) for a, b in pairs
                                            if a[0] is not None and a[0] == b[0]), default=0.0)
        out[name]["lost_vs_sqlite"] = sum(a[0] is None and b[0] is not None for a, b in pairs)
    return out


def exact_latency(url: str, workdir: Path, rounds: int, n: int = EXACT_ENTRIES) -> dict[str, Any]:
    schema = "bench_exact_" + uuid.uuid4().hex[:8]
    locs = {"sqlite": str(workdir / "exact.db"), "postgres": with_schema(url, schema)}
    remove_file(locs["sqlite"])
    caches = {}
    try:
        for name, loc in locs.items():
            c = semcache.open(loc, hash_only=True, max_entries=None, ttl=None)
            for start in range(0, n, 1000):
                c.put_many([(f"question number {i}", VALUE) for i in range(start, start + 1000)])
            caches[name] = c
        order = np.random.default_rng(1).permutation(n)[:2000]
        per_round: dict[str, list[float]] = {k: [] for k in caches}
        samples: dict[str, list[float]] = {k: [] for k in caches}
        for r in range(rounds):
            for name in (list(caches) if r % 2 == 0 else list(caches)[::-1]):
                c, times = caches[name], []
                for i in order:
                    start = time.perf_counter()
                    assert c.get(f"question number {i}", exact_only=True) is not None
                    times.append(time.perf_counter() - start)
                per_round[name].append(pct(times, 50))
                samples[name] += times
        return {name: {"p50_ms": statistics.median(v), "range_ms": [min(v), max(v)],
                       "p99_ms": pct(samples[name], 99)} for name, v in per_round.items()}
    finally:
        for c in caches.values():
            c.close()
        remove_file(locs["sqlite"])
        drop_schema(url, schema)


# -- throughput -----------------------------------------------------------------------------


def _worker(location: str, kind: str, worker: int, seconds: float, barrier: Any,
            out: Any) -> None:
    cache = semcache.open(location, hash_only=kind in ("put_hash", "get"))
    rng = np.random.default_rng(worker)
    vecs = rng.standard_normal((512, DIM)).astype(np.float32)
    barrier.wait(timeout=120)
    n, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if kind in ("put", "put_relaxed"):
            cache.put(f"w{worker} question {n}", VALUE, vector=vecs[n % 512] + n)
            n += 1
        elif kind == "put_hash":
            cache.put(f"w{worker} plain {n}", VALUE)
            n += 1
        elif kind == "put_many":
            cache.put_many([(vecs[(n + j) % 512] + n + j, VALUE) for j in range(100)])
            n += 100
        else:
            assert cache.get(f"question number {(n * 7 + worker) % 1000}",
                             exact_only=True) is not None
            n += 1
    out.put(n)
    cache.close()


def _prepare(location: str, kind: str) -> None:
    hash_only = kind in ("put_hash", "get")
    with semcache.open(location, max_entries=None, ttl=None,
                       **({"hash_only": True} if hash_only else {"dim": DIM})) as cache:
        if kind == "get":
            cache.put_many([(f"question number {i}", VALUE) for i in range(1000)])


def run_procs(location: str, kind: str, procs: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(location, kind, w, seconds, barrier, out))
          for w in range(procs)]
    for p in ps:
        p.start()
    import queue

    total, got, deadline = 0, 0, time.monotonic() + seconds + 300
    while got < procs:
        try:
            total += out.get(timeout=1.0)
            got += 1
        except queue.Empty:
            dead = [p.exitcode for p in ps if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for p in ps:
                    p.kill()
                raise RuntimeError(f"{kind} workers failed (exit codes {dead})") from None
    for p in ps:
        p.join(timeout=60)
    return total / seconds


def throughput(url: str, workdir: Path, procs: list[int], seconds: float, rounds: int,
               kinds: list[str]) -> dict[str, Any]:
    """ops/s (entries/s for put_many), median and range over rounds, engines alternated."""
    out: dict[str, Any] = {}
    for kind in kinds:
        for n in procs:
            vals: dict[str, list[float]] = {"sqlite": [], "postgres": []}
            for r in range(rounds):
                for engine in (["sqlite", "postgres"] if r % 2 == 0 else ["postgres", "sqlite"]):
                    schema = "bench_tp_" + uuid.uuid4().hex[:8]
                    loc = str(workdir / "tp.db") if engine == "sqlite" else with_schema(url, schema)
                    if kind == "put_relaxed" and engine == "postgres":
                        loc += "&synchronous_commit=off"
                    remove_file(str(workdir / "tp.db"))
                    try:
                        _prepare(loc, kind)
                        vals[engine].append(run_procs(loc, kind, n, seconds))
                    finally:
                        remove_file(str(workdir / "tp.db"))
                        if engine == "postgres":
                            drop_schema(url, schema)
            key = f"{kind}_{n}_procs"
            out[key] = {e: {"median": statistics.median(v), "range": [min(v), max(v)]}
                        for e, v in vals.items()}
            out[key]["load_average"] = os.getloadavg()
            print(f"  {key}: " + ", ".join(f"{e} {d['median']:.0f}/s" for e, d in out[key].items()
                                          if e != "load_average"), flush=True)
    return out


def run(url: str, workdir: Path, sizes: list[int], origins: np.ndarray, similar: np.ndarray,
        filler: Any, args: Any) -> dict[str, Any]:
    """Every cache-level workload; the ``cache`` section of results/postgres.json."""
    result: dict[str, Any] = {"load_average_start": os.getloadavg()}
    result["exact_hit"] = exact_latency(url, workdir, args.rounds)
    print(f"  exact hit: {result['exact_hit']}", flush=True)
    result["semantic_get"] = {}
    for size in sizes:
        locs = {kind: semantic_location(kind, url, workdir, size, origins, filler, args.rebuild)
                for kind in ("sqlite", "postgres")}
        targets = {"sqlite": Target(locs["sqlite"][0]),
                   "postgres_hnsw": Target(locs["postgres"][0], "hnsw"),
                   "postgres_exact_scan": Target(locs["postgres"][0], "exact")}
        limits = {"postgres_exact_scan": args.exact_scan_queries} if size >= 500_000 else {}
        try:
            row = semantic_latency(targets, similar[:args.queries], args.rounds, limits,
                                   answer_groups(len(origins)))
        finally:
            for t in targets.values():
                t.close()
        row["build_seconds"] = {k: v[1] for k, v in locs.items()}
        result["semantic_get"][str(size)] = row
        print(f"  semantic get {size}: {row}", flush=True)
    if not args.skip_throughput:
        result["throughput"] = throughput(url, workdir, args.procs, args.seconds, args.rounds,
                                          args.kinds)
    result["load_average_end"] = os.getloadavg()
    return result


__all__ = ["run"]
