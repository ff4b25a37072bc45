"""The semantic decision's part of ``scripts/quality.py``: every figure with and without it.

Imported by ``quality.py`` (not run on its own). "The guard" here is what the cache runs
with ``guard=True`` (the default): ``semcache.guard.SemanticDecision``, the near-miss guard's
rules and the contrast checks of issue 22. The candidates of a query are tried from the
most to the least similar, among those with cosine ``>= t`` and at most ``k`` of them (the
cache rescores ``RESCORE_K`` candidates), and the first one the decision lets through is the
hit; if it rejects them all, the lookup is a miss. Candidates come from the exact
float cosine matrix, which ``quality.py`` shows equal to the cache's binary + rescoring
path on every query.

Splits: the guard's rules were written while looking only at the ``dev`` split of the hard
negatives and rewordings (``split`` field) and at the even-indexed paraphrase pairs; the
``heldout`` split and the odd-indexed pairs were run once, after the rules were frozen.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semcache.guard import SemanticDecision
from semcache.guard.contrast import clear_memos

#: Issue 14's goals at the default threshold (MiniLM).
GOAL_HARD_NEGATIVES = 0.05
GOAL_CORRECT = 0.58
GOAL_WRONG = 0.010
GOAL_P50_MS = 0.2


class GuardedChoice:
    """Per query: the first candidate the guard passes (threshold-free), and the log."""

    def __init__(self, sims: np.ndarray, stored: Sequence[str], queries: Sequence[str],
                 guard: SemanticDecision, min_threshold: float, k: int) -> None:
        n = len(queries)
        self.index = np.full(n, -1, dtype=np.int64)
        self.sim = np.full(n, np.nan)
        self.checks: list[tuple[str, str]] = []  # every (query, stored) the guard compared
        self.rejections: list[tuple[int, int, str]] = []  # (query, entry, str(rejection))
        for qi in range(n):
            row = sims[qi]
            order = np.argsort(-row, kind="stable")[:k]
            for j in order:
                if row[j] < min_threshold:
                    break
                self.checks.append((queries[qi], stored[j]))
                verdict = guard.check(queries[qi], stored[j])
                if verdict is None:
                    self.index[qi], self.sim[qi] = j, row[j]
                    break
                self.rejections.append((qi, int(j), str(verdict)))

    def decide(self, t: float) -> np.ndarray:
        """Returned entry per query at threshold ``t`` (-1: miss).

        The candidates are in decreasing cosine order, so at ``t`` the hit is the first
        passing candidate if its cosine is ``>= t``; any earlier candidate was rejected.
        """
        return np.where(np.nan_to_num(self.sim, nan=-2.0) >= t, self.index, -1)

    def rejected_reasons(self, t: float, sims: np.ndarray) -> dict[str, int]:
        """How many candidates with cosine ``>= t`` the guard rejected, by reason."""
        out: Counter[str] = Counter()
        for qi, j, text in self.rejections:
            if sims[qi, j] >= t:
                out[text.split(":", 1)[0]] += 1
        return dict(sorted(out.items()))


def _rates(chosen: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    n = max(1, len(chosen))
    hits = chosen >= 0
    ok = hits & (chosen == truth)
    return {"hit": float(hits.sum()) / n, "correct": float(ok.sum()) / n,
            "wrong": float((hits & ~ok).sum()) / n}


def evaluate_pairs(result: dict[str, Any], guard: SemanticDecision, thresholds: Sequence[float],
                   default: float, k: int) -> dict[str, Any]:
    """The 999 paraphrase pairs: correct / wrong hits with and without the guard."""
    top = result["_top"]
    sims, truth = top["sims"], result["_truth"]
    origins, queries = result["_origins"], result["_queries"]
    choice = GuardedChoice(sims, origins, queries, guard, min(thresholds), k)
    plain_idx, plain_sim = top["float"]
    halves = {"dev (even pairs)": np.arange(0, len(queries), 2),
              "heldout (odd pairs)": np.arange(1, len(queries), 2)}
    rows = []
    for t in thresholds:
        plain = np.where(plain_sim >= t, plain_idx, -1)
        guarded = choice.decide(t)
        rows.append({"threshold": t, "no_guard": _rates(plain, truth),
                     "guard": _rates(guarded, truth)})
    at = choice.decide(default)
    plain_at = np.where(plain_sim >= default, plain_idx, -1)
    # Wrong hits whose entry is itself a paraphrase of the right origin (cosine >= default):
    # the data set has near-duplicate origins, a floor no answer-preserving check can lower.
    origin_vecs_sim = _origin_similarity(top, truth, at)
    wrong = (at >= 0) & (at != truth)
    dup = wrong & (origin_vecs_sim >= default)
    true_pair_rejected = sum(guard.check(q, origins[truth[i]]) is not None
                             for i, q in enumerate(queries))
    return {
        "rows": rows,
        "at_default": {
            "threshold": default,
            "no_guard": _rates(plain_at, truth), "guard": _rates(at, truth),
            "by_split": {name: {"no_guard": _rates(plain_at[idx], truth[idx]),
                                "guard": _rates(at[idx], truth[idx])}
                         for name, idx in halves.items()},
            "wrong_hits_guard": int(wrong.sum()),
            "wrong_hits_near_duplicate_origin": int(dup.sum()),
            "candidates_rejected_by_reason": choice.rejected_reasons(default, sims),
        },
        "guard_rejects_true_pair": {
            "all": true_pair_rejected / len(queries),
            **{name: sum(guard.check(queries[i], origins[truth[i]]) is not None for i in idx)
               / len(idx) for name, idx in halves.items()},
        },
        "_checks": choice.checks, "_choice": choice,
    }


def _origin_similarity(top: dict[str, Any], truth: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Cosine between the right origin and the returned one (NaN for misses)."""
    vecs = top.get("_origin_vectors")
    out = np.full(len(chosen), np.nan)
    if vecs is None:
        return out
    for i, j in enumerate(chosen):
        if j >= 0:
            out[i] = float(vecs[truth[i]] @ vecs[j])
    return out


def _false_hit_rows(plain_sim: np.ndarray, choice: GuardedChoice, splits: np.ndarray,
                    thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Per threshold: the fraction of hard-negative queries that hit, without and with the
    guard, overall and per split."""
    rows = []
    for t in thresholds:
        plain = plain_sim >= t
        guarded = choice.decide(t) >= 0
        row: dict[str, Any] = {"threshold": t, "no_guard": float(plain.mean()),
                               "guard": float(guarded.mean())}
        for split in sorted(set(splits.tolist())):
            m = splits == split
            row[f"no_guard_{split}"] = float(plain[m].mean())
            row[f"guard_{split}"] = float(guarded[m].mean())
        rows.append(row)
    return rows


def _by_category(cats: list[str], plain: np.ndarray, guarded: np.ndarray) -> dict[str, str]:
    """``"hits/n -> hits/n"`` per category (without -> with the guard)."""
    counts: dict[str, list[int]] = {}
    for cat, a, b in zip(cats, plain, guarded, strict=True):
        entry = counts.setdefault(cat, [0, 0, 0])
        entry[0] += int(a)
        entry[1] += int(b)
        entry[2] += 1
    return {c: f"{a}/{n} -> {b}/{n}" for c, (a, b, n) in sorted(counts.items())}


def evaluate_hard_negatives(hn: dict[str, Any], negatives: list[dict[str, str]],
                            guard: SemanticDecision, thresholds: Sequence[float], default: float,
                            k: int) -> dict[str, Any]:
    """False-hit rates with and without the guard, per split and category."""
    sims = hn["_top"]["sims"]
    stored = [p["stored"] for p in negatives]
    queries = [p["query"] for p in negatives]
    splits = np.array([p.get("split", "dev") for p in negatives])
    choice = GuardedChoice(sims, stored, queries, guard, min(thresholds), k)
    plain_sim = hn["_top"]["float"][1]
    chosen = choice.decide(default)
    at, plain_at = chosen >= 0, plain_sim >= default
    own = [guard.check(q, s) for q, s in zip(queries, stored, strict=True)]
    rejected_own = np.array([v is not None for v in own])
    split_names = sorted(set(splits.tolist()))
    return {
        "rows": _false_hit_rows(plain_sim, choice, splits, thresholds),
        "at_default": {
            "threshold": default, "no_guard": float(plain_at.mean()), "guard": float(at.mean()),
            "no_guard_hits": int(plain_at.sum()), "guard_hits": int(at.sum()),
            "n": len(queries),
            "by_split": {sp: {"no_guard": float(plain_at[splits == sp].mean()),
                              "guard": float(at[splits == sp].mean()),
                              "n": int((splits == sp).sum())} for sp in split_names},
            "by_category": _by_category([p["category"] for p in negatives], plain_at, at),
            "still_hit": [{"query": queries[i], "stored": stored[int(j)],
                           "cosine": round(float(sims[i, j]), 4)}
                          for i, j in enumerate(chosen) if j >= 0]},
        "guard_rejects_own_pair": {sp: float(rejected_own[splits == sp].mean())
                                   for sp in split_names},
        "own_pair_reasons": dict(sorted(Counter(v.reason for v in own if v is not None).items())),
        "_checks": choice.checks,
    }


def evaluate_rewordings(top: dict[str, Any], rewordings: list[dict[str, str]],
                        guard: SemanticDecision, thresholds: Sequence[float], default: float,
                        k: int) -> dict[str, Any]:
    """Rewordings that must still hit: correct-hit rate with and without the guard."""
    sims = top["sims"]
    stored = [p["stored"] for p in rewordings]
    queries = [p["query"] for p in rewordings]
    truth = np.arange(len(rewordings))
    splits = np.array([p.get("split", "dev") for p in rewordings])
    choice = GuardedChoice(sims, stored, queries, guard, min(thresholds), k)
    f_idx, f_sim = top["float"]
    rows = []
    for t in thresholds:
        plain = np.where(f_sim >= t, f_idx, -1)
        rows.append({"threshold": t, "no_guard": _rates(plain, truth),
                     "guard": _rates(choice.decide(t), truth)})
    plain_at = np.where(f_sim >= default, f_idx, -1)
    at = choice.decide(default)
    own = [guard.check(q, s) for q, s in zip(queries, stored, strict=True)]
    kept = {}
    for split in ("dev", "heldout"):
        m = splits == split
        if m.any():
            kept[split] = {"no_guard": _rates(plain_at[m], truth[m]),
                           "guard": _rates(at[m], truth[m]), "n": int(m.sum()),
                           "guard_rejects_own_pair": float(np.mean(
                               [v is not None for v, mm in zip(own, m, strict=True) if mm]))}
    base = _rates(plain_at, truth)["correct"]
    return {
        "n_pairs": len(rewordings), "rows": rows,
        "at_default": {"threshold": default, "no_guard": _rates(plain_at, truth),
                       "guard": _rates(at, truth), "by_split": kept,
                       "hit_rate_kept": (_rates(at, truth)["correct"] / base) if base else None,
                       "rejected_own_pairs": [
                           {"query": q, "stored": s, "why": str(v)}
                           for q, s, v in zip(queries, stored, own, strict=True) if v]},
        "_checks": choice.checks,
    }


def run_guard(name: str, result: dict[str, Any], negatives: list[dict[str, str]],
              rewordings: list[dict[str, str]],
              top_candidates: Callable[[list[str], list[str]], dict[str, Any]],
              default: float, k: int, thresholds: Sequence[float]) -> dict[str, Any]:
    """Every figure again with the guard at the embedder's ``default`` threshold, plus the
    guard's latency on the comparisons it made.

    ``result`` is ``quality.run_embedder``'s (with ``_top``, ``hard_negatives``);
    ``top_candidates(stored, queries)`` runs the rewordings through a real cache.
    """
    guard = SemanticDecision()
    out: dict[str, Any] = {"embedder": name, "default_threshold": default, "max_candidates": k}
    out["pairs"] = evaluate_pairs(result, guard, thresholds, default, k)
    checks = list(out["pairs"]["_checks"])
    hn = result.get("hard_negatives")
    out["hard_negatives"] = None
    if hn:
        out["hard_negatives"] = evaluate_hard_negatives(hn, negatives, guard, thresholds,
                                                        default, k)
        checks += out["hard_negatives"]["_checks"]
    out["rewordings"] = None
    if rewordings:
        top = top_candidates([p["stored"] for p in rewordings], [p["query"] for p in rewordings])
        out["rewordings"] = evaluate_rewordings(top, rewordings, guard, thresholds, default, k)
        checks += out["rewordings"]["_checks"]
    out["latency"] = guard_latency(checks)
    out["goals"] = goals(out["pairs"], out["hard_negatives"], out["latency"])
    return out


def guard_latency(checks: Sequence[tuple[str, str]], repeats: int = 3) -> dict[str, Any]:
    """Added latency per comparison, on the comparisons the lookups above really made.

    ``cold``: the text memos are cleared before every comparison (both texts are read from
    scratch, the worst case of a lookup); the word-level memos stay warm, as in any process
    that has served a few lookups. ``repeats`` runs; p50/p99 are the median over
    runs, with the range.

    The heap of this script (torch, the embeddings) is frozen out of the garbage collector
    first (``gc.freeze``): otherwise a full collection of that heap, which happens to fall
    inside a few timed comparisons, puts milliseconds of someone else's cost into the p99.
    """
    guard = SemanticDecision()
    if not checks:
        return {"n": 0}
    gc.collect()
    gc.freeze()
    try:
        runs = _timed_runs(guard, checks, repeats)
    finally:
        gc.unfreeze()
    p50s, p99s = [r[0] for r in runs], [r[1] for r in runs]
    return {"n": len(checks), "repeats": repeats, "gc": "heap frozen before timing",
            "p50_ms": round(statistics.median(p50s), 4),
            "p50_ms_range": [round(min(p50s), 4), round(max(p50s), 4)],
            "p99_ms": round(statistics.median(p99s), 4),
            "p99_ms_range": [round(min(p99s), 4), round(max(p99s), 4)]}


def _timed_runs(guard: SemanticDecision, checks: Sequence[tuple[str, str]],
                repeats: int) -> list[tuple[float, float]]:
    """(p50, p99) in ms of each run over all the comparisons."""
    runs = []
    for _ in range(repeats):
        times = []
        for q, s in checks:
            clear_memos()
            t0 = time.perf_counter()
            guard.check(q, s)
            times.append(time.perf_counter() - t0)
        times.sort()
        runs.append((times[len(times) // 2] * 1e3, times[min(len(times) - 1,
                                                             int(0.99 * len(times)))] * 1e3))
    return runs


def goals(pairs: dict[str, Any], hard: dict[str, Any] | None,
          latency: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's goals at the default threshold, with and without the guard."""
    g = pairs["at_default"]["guard"]
    out: dict[str, Any] = {
        "pairs_correct": {"value": g["correct"], "goal": f">= {GOAL_CORRECT:.0%}",
                          "met": g["correct"] >= GOAL_CORRECT},
        "pairs_wrong": {"value": g["wrong"], "goal": f"<= {GOAL_WRONG:.1%}",
                        "met": g["wrong"] <= GOAL_WRONG},
        "guard_p50_ms": {"value": latency.get("p50_ms"), "goal": f"<= {GOAL_P50_MS} ms",
                         "met": (latency.get("p50_ms") or 1e9) <= GOAL_P50_MS},
    }
    if hard is not None:
        h = hard["at_default"]["guard"]
        out["hard_negative_false_hits"] = {"value": h, "goal": f"<= {GOAL_HARD_NEGATIVES:.0%}",
                                           "met": h <= GOAL_HARD_NEGATIVES}
    return out


def plot(embedder: str, pairs: dict[str, Any], hard: dict[str, Any] | None,
         rewordings: dict[str, Any] | None, default: float, path: Path) -> None:
    """Four panels, with and without the guard, against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharex=True)
    ts = [r["threshold"] for r in pairs["rows"]]

    def draw(ax: Any, rows: list[dict[str, Any]], key: str | None, title: str,
             goal: float | None = None, extra: Sequence[str] = ()) -> None:
        for name, style in (("no_guard", "-o"), ("guard", "-x")):
            ys = [100 * (r[name][key] if key else r[name]) for r in rows]
            ax.plot(ts, ys, style, ms=4, label=name.replace("_", " "))
        for name in extra:
            ax.plot(ts, [100 * r[name] for r in rows], ":", label=name.replace("_", " "))
        if goal is not None:
            ax.axhline(100 * goal, color="grey", ls="-.", lw=1, label="goal")
        ax.axvline(default, color="red", lw=1, alpha=0.6)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5)

    draw(axes[0, 0], pairs["rows"], "correct", "paraphrase pairs: correct hits (%)", GOAL_CORRECT)
    draw(axes[0, 1], pairs["rows"], "wrong", "paraphrase pairs: wrong hits (%)", GOAL_WRONG)
    if hard is not None:
        draw(axes[1, 0], hard["rows"], None, "hard negatives: false hits (%)",
             GOAL_HARD_NEGATIVES, extra=("guard_dev", "guard_heldout"))
    if rewordings is not None:
        draw(axes[1, 1], rewordings["rows"], "correct", "rewordings: correct hits (%)")
    for ax in axes[1]:
        ax.set_xlabel("similarity threshold (cosine)")
    fig.suptitle(f"semcache near-miss guard - {embedder} (red line: default {default:.2f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(embedder: str, out: dict[str, Any]) -> None:
    """The default-threshold figures on stdout."""
    p = out["pairs"]["at_default"]
    print(f"\n{embedder} with the near-miss guard at {p['threshold']:.2f}:")
    print(f"  paraphrase pairs: correct {p['no_guard']['correct']:.1%} -> "
          f"{p['guard']['correct']:.1%}, wrong {p['no_guard']['wrong']:.1%} -> "
          f"{p['guard']['wrong']:.1%} ({p['wrong_hits_near_duplicate_origin']} of "
          f"{p['wrong_hits_guard']} wrong hits return a near-duplicate of the right origin)")
    for name, split in p["by_split"].items():
        print(f"    {name}: correct {split['no_guard']['correct']:.1%} -> "
              f"{split['guard']['correct']:.1%}, wrong {split['no_guard']['wrong']:.1%} -> "
              f"{split['guard']['wrong']:.1%}")
    if out.get("hard_negatives"):
        h = out["hard_negatives"]["at_default"]
        splits = ", ".join(f"{k} {v['no_guard']:.1%} -> {v['guard']:.1%} (n={v['n']})"
                           for k, v in h["by_split"].items())
        print(f"  hard negatives false hits: {h['no_guard']:.1%} -> {h['guard']:.1%} ({splits})")
    if out.get("rewordings"):
        r = out["rewordings"]["at_default"]
        print(f"  rewordings correct hits: {r['no_guard']['correct']:.1%} -> "
              f"{r['guard']['correct']:.1%} (kept {r['hit_rate_kept'] or 0:.1%})")
    lat = out["latency"]
    print(f"  guard latency per comparison: p50 {lat.get('p50_ms')} ms "
          f"{lat.get('p50_ms_range')}, p99 {lat.get('p99_ms')} ms over {lat.get('n')} comparisons")
    for name, goal in out["goals"].items():
        print(f"  goal {name}: {goal['value']} ({goal['goal']}) {'met' if goal['met'] else 'NOT met'}")
