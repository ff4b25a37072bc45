"""The stream evaluation of issue 22: how often the semantic tier serves a wrong answer
when look-alike questions arrive in a realistic order.

Data: ``benchmarks/data/families_<split>.json`` (format in ``benchmarks/data/README.md``).
Every phrasing and every unrelated question is one query, in a seeded shuffled order, all
in one namespace of a fresh cache file: a query ``get``s the cache; a miss "calls the model"
(the intent's answer) and ``put``s it; a hit is *right* when the served entry's intent is the
query's intent, else *wrong*. Rates are fractions of all queries (``wrong`` = wrong answers
served over all queries; ``wrong_among_hits`` = wrong / hits); the best possible hit rate is
(phrasings - intents) / queries.

Decisions compared (each on its own fresh file, the same order): the defaults, the guard off
(``guard=False``: the cosine alone at its default floor), and the default decision at floors
from 0.76 to 0.96: with the defaults they are the trade-off curve (``tradeoff``: hit rate
against wrong answers, by floor). Attack pairs (``attack_pairs_<split>.json``): each pair in a
fresh namespace at the defaults, ``stored`` put, ``query`` asked; a served answer is a failure.

Latency the decision adds: during the defaults run a second handle on the same file, opened
with ``guard=False`` (the cosine decision alone), asks every query too, in alternating order
with the defaults handle; the added cost of a lookup is the difference of the two ``get``
times. Embeddings are computed once per text beforehand (both handles get them through
:class:`quality.SharedEmbedder`), so the figure is beyond the embedding.

Everything runs through the real ``semcache.Cache`` with the real MiniLM.

Usage::

    python scripts/quality_stream.py                      # dev (and held-out when present)
    python scripts/quality_stream.py --splits dev --no-latency --configs defaults
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
from family_data import (  # noqa: E402
    FamilySet,
    Query,
    attack_path,
    family_path,
    load_attacks,
    load_families,
)
from quality import SharedEmbedder  # noqa: E402

import semcache  # noqa: E402
from semcache.embedders import get_embedder  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "quality_stream.json"
#: name -> the arguments of ``semcache.open`` besides the embedder (defaults otherwise).
#: The "floor" rows with the defaults are the trade-off curve (hit rate vs wrong answers).
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "guard off": {"guard": False},
    **{f"floor {f:.2f}": {"similarity_threshold": f}
       for f in (0.76, 0.78, 0.80, 0.82, 0.86, 0.88, 0.90, 0.92, 0.96)},
    # The user-set error bound (SPEC 12): the defaults' decision as the prior, explorations
    # verified by the stream's put of the fresh answer (the "text" verifier).
    "bound 0.005": {"error_bound": 0.005},
    "bound 0.01": {"error_bound": 0.01},
    "bound 0.02": {"error_bound": 0.02},
    "bound 0.05": {"error_bound": 0.05},
}
BOUND_CONFIGS = tuple(name for name in CONFIGS if name.startswith("bound "))
#: A split name with this suffix: the split without its families flagged ``dev_overlap``.

#: Issue 22's goals (hidden stream; reported for each split).
GOAL_DEFAULT_WRONG = 0.005
GOAL_DEFAULT_HIT = 0.20
GOAL_MOONSHOT_HIT = 0.50
GOAL_ATTACKS_PER_74 = 2
GOAL_ADDED_P50_MS = 2.0
GOAL_BOUND = 0.01  # error_bound=0.01 serves wrong answers on <= 1% of queries...
GOAL_BOUND_HIT = 0.15  # ...with a hit rate of at least 15%
EXAMPLES = 40


def _answer_labels(fs: FamilySet) -> dict[str, str]:
    """Answer text -> the intent (or unrelated question) it belongs to (answers are unique)."""
    return {q.answer: q.label for q in fs.queries()}


def run_stream(emb: SharedEmbedder, fs: FamilySet, stream: Sequence[Query], path: str,
               options: dict[str, Any], *, latency: bool = False,
               coin_seed: int = 0, decision: Any = None) -> dict[str, Any]:
    """One pass of the stream through a fresh cache file opened with ``options``; the error
    bound's coin seeded with ``coin_seed`` (reproducible figures). ``decision``: another
    semantic decision than the shipped one (``scripts/decision_loso.py`` evaluates decisions
    trained on part of the development splits)."""
    owner = _answer_labels(fs)
    hits = right = 0
    wrong: list[dict[str, Any]] = []
    p_right: list[float] = []
    p_wrong: list[float] = []
    added: list[float] = []
    with semcache.open(path, embedder=emb, **options) as cache:
        cache._bound.rng.seed(coin_seed)  # the process-local coin; seeded for the figures
        if decision is not None:
            cache._settings._guard = decision
        raw = semcache.open(path, embedder=emb, guard=False) if latency else None
        try:
            for n, q in enumerate(stream):
                if raw is None:
                    hit = cache.get(q.text)
                else:
                    hit, ms = _paired_get(cache, raw, q.text, n % 2 == 0)
                    added.append(ms)
                if hit is None:
                    cache.put(q.text, q.answer)
                    continue
                hits += 1
                ok = owner.get(hit.response) == q.label
                pw = getattr(hit, "p_wrong", None)
                if pw is not None:
                    (p_right if ok else p_wrong).append(float(pw))
                if ok:
                    right += 1
                else:
                    wrong.append({"query": q.text, "served": hit.prompt,
                                  "similarity": round(hit.similarity, 4),
                                  "p_wrong": None if pw is None else round(float(pw), 4)})
            stats = cache.stats()
            threshold = cache.settings["similarity_threshold"]
        finally:
            if raw is not None:
                raw.close()
    n = len(stream)
    out: dict[str, Any] = {
        "options": options, "floor": threshold, "queries": n, "hits": hits, "right": right,
        "wrong": len(wrong), "hit_rate": hits / n, "wrong_rate": len(wrong) / n,
        "wrong_among_hits": len(wrong) / hits if hits else 0.0,
        "guard_rejections": stats.get("guard_rejections"), "wrong_examples": wrong[:EXAMPLES],
    }
    if options.get("error_bound") is not None:
        out.update({name: stats[name] for name in ("explorations", "outcomes_right",
                                                   "outcomes_wrong")})
    if p_right or p_wrong:
        out["p_wrong_of_hits"] = {"right_mean": _mean(p_right), "wrong_mean": _mean(p_wrong),
                                  "predicted_wrong": round(sum(p_right) + sum(p_wrong), 2)}
    if added:
        out["latency"] = _latency_summary(added)
    return out


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _paired_get(cache: Any, raw: Any, text: str, decision_first: bool) -> tuple[Any, float]:
    """The stream's ``get`` through ``cache`` and the milliseconds the decision added to it:
    its time minus that of a ``get`` through the cosine-only handle ``raw``, same file, same
    state, in alternating order. ``raw`` asks once untimed first: it did not write the last
    entry, so its first look after a put re-checks the mirror (``cache``, the writer, does
    not need to)."""
    raw.get(text)
    t0 = time.perf_counter()
    if decision_first:
        hit = cache.get(text)
        t1 = time.perf_counter()
        raw.get(text)
        t2 = time.perf_counter()
        return hit, ((t1 - t0) - (t2 - t1)) * 1000.0
    raw.get(text)
    t1 = time.perf_counter()
    hit = cache.get(text)
    t2 = time.perf_counter()
    return hit, ((t2 - t1) - (t1 - t0)) * 1000.0


def _latency_summary(added: list[float]) -> dict[str, Any]:
    arr = np.asarray(added)
    return {"lookups": len(added), "added_p50_ms": round(float(np.percentile(arr, 50)), 4),
            "added_p95_ms": round(float(np.percentile(arr, 95)), 4),
            "added_mean_ms": round(float(arr.mean()), 4)}


def run_attacks(emb: SharedEmbedder, pairs: list[dict[str, str]], path: str,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each pair in a fresh namespace: put ``stored``, get ``query``; served = failure."""
    served: list[dict[str, Any]] = []
    by_kind: dict[str, list[int]] = {}
    with semcache.open(path, embedder=emb, **(options or {})) as cache:
        for i, p in enumerate(pairs):
            ns = f"attack-{i}"
            cache.put(p["stored"], f"answer to: {p['stored']}", namespace=ns)
            hit = cache.get(p["query"], namespace=ns)
            counts = by_kind.setdefault(p["kind"], [0, 0])
            counts[1] += 1
            if hit is not None:
                counts[0] += 1
                served.append({**p, "similarity": round(hit.similarity, 4),
                               "p_wrong": getattr(hit, "p_wrong", None)})
    return {"pairs": len(pairs), "served": len(served),
            "served_per_74": round(74 * len(served) / len(pairs), 2),
            "by_kind": {k: f"{a}/{b}" for k, (a, b) in sorted(by_kind.items())},
            "served_examples": served}


def other_orders(emb: SharedEmbedder, fs: FamilySet, seeds: Sequence[int], workdir: str,
                 split: str, config: str = "defaults") -> dict[str, Any]:
    """A config on other shuffles of the same queries (and other coins of the error bound):
    how much one order's figures move."""
    runs = []
    for seed in seeds:
        path = os.path.join(workdir, f"{split}-{config.replace(' ', '_')}-seed{seed}.db")
        res = run_stream(emb, fs, fs.stream(seed), path, CONFIGS[config], coin_seed=seed)
        runs.append({"seed": seed, "hit_rate": res["hit_rate"], "wrong_rate": res["wrong_rate"]})
    hits = [r["hit_rate"] for r in runs]
    wrongs = [r["wrong_rate"] for r in runs]
    return {"runs": runs, "hit_rate_mean": statistics.fmean(hits),
            "hit_rate_range": [min(hits), max(hits)], "wrong_rate_mean": statistics.fmean(wrongs),
            "wrong_rate_range": [min(wrongs), max(wrongs)]}


#: A split name ending in this suffix: the split without the families flagged
#: ``dev_overlap`` (families whose topic a development split also covers; see
#: benchmarks/data/README.md), so that held-out figures can be read with and without them.
FRESH = "-fresh"


def load_split(split: str) -> FamilySet:
    """The family set of ``split``; ``<split>-fresh`` drops its ``dev_overlap`` families."""
    if not split.endswith(FRESH):
        return load_families(family_path(split))
    fs = load_families(family_path(split[: -len(FRESH)]))
    return FamilySet(split, fs.path, [f for f in fs.families if not f.get("dev_overlap")],
                     fs.unrelated)


def evaluate_split(emb: SharedEmbedder, split: str, configs: Sequence[str], seed: int,
                   workdir: str, latency: bool, extra_seeds: Sequence[int] = ()) -> dict[str, Any]:
    fs = load_split(split)
    stream = fs.stream(seed)
    emb.prime([q.text for q in stream])
    out: dict[str, Any] = {
        "file": str(fs.path.relative_to(ROOT)), "families": len(fs.families),
        "intents": fs.n_intents, "phrasings": fs.n_phrasings, "unrelated": len(fs.unrelated),
        "queries": len(stream), "seed": seed, "best_possible_hit_rate": fs.best_possible(),
        "configs": {},
    }
    for name in configs:
        t0 = time.perf_counter()
        path = os.path.join(workdir, f"{split}-{name.replace(' ', '_')}.db")
        res = run_stream(emb, fs, stream, path, CONFIGS[name],
                         latency=latency and name == "defaults", coin_seed=seed)
        res["seconds"] = round(time.perf_counter() - t0, 2)
        out["configs"][name] = res
        print(f"{split:8s} {name:12s} floor {res['floor']}: hit {res['hit_rate']:6.1%} "
              f"wrong {res['wrong_rate']:6.2%} ({res['wrong']}) of hits {res['wrong_among_hits']:5.1%}"
              + (f"  added p50 {res['latency']['added_p50_ms']:.3f} ms p95 "
                 f"{res['latency']['added_p95_ms']:.3f} ms" if "latency" in res else ""),
              flush=True)
    out["tradeoff"] = tradeoff(out)
    if extra_seeds and "defaults" in configs:
        others = other_orders(emb, fs, [seed, *extra_seeds], workdir, split)
        out["defaults_over_orders"] = others
        print(f"{split:8s} defaults over {len(others['runs'])} orders: hit "
              f"{others['hit_rate_mean']:.1%}, wrong {others['wrong_rate_mean']:.2%} "
              f"(range {others['wrong_rate_range'][0]:.2%}-{others['wrong_rate_range'][1]:.2%})",
              flush=True)
    for name in (c for c in configs if c in BOUND_CONFIGS and extra_seeds):
        others = other_orders(emb, fs, [seed, *extra_seeds], workdir, split, name)
        out["configs"][name]["over_orders"] = others
        print(f"{split:8s} {name} over {len(others['runs'])} orders: hit "
              f"{others['hit_rate_mean']:.1%}, wrong {others['wrong_rate_mean']:.2%} (range "
              f"{others['wrong_rate_range'][0]:.2%}-{others['wrong_rate_range'][1]:.2%})",
              flush=True)
    apath = attack_path(split.removesuffix(FRESH))
    if apath.exists():
        pairs = load_attacks(apath)
        emb.prime([t for p in pairs for t in (p["stored"], p["query"])])
        out["attacks"] = run_attacks(emb, pairs, os.path.join(workdir, f"{split}-attacks.db"))
        a = out["attacks"]
        print(f"{split:8s} attacks: {a['served']}/{a['pairs']} served "
              f"({a['served_per_74']} per 74)", flush=True)
    return out


def tradeoff(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Hit rate against wrong answers, one point per floor (the decision on), by floor."""
    points = {c["floor"]: c for name, c in res["configs"].items()
              if name == "defaults" or name.startswith("floor ")}
    return [{"floor": f, "hit_rate": round(points[f]["hit_rate"], 4),
             "wrong_rate": round(points[f]["wrong_rate"], 5)} for f in sorted(points)]


def best_hits_within(curve: list[dict[str, Any]], wrong: float) -> float | None:
    """The highest hit rate of a curve point with at most ``wrong`` wrong answers."""
    ok = [p["hit_rate"] for p in curve if p["wrong_rate"] <= wrong]
    return max(ok) if ok else None


def goals(splits: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 22's goals, measured on each split (the hidden stream is the coordinator's)."""
    out: list[dict[str, Any]] = []
    for split, res in splits.items():
        curve = res.get("tradeoff") or []
        if curve:
            best = best_hits_within(curve, GOAL_DEFAULT_WRONG)
            out.append({"goal": f"{split}: moonshot, best hit rate at <= 0.5% wrong (any floor "
                                "measured)", "target": GOAL_MOONSHOT_HIT * 100, "unit": "%",
                        "at_least": True,
                        "measured": None if best is None else round(best * 100, 1),
                        "met": best is not None and best >= GOAL_MOONSHOT_HIT})
        d = res["configs"].get("defaults")
        if d:
            out.append({"goal": f"{split}: defaults, wrong answers of all queries",
                        "target": GOAL_DEFAULT_WRONG * 100, "unit": "%",
                        "measured": round(d["wrong_rate"] * 100, 2),
                        "met": d["wrong_rate"] <= GOAL_DEFAULT_WRONG})
            out.append({"goal": f"{split}: defaults, hit rate", "target": GOAL_DEFAULT_HIT * 100,
                        "unit": "%", "at_least": True, "measured": round(d["hit_rate"] * 100, 1),
                        "met": d["hit_rate"] >= GOAL_DEFAULT_HIT})
            lat = d.get("latency")
            if lat:
                out.append({"goal": f"{split}: time the decision adds to a semantic lookup, p50",
                            "target": GOAL_ADDED_P50_MS, "unit": "ms",
                            "measured": lat["added_p50_ms"],
                            "met": lat["added_p50_ms"] <= GOAL_ADDED_P50_MS})
        for name in BOUND_CONFIGS:
            b = res["configs"].get(name)
            if b:
                bound = CONFIGS[name]["error_bound"]
                wrong = b.get("over_orders", {}).get("wrong_rate_mean", b["wrong_rate"])
                out.append({"goal": f"{split}: {name}, wrong answers of all queries (mean over "
                                    "orders)", "target": bound * 100, "unit": "%",
                            "measured": round(wrong * 100, 2), "met": wrong <= bound})
                if bound == GOAL_BOUND:
                    hit = b.get("over_orders", {}).get("hit_rate_mean", b["hit_rate"])
                    out.append({"goal": f"{split}: {name}, hit rate", "at_least": True,
                                "target": GOAL_BOUND_HIT * 100, "unit": "%",
                                "measured": round(hit * 100, 1), "met": hit >= GOAL_BOUND_HIT})
        a = res.get("attacks")
        if a:
            out.append({"goal": f"{split}: attack pairs served, per 74",
                        "target": GOAL_ATTACKS_PER_74, "unit": "", "measured": a["served_per_74"],
                        "met": a["served_per_74"] <= GOAL_ATTACKS_PER_74})
    return out


#: The files that make the decision: the figures name the exact version they were made with.
DECISION_FILES = ("semcache/guard/contrast.py", "semcache/guard/contrast_words.py",
                  "semcache/guard/flow.py", "semcache/store/rescore.py",
                  "semcache/cache/_pipeline.py",
                  "semcache/guard/decision.py", "semcache/guard/decision.json",
                  "semcache/guard/features.py",
                  "semcache/guard/antonyms.txt", "semcache/guard/synonyms.txt",
                  "semcache/guard/rules.py", "semcache/guard/lexicon.py",
                  "semcache/guard/text.py", "semcache/settings.py")


def decision_fingerprint() -> str:
    """SHA-256 over the decision's files (rules, word lists, calibration, default floors)."""
    digest = hashlib.sha256()
    for name in DECISION_FILES:
        digest.update(name.encode())
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


PLOT = ROOT / "benchmarks" / "results" / "quality_stream_tradeoff.png"


def plot_tradeoff(splits: dict[str, Any], path: Path) -> None:
    """Hit rate against wrong answers along the floors, one line per split, with the goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for split, res in splits.items():
        curve = res.get("tradeoff") or []
        if not curve:
            continue
        ax.plot([100 * p["hit_rate"] for p in curve], [100 * p["wrong_rate"] for p in curve],
                marker="o", label=split)
        d = res["configs"].get("defaults")
        if d:
            ax.annotate(f"{d['floor']}", (100 * d["hit_rate"], 100 * d["wrong_rate"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(100 * GOAL_DEFAULT_WRONG, color="gray", linestyle="--", linewidth=0.8)
    ax.axvline(100 * GOAL_DEFAULT_HIT, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlabel("hit rate (% of queries)")
    ax.set_ylabel("wrong answers (% of queries)")
    ax.set_title("Look-alike stream: the semantic decision along its floor (0.76-0.96)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", nargs="+", default=None,
                    help="default: dev, dev2, dev3, dev4, heldout and heldout-fresh (when the file exists)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra-seeds", type=int, nargs="*", default=[1, 2, 3, 4],
                    help="other orders for the defaults (the spread of one order's figures)")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    splits = args.splits or [s for s in ("dev", "dev2", "dev3", "dev4", "heldout") if family_path(s).exists()]
    if "heldout" in splits and "heldout" + FRESH not in splits:
        splits.append("heldout" + FRESH)
    emb = SharedEmbedder(get_embedder("minilm"))
    gc.freeze()
    out: dict[str, Any] = {
        "meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "embedder": emb.name,
                 "load_average": [round(x, 2) for x in os.getloadavg()],
                 "python": platform.python_version(), "numpy": np.__version__,
                 "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
                 "configs": {k: CONFIGS[k] for k in args.configs},
                 "decision_sha256": decision_fingerprint(),
                 "definitions": {
                     "hit_rate": "hits / queries", "wrong_rate": "wrong answers served / queries",
                     "wrong_among_hits": "wrong / hits",
                     "best_possible_hit_rate": "(phrasings - intents) / queries",
                     "added_p50_ms": "per lookup: get with the decision minus get with the "
                                     "cosine alone, same file and state, embeddings precomputed"}},
        "splits": {},
    }
    with tempfile.TemporaryDirectory(prefix="semcache-stream-") as workdir:
        for split in splits:
            out["splits"][split] = evaluate_split(emb, split, args.configs, args.seed, workdir,
                                                  not args.no_latency, args.extra_seeds)
    out["meta"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out["goals"] = goals(out["splits"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    if not args.no_plot:
        plot_tradeoff(out["splits"], PLOT)
        print(f"wrote {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
