"""Which features rank the served candidates right from wrong, left out by split (issue 22)?

The error bound serves a candidate with a probability of about ``eps / upper``, so its hit
rate is capped by how well its prior ``p_wrong`` *ranks* the candidates the defaults serve.
This script builds the offline set of those candidates and measures, leaving one development
split out (train on the others, evaluate on it, every way), the AUC of several ``p_wrong``:

- ``cosine``: today's (a logistic curve in the cosine: it ranks by the cosine alone);
- ``features``: the logistic regression over ``semcache.guard.features`` (14 text and cosine
  features, round 4);
- ``contextual``: MiniLM's own last-layer token states (the query's forward pass is paid by
  the lookup; the candidate's would be recomputed or stored): for each content word of one
  prompt (its wordpieces' mean state), its best cosine to the other prompt's words; the
  minimum, mean, second lowest and the counts below a few levels, both directions;
- ``static``: the same with MiniLM's input wordpiece vectors (no forward pass);
- ``layer0`` ... ``layer6``: the same with the states after the embeddings and after each
  layer (``layer6`` = ``contextual``); ``layers2-6``: layers 2, 4 and 6 together;
- ``pair``: the least aligned word of each side and how it relates to its best counterpart
  (a swapped slot, as between siblings, or a word without any);
- ``answer``: the candidate's *answer* embedded (a second forward pass per ``put``): its
  cosine to the query, and how much closer it is to the candidate's own prompt;
- combinations of these (logistic regression, standardized, L2 by 5-fold CV with families as
  groups, ``train_decision.choose_l2``); ``--trees`` adds gradient-boosted trees over the
  richest sets as a ceiling of what these features hold (scikit-learn, not a dependency of
  semcache: measurement only).

For each, beside the AUC: the share of the left-out candidates that one can keep at <= 5%
wrong when the cut is known (the best prefix by score, an upper limit of what the bound could
serve) and when it is chosen on the training splits (share kept and wrong among them).

Candidates: the stream of ``quality_stream.py`` replayed offline at the default floor with
the shipped vetoes and rival rule (``train_decision.Replay``), orders 0-4; a candidate is
(query, served stored prompt, cosine, the lookup's other candidates, wrong or right).

Usage::

    python scripts/ranking_features.py    # writes benchmarks/results/ranking_features.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import train_decision as td  # noqa: E402
from family_data import family_path, load_families  # noqa: E402

from semcache.embedders import get_embedder  # noqa: E402
from semcache.guard.contrast import content  # noqa: E402
from semcache.guard.decision import Calibration, SemanticDecision  # noqa: E402
from semcache.guard.features import FEATURES, Other, features  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "ranking_features.json"
SPLITS = td.SPLITS  # the development splits (a held-out split is never read)
SEEDS = (0, 1, 2, 3, 4)
FLOOR = 0.84
#: Wrong among the kept candidates that a bound at 0.01 could afford on a large share.
KEEP_WRONG = 0.05
CONTEXT_LEVELS = (0.5, 0.6, 0.7, 0.8)
STATIC_LEVELS = (0.3, 0.4, 0.5, 0.6)
#: The token states of ``contextual``: the last layer's (6), the one the lookup computes.
LAYER = 6


@dataclass(frozen=True, slots=True)
class Words:
    """A text's content words and one unit vector each (the mean of its wordpieces')."""

    words: tuple[str, ...]
    context: np.ndarray  # (n, 384) last-layer states
    static: np.ndarray  # (n, 384) input wordpiece vectors
    layers: tuple[np.ndarray, ...]  # (n, 384) states after the embeddings and each layer


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return x / n


def token_words(model: Any, texts: list[str]) -> dict[str, Words]:
    """Every text's content words with their contextual and static vectors."""
    tok, bert = model.tokenizer, model.bert
    out: dict[str, Words] = {}
    for first in range(0, len(texts), 64):
        batch = texts[first:first + 64]
        encs = [tok.encode(t) for t in batch]
        layers, lengths = layer_states(bert, [e.ids for e in encs])
        cuts = np.cumsum(lengths)[:-1]
        parts = zip(*(np.split(x, cuts) for x in layers), strict=True)
        for text, enc, per_layer in zip(batch, encs, parts, strict=True):
            st = per_layer[-1]
            groups: dict[int, list[int]] = {}
            for i, w in enumerate(enc.word_ids):
                if w is not None:
                    groups.setdefault(w, []).append(i)
            words, sta = [], []
            ctx: list[list[np.ndarray]] = [[] for _ in per_layer]
            for idx in groups.values():
                word = "".join(enc.tokens[i].removeprefix("##") for i in idx).lower()
                if not word.isalnum() or not content(word):
                    continue
                words.append(word)
                for k, x in enumerate(per_layer):
                    ctx[k].append(x[idx].mean(axis=0))
                sta.append(bert.word[[enc.ids[i] for i in idx]].mean(axis=0))
            dim = st.shape[1]
            out[text] = Words(tuple(words),
                              _unit(np.array(ctx[LAYER], dtype=np.float64).reshape(-1, dim)),
                              _unit(np.array(sta, dtype=np.float64).reshape(-1, dim)),
                              tuple(_unit(np.array(c, dtype=np.float64).reshape(-1, dim))
                                    for c in ctx))
    return out


def layer_states(bert: Any, sequences: list[list[int]]) -> tuple[list[np.ndarray], np.ndarray]:
    """The token states after the embeddings and after each layer (copies of what
    ``MeanPooledBert.forward`` hands its ``each_layer`` hook)."""
    out: list[np.ndarray] = []
    _, lengths = bert.forward(sequences, each_layer=lambda x: out.append(x.copy()))
    return out, lengths


def _direction(a: np.ndarray, b: np.ndarray, levels: tuple[float, ...]) -> list[float]:
    """For each row of ``a``, its best cosine among ``b``'s: min, mean, second lowest and
    counts below ``levels`` (an empty side: perfect alignment)."""
    if len(a) == 0 or len(b) == 0:
        return [1.0, 1.0, 1.0] + [0.0] * len(levels)
    best = np.sort((a @ b.T).max(axis=1))
    return [float(best[0]), float(best.mean()), float(best[min(1, len(best) - 1)]),
            *(float((best < lv).sum()) for lv in levels)]


def alignment(q: Words, s: Words, which: str) -> list[float]:
    if which.startswith("layer"):
        k = int(which[5:])
        fwd, back = (_direction(q.layers[k], s.layers[k], CONTEXT_LEVELS),
                     _direction(s.layers[k], q.layers[k], CONTEXT_LEVELS))
        return fwd + back + [min(fwd[0], back[0]), min(fwd[1], back[1])]
    a, b = (q.context, s.context) if which == "context" else (q.static, s.static)
    levels = CONTEXT_LEVELS if which == "context" else STATIC_LEVELS
    fwd, back = _direction(a, b, levels), _direction(b, a, levels)
    return fwd + back + [min(fwd[0], back[0]), min(fwd[1], back[1])]


def worst_pair(q: Words, s: Words) -> list[float]:
    """The least aligned content word of each side (by layer-2 states) and how it relates to
    its best counterpart: their cosines in layers 2 and 6 and in the static vectors, whether
    each is the other's best (a swapped slot, as between siblings), whether the two least
    aligned words are each other's best counterparts, and whether either is literally on the
    other side."""
    if not q.words or not s.words:
        return [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    m2 = q.layers[2] @ s.layers[2].T
    m6 = q.layers[6] @ s.layers[6].T
    ms = q.static @ s.static.T
    i = int(m2.max(axis=1).argmin())
    j = int(m2[i].argmax())
    k = int(m2.max(axis=0).argmin())
    i2 = int(m2[:, k].argmax())
    return [float(m2[i, j]), float(m6[i, j]), float(ms[i, j]), float(int(m2[:, j].argmax()) == i),
            float(m2[i2, k]), float(m6[i2, k]), float(ms[i2, k]),
            float(j == k and i2 == i), float(q.words[i] in s.words),
            float(s.words[k] in q.words)]


def alignment_names(which: str) -> list[str]:
    levels = CONTEXT_LEVELS if which == "context" else STATIC_LEVELS
    one = ["min", "mean", "second"] + [f"below_{lv}" for lv in levels]
    return ([f"{which}_q_{n}" for n in one] + [f"{which}_s_{n}" for n in one]
            + [f"{which}_min_both", f"{which}_mean_both"])


class Collect(td.Replay):
    """The replay, remembering every served candidate with what the features need."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.found: list[tuple[int, int, float, list[Other]]] = []

    def choose(self, q: int, cands: list[tuple[int, float]], floor: float, learned: Any,
               rejected: list[tuple[str, bool]], rows: Any) -> tuple[int, float | None] | None:
        hit = super().choose(q, cands, floor, learned, rejected, rows)
        if hit is not None:
            c = hit[0]
            sim = next(s for o, s in cands if o == c)
            self.found.append((q, c, sim, [Other(s, self.labels[o] == self.labels[c])
                                           for o, s in cands if o != c]))
        return hit


def collect(split: str, emb: Any, model: Any, base: SemanticDecision) -> dict[str, Any]:
    fs = load_families(family_path(split))
    texts = [q.text for q in fs.queries()]
    replay = Collect(fs, np.asarray(emb.embed(texts)), base)
    for seed in SEEDS:
        replay.run(seed, FLOOR)
    words = token_words(model, texts)
    qv = np.asarray(emb.embed(texts), dtype=np.float64)
    av = np.asarray(emb.embed([q.answer for q in fs.queries()]), dtype=np.float64)
    rows = []
    for q, c, sim, others in replay.found:
        qt, st = replay.texts[q], replay.texts[c]
        rows.append({
            "query": qt, "stored": st, "cosine": sim, "family": replay.families[q],
            "wrong": replay.labels[q] != replay.labels[c],
            "features": features(qt, st, sim, others),
            "context": alignment(words[qt], words[st], "context"),
            "static": alignment(words[qt], words[st], "static"),
            **{f"layer{k}": alignment(words[qt], words[st], f"layer{k}") for k in range(7)},
            "pair": worst_pair(words[qt], words[st]),
            "answer": [float(np.dot(qv[q], av[c])), float(np.dot(qv[c], av[c]) - np.dot(qv[q], av[c]))]})
    return {"rows": rows, "texts": len(texts),
            "content_words": statistics.fmean(len(w.words) for w in words.values())}


def matrix(rows: list[dict[str, Any]], parts: tuple[str, ...]) -> np.ndarray:
    cols = []
    for r in rows:
        x: list[float] = []
        for p in parts:
            x += [r["cosine"]] if p == "cosine" else list(r[p])
        cols.append(x)
    return np.array(cols, dtype=np.float64)


def keep_share(p: np.ndarray, y: np.ndarray, limit: float = KEEP_WRONG) -> float:
    """The largest share of candidates, the lowest ``p`` first, with at most ``limit``
    wrong among them (ties kept together)."""
    order = np.argsort(p, kind="stable")
    wrong = np.cumsum(y[order])
    n = np.arange(1, len(p) + 1)
    ok = wrong <= limit * n
    sp = p[order]
    last_of_tie = np.r_[sp[1:] != sp[:-1], True]
    good = np.nonzero(ok & last_of_tie)[0]
    return round(float((good[-1] + 1) / len(p)), 4) if good.size else 0.0


def cut_for(p: np.ndarray, y: np.ndarray, limit: float = KEEP_WRONG) -> float:
    """The highest score below which at most ``limit`` of the candidates are wrong."""
    order = np.argsort(p, kind="stable")
    wrong = np.cumsum(y[order])
    ok = np.nonzero(wrong <= limit * np.arange(1, len(p) + 1))[0]
    return float(p[order][ok[-1]]) if ok.size else -np.inf


SETS: dict[str, tuple[str, ...]] = {
    "cosine": ("cosine",),
    "features": ("features",),
    "contextual": ("cosine", "context"),
    "static": ("cosine", "static"),
    "contextual+static": ("cosine", "context", "static"),
    "features+contextual": ("features", "context"),
    "features+static": ("features", "static"),
    "all": ("features", "context", "static"),
    **{f"layer{k}": ("cosine", f"layer{k}") for k in range(7)},
    "layers2-6": ("cosine", "layer2", "layer4", "context"),
    "pair": ("cosine", "pair"),
    "pair+layers": ("cosine", "pair", "layer2", "layer4", "context"),
    "answer": ("cosine", "answer"),
    "answer+contextual": ("cosine", "answer", "context"),
    "answer+all": ("features", "answer", "context", "static"),
}


def evaluate(data: dict[str, list[dict[str, Any]]], trees: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for held in data:
        train = [r for s, rows in data.items() if s != held for r in rows]
        test = data[held]
        yt = np.array([float(r["wrong"]) for r in train])
        ye = np.array([float(r["wrong"]) for r in test])
        groups = [r["family"] for r in train]
        res: dict[str, Any] = {"candidates": len(test), "wrong": int(ye.sum())}
        for name, parts in SETS.items():
            xt, xe = matrix(train, parts), matrix(test, parts)
            if name == "cosine":  # today's p_wrong: decreasing in the cosine, no fit needed
                pt, pe = -xt[:, 0], -xe[:, 0]
                l2 = None
            else:
                mean, scale = xt.mean(axis=0), xt.std(axis=0)
                scale[scale == 0] = 1.0
                zt, ze = (xt - mean) / scale, (xe - mean) / scale
                l2, _ = td.choose_l2(zt, yt, groups)
                w, b0 = td.fit_logreg(zt, yt, l2)
                pt, pe = td._sigmoid(b0 + zt @ w), td._sigmoid(b0 + ze @ w)
            cut = cut_for(pt, yt)
            kept = pe <= cut
            res[name] = {
                "auc": td.auc(list(pe), list(ye.astype(bool))),
                "auc_train": td.auc(list(pt), list(yt.astype(bool))),
                "keep_at_5pct_oracle": keep_share(pe, ye),
                "keep_at_5pct_train_cut": round(float(kept.mean()), 4),
                "wrong_among_kept": round(float(ye[kept].mean()), 4) if kept.any() else None,
                "l2": l2}
            print(f"left out {held:5s} {name:20s} AUC {res[name]['auc']} (train "
                  f"{res[name]['auc_train']}), keep at 5% {res[name]['keep_at_5pct_oracle']:.1%}"
                  f" (train cut: {res[name]['keep_at_5pct_train_cut']:.1%}, wrong "
                  f"{res[name]['wrong_among_kept']})", flush=True)
        singles = {}
        for parts, names in (("context", alignment_names("context")),
                             ("static", alignment_names("static"))):
            xe = matrix(test, (parts,))
            for j, n in enumerate(names):  # a low alignment (or a high count) = wrong
                sign = 1.0 if "below" in n else -1.0
                singles[n] = td.auc(list(sign * xe[:, j]), list(ye.astype(bool)))
        res["single_feature_auc"] = singles
        if trees:
            res["trees"] = tree_aucs(train, test)
        out[held] = res
    return out


#: The sets the ``--trees`` ceiling is measured on.
TREE_SETS: dict[str, tuple[str, ...]] = {
    "layers2-6": ("cosine", "layer2", "layer4", "context"),
    "features+layers2-6": ("features", "layer2", "layer4", "context"),
    "answer+layers2-6": ("cosine", "answer", "layer2", "layer4", "context"),
    "everything": ("features", "layer2", "layer4", "context", "static", "pair", "answer"),
}


def tree_aucs(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, Any]:
    """Left-out AUC of gradient-boosted trees (a non-linear ceiling of the features)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    out = {}
    for name, parts in TREE_SETS.items():
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                               max_leaf_nodes=15, l2_regularization=1.0,
                                               random_state=0)
        model.fit(matrix(train, parts), [r["wrong"] for r in train])
        p = model.predict_proba(matrix(test, parts))[:, 1]
        out[name] = td.auc(list(p), [r["wrong"] for r in test])
        print(f"  trees {name:20s} AUC {out[name]}", flush=True)
    return out


def token_cost(model: Any, texts: list[str], content_words: float) -> dict[str, Any]:
    """What the candidate's token states cost: one forward pass of a stored prompt (median
    of single-text passes), or its content words' states stored (int8, 384 bytes a word)."""
    times = []
    for t in texts[:200]:
        ids = model.tokenizer.encode(t).ids
        t0 = time.perf_counter()
        model.bert.forward([ids])
        times.append((time.perf_counter() - t0) * 1000)
    return {"forward_ms_p50": round(statistics.median(times), 2),
            "content_words_mean": round(content_words, 2),
            "stored_bytes_per_entry_int8": round(content_words * (model.dim + 4), 0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--rows", type=Path, default=None,
                    help="a JSON file of the candidates: written once, read on later runs "
                         "(large: keep it out of the repository)")
    ap.add_argument("--trees", action="store_true",
                    help="also gradient-boosted trees (needs scikit-learn)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.rows is not None and args.rows.exists():  # the candidates of an earlier run
        saved = json.loads(args.rows.read_text("utf-8"))
        data, meta, cost = saved["data"], saved["meta"], saved["cost"]
    else:
        emb = get_embedder("minilm")
        emb.load()
        model = emb._model  # the numpy runtime: tokenizer and forward pass (token states)
        base = SemanticDecision(Calibration(0.0, 0.0, {}, "none"))  # the vetoes; no p_wrong
        data, meta = {}, {}
        for split in SPLITS:
            got = collect(split, emb, model, base)
            data[split] = got["rows"]
            meta[split] = {"candidates": len(got["rows"]),
                           "wrong": sum(r["wrong"] for r in got["rows"]),
                           "content_words_mean": round(got["content_words"], 2)}
            print(split, meta[split], flush=True)
        cost = token_cost(model, [r["stored"] for r in data["dev"]],
                          statistics.fmean(m["content_words_mean"] for m in meta.values()))
        if args.rows is not None:
            args.rows.write_text(json.dumps({"data": data, "meta": meta, "cost": cost}),
                                 encoding="utf-8")
    print("cost", cost, flush=True)
    result = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "floor": FLOOR,
                       "seeds": list(SEEDS), "splits": meta, "features": list(FEATURES),
                       "context": alignment_names("context"),
                       "static": alignment_names("static"), "cost": cost},
              "left_out": evaluate(data, args.trees)}
    result["meta"]["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
