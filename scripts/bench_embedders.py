"""Embedder speed: MiniLM load time and single-text latency, plus the hashing embedder.

    python scripts/bench_embedders.py [--calls 200] [--loads 3]

- Load time is measured in fresh subprocesses (import of torch / sentence-transformers +
  model load + trace), which is what the first semantic call of a new worker pays.
- Latency is one ``embed([text])`` call per sample, timed on its own, over ``--calls``
  distinct short prompts (the "origin" side of benchmarks/data/paraphrase_pairs.json),
  after a warm-up. Distinct texts, because a repeated text is answered by the memo or
  the exact tier and never reaches the model.
- The default (1 torch thread) against 2 threads, in alternating rounds, and for context
  the same texts through the eager model and ``SentenceTransformer.encode`` (the path the
  traced fast path replaces). The 1-minute load average is recorded: on a shared machine
  multi-threaded numbers are meaningless without it.

Writes benchmarks/results/embedders.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "benchmarks" / "data" / "paraphrase_pairs.json"

_LOAD_CODE = """
import json, os, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
t0 = time.perf_counter()
from semcache.embedders import MiniLMEmbedder
emb = MiniLMEmbedder()
emb.load()
t1 = time.perf_counter()
emb.embed(["first call after load"])
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "first_embed_ms": (t2 - t1) * 1e3,
                  "fast_path": emb.fast_path}))
"""


def _summary_ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=np.float64) * 1e3
    return {"median_ms": round(float(np.median(a)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3), "n": int(a.size)}


def _time_single(fn: Callable[[list[str]], object], texts: list[str], warmup: int = 20) -> list[float]:
    for text in texts[:warmup]:
        fn([text + " (warm-up)"])
    samples = []
    for text in texts:
        t0 = time.perf_counter()
        fn([text])
        samples.append(time.perf_counter() - t0)
    return samples


def _load_times(n: int) -> list[dict]:
    runs = []
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", _LOAD_CODE], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--loads", type=int, default=3)
    args = ap.parse_args()

    pairs = json.loads(DATA.read_text())
    texts = [p["origin"] for p in pairs[: args.calls]]
    result: dict = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "texts": {"source": str(DATA.relative_to(ROOT)), "n": len(texts),
                  "median_chars": float(np.median([len(t) for t in texts]))},
    }

    from semcache.embedders import HashingEmbedder, MiniLMEmbedder, minilm_available

    hashing = HashingEmbedder()
    result["hashing"] = {"single": _summary_ms(_time_single(hashing.embed, texts))}

    if minilm_available():
        loads = _load_times(args.loads)
        load_before = os.getloadavg()[0]
        emb = MiniLMEmbedder()  # default num_threads="auto": 1 thread
        emb.load()  # before our own `import torch`, or "auto" would leave torch alone
        import torch

        default_threads = torch.get_num_threads()
        # Thread counts take turns in rounds, so machine noise hits both alike.
        by_threads: dict[int, list[float]] = {1: [], 2: []}
        quarter = max(1, len(texts) // 4)
        for start in range(0, len(texts), quarter):
            for n in (1, 2):
                torch.set_num_threads(n)
                by_threads[n] += _time_single(emb.embed, texts[start : start + quarter], warmup=5)
        torch.set_num_threads(default_threads)
        traced = _summary_ms(by_threads[default_threads])
        batch = [p["similar"] for p in pairs[:256]]
        t0 = time.perf_counter()
        emb.embed(batch)
        batch_s = time.perf_counter() - t0
        eager = MiniLMEmbedder(jit=False)
        eager.load()
        model = emb._model

        def st_encode(items: list[str]) -> object:
            return model.encode(items, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)

        result["minilm"] = {
            "name": emb.name,
            "dim": emb.dim,
            "fast_path": emb.fast_path,
            "torch_threads": default_threads,
            "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "load_fresh_process_s": {
                "median": round(float(np.median([r["load_s"] for r in loads])), 3),
                "runs": [round(r["load_s"], 3) for r in loads],
            },
            "first_embed_after_load_ms": round(float(np.median([r["first_embed_ms"] for r in loads])), 3),
            "single": traced,
            "single_by_threads": {str(n): _summary_ms(v) for n, v in by_threads.items()},
            "single_eager": _summary_ms(_time_single(eager.embed, texts)),
            "single_sentence_transformers_encode": _summary_ms(_time_single(st_encode, texts)),
            "batch_256_texts_per_s": round(len(batch) / batch_s, 1),
        }
    else:
        result["minilm"] = {"skipped": "torch / sentence-transformers not installed"}

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "embedders.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
