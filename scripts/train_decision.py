"""Calibrate the semantic decision's ``p_wrong`` on the development family set and write
``semcache/guard/decision.json``.

The decision's checks are rules (``semcache.guard.contrast``, ``semcache.guard.decision``);
what is learned here is the probability that a candidate they let through is wrong, as a
logistic curve in its cosine, and the fraction of wrong candidates among those each check
rejects. Both are measured where the decision is used: in the stream of
``scripts/quality_stream.py`` (every phrasing and unrelated question of
``benchmarks/data/families_dev.json`` once, shuffled, a miss stored), replayed offline on the
MiniLM vectors for several orders with the cache's own candidate rule (the ``RESCORE_K``
nearest by cosine, at or above the floor, tried from the most similar; the first the decision
passes is served). The replay is checked against the real cache by ``quality_stream.py``.

Only the dev split is read: the held-out split is never used for training or tuning.

Usage::

    python scripts/train_decision.py             # writes semcache/guard/decision.json
    python scripts/train_decision.py --dry-run   # prints the fit and the floor table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
from family_data import FamilySet, family_path, load_families  # noqa: E402

from semcache.cache._pipeline import RESCORE_K  # noqa: E402
from semcache.embedders import get_embedder  # noqa: E402
from semcache.guard.decision import Calibration, SemanticDecision  # noqa: E402

OUT = ROOT / "semcache" / "guard" / "decision.json"
#: Candidates from this cosine on feed the fit (below every floor worth considering).
FIT_FLOOR = 0.70
SEEDS = (101, 102, 103, 104, 105)
FLOORS = (0.80, 0.82, 0.84, 0.85, 0.86, 0.88, 0.90, 0.92)


class Replay:
    """The stream of one family set, replayed on precomputed vectors with a decision."""

    def __init__(self, fs: FamilySet, vectors: np.ndarray, decision: SemanticDecision) -> None:
        self.queries = fs.queries()
        self.texts = [q.text for q in self.queries]
        self.labels = [q.label for q in self.queries]
        v = vectors.astype(np.float64)
        self.sims = v @ v.T
        self.decision = decision
        self._verdicts: dict[tuple[int, int], Any] = {}

    def verdict(self, q: int, c: int) -> Any:
        key = (q, c)
        if key not in self._verdicts:
            self._verdicts[key] = self.decision.judge(self.texts[q], self.texts[c],
                                                      float(self.sims[q, c]))
        return self._verdicts[key]

    def run(self, seed: int, floor: float) -> dict[str, Any]:
        """One stream: the served candidates (cosine, wrong?) and the rejected ones."""
        order = list(range(len(self.queries)))
        import random

        random.Random(seed).shuffle(order)
        stored: list[int] = []
        served: list[tuple[float, bool]] = []
        rejected: list[tuple[str, bool]] = []
        for q in order:
            hit = None
            if stored:
                st = np.asarray(stored)
                sims = self.sims[q, st]
                for i in np.argsort(-sims, kind="stable")[:RESCORE_K]:
                    if sims[i] < floor:
                        break
                    c = int(st[i])
                    v = self.verdict(q, c)
                    wrong = self.labels[c] != self.labels[q]
                    if v.served:
                        hit = c
                        served.append((float(sims[i]), wrong))
                        break
                    rejected.append((v.reason, wrong))
            if hit is None:
                stored.append(q)
        n = len(order)
        wrong = sum(w for _, w in served)
        return {"served": served, "rejected": rejected, "hit_rate": len(served) / n,
                "wrong_rate": wrong / n}


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> tuple[float, float]:
    """Newton's method for P(y=1) = sigmoid(a + b x); a little L2 on b keeps it finite."""
    beta = np.zeros(2)
    design = np.column_stack([np.ones_like(x), x])
    reg = np.array([0.0, l2])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        grad = design.T @ (p - y) + reg * beta
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    fs = load_families(family_path("dev"))
    vectors = np.asarray(get_embedder("minilm").embed([q.text for q in fs.queries()]))
    replay = Replay(fs, vectors, SemanticDecision(Calibration(0.0, 0.0, {}, "none")))
    served: list[tuple[float, bool]] = []
    rejected: list[tuple[str, bool]] = []
    for seed in SEEDS:
        r = replay.run(seed, FIT_FLOOR)
        served += r["served"]
        rejected += r["rejected"]
    x = np.array([s for s, _ in served])
    y = np.array([float(w) for _, w in served])
    a, b = fit_logistic(x, y)
    counts: Counter[str] = Counter(reason for reason, _ in rejected)
    wrongs: Counter[str] = Counter(reason for reason, w in rejected if w)
    # Laplace-smoothed: a reason seen rarely does not claim certainty either way.
    rejected_p = {k: round((wrongs[k] + 1) / (counts[k] + 2), 4) for k in sorted(counts)}
    table = []
    for floor in FLOORS:
        runs = [replay.run(seed, floor) for seed in SEEDS]
        table.append({"floor": floor,
                      "hit_rate": round(float(np.mean([r["hit_rate"] for r in runs])), 4),
                      "wrong_rate": round(float(np.mean([r["wrong_rate"] for r in runs])), 5)})
    doc = {
        "trained_on": f"{family_path('dev').relative_to(ROOT)} ({len(fs.families)} families, "
                      f"{fs.n_intents} intents, {len(fs.queries())} queries), seeds {list(SEEDS)}",
        "date": time.strftime("%Y-%m-%d"),
        "served": {"intercept": round(a, 5), "slope": round(b, 5), "candidates": len(served),
                   "wrong": int(y.sum()), "fit_floor": FIT_FLOOR,
                   "definition": "P(wrong | served, cosine) = 1 / (1 + exp(-(intercept + "
                                 "slope * cosine)))"},
        "rejected": rejected_p,
        "rejected_counts": {k: [wrongs[k], counts[k]] for k in sorted(counts)},
        "floors": table,
    }
    print(json.dumps({k: v for k, v in doc.items() if k != "rejected_counts"}, indent=1))
    print(f"{time.perf_counter() - t0:.1f} s")
    if not args.dry_run:
        args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
