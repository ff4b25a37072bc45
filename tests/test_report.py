"""scripts/report.py: the committed README and docs/benchmarks.md are what it generates from
the committed JSON results, and a new result changes them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "report.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def _copies(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    readme, docs = tmp_path / "README.md", tmp_path / "benchmarks.md"
    embedders = tmp_path / "embedders.md"
    shutil.copy(ROOT / "README.md", readme)
    shutil.copy(ROOT / "docs" / "benchmarks.md", docs)
    shutil.copy(ROOT / "docs" / "embedders.md", embedders)
    return results, readme, docs, embedders


def test_committed_readme_and_docs_are_generated():
    done = _run("--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_new_run_changes_the_headline_table(tmp_path):
    results, readme, docs, embedders = _copies(tmp_path)
    paths = ("--results", str(results), "--readme", str(readme), "--docs", str(docs),
             "--embedders", str(embedders))
    exact = {
        "benchmark": "exact tier and writes, 1 KB responses", "date": "2031-01-02 03:04",
        "entries": 1000, "config": {"runs": 3, "blocks": 5, "bulk": 20000, "batch": 5000,
                                    "dim": 384},
        "machine": {"loadavg_start": [0.42, 0.5, 0.5], "loadavg_end": [0.61, 0.5, 0.5]},
        "hit": {name: {"median_us": us, "p99_us": us * 2, "range_us": [us - 0.1, us + 0.2],
                       "loadavg_1min": {"min": 0.4, "max": 0.6, "mean": 0.5}}
                for name, us in (("semcache", 4.25), ("diskcache", 4.5), ("dict+sha256", 0.5))},
        "put": {name: {"median_us": us, "p99_us": us * 3, "range_us": [us - 1, us + 1],
                       "loadavg_1min": {"min": 0.4, "max": 0.6, "mean": 0.5}}
                for name, us in (("semcache", 41.0), ("diskcache", 36.0))},
        "put_many": {"semcache": {"entries_per_s": 31234, "range": [30000, 32000],
                                  "loadavg_1min": {"mean": 0.5}},
                     "sqlite floor": {"entries_per_s": 45678, "range": [44000, 47000],
                                      "loadavg_1min": {"mean": 0.5}}},
        "ratios": {"hit": {"diskcache": {"median": 0.944, "range": [0.93, 0.96]}},
                   "put": {"diskcache": {"median": 1.139, "range": [1.1, 1.2]}}},
        "goals": [{"goal": "single put p50 / diskcache set (1 KB)", "target": 1.0,
                   "measured": 1.139, "range": [1.1, 1.2], "unit": "x", "met": False}],
    }
    (results / "exact.json").write_text(json.dumps(exact))
    assert _run("--check", *paths).returncode == 1  # stale against the new result
    assert _run(*paths).returncode == 0
    text = readme.read_text()
    block = text.split("<!-- figures:start -->")[1].split("<!-- figures:end -->")[0]
    assert "| exact hit, 1 KB response, p50 | 4.2 us (4.2-4.5 us) | diskcache `get` 4.5 us " \
           "(semcache 0.94x (0.93-0.96x))" in block
    assert "single put, 1 KB response, p50 | 41.0 us (40.0-42.0 us)" in block
    assert "31,234 entries/s (30,000-32,000)" in block and "2031-01-02, load 0.4-0.6" in block
    assert "single put p50 / diskcache set (1 KB) (1.139 x (1.1-1.2), goal <= 1.0 x)" in block
    outside = text.split("<!-- figures:start -->")[0]
    assert outside == (ROOT / "README.md").read_text().split("<!-- figures:start -->")[0]
    doc = docs.read_text()
    assert "| put | semcache | 41.00 | 40.00-42.00 | 123.00 | 0.5 |" in doc
    assert "## Semantic search" in doc  # other scripts' sections are left alone
    assert _run("--check", *paths).returncode == 0


def test_a_new_minilm_run_changes_the_embedder_figures(tmp_path):
    results, readme, docs, embedders = _copies(tmp_path)
    paths = ("--results", str(results), "--readme", str(readme), "--docs", str(docs),
             "--embedders", str(embedders))

    def run(embed_ms: float, encode_ms: float) -> dict:
        def timing(v: float) -> dict:
            return {"embed": {"median_ms": v, "p99_ms": 2 * v, "n": 600,
                              "round_medians_ms": [v, v * 1.1, v * 0.9]}, "semantic_hit": None,
                    "dense_products": {"median_ms": 2.5}}
        sets = ("short_questions", "12_words", "paraphrase")
        return {"minilm": {s: timing(embed_ms) for s in sets},
                "st_encode": {s: timing(encode_ms) for s in sets},
                "ratios": {s: {"embed_vs_st_encode": {"ratio": round(embed_ms / encode_ms, 3),
                                                      "range": [0.3, 0.4]}} for s in sets},
                "query_sets": {s: {"texts": 200, "median_tokens": 11.0} for s in sets},
                "batch": {"texts": 512, "minilm_1_thread": {"median_ms": 6.0},
                          "minilm_2_threads": {"median_ms": 3.5}, "speedup_2_threads": 1.714}}

    minilm = {"machine": {"date": "2031-01-02 03:04", "loadavg_start": [0.5, 0, 0],
                          "loadavg_end": [0.7, 0, 0]},
              "warm": {"auto": run(4.2, 12.0), "Haswell": run(8.4, 12.0)},
              "goals": [{"goal": "one-question embed / SentenceTransformer.encode, short questions",
                         "target": 0.45, "measured": 0.35, "unit": "x", "met": True}]}
    (results / "minilm.json").write_text(json.dumps(minilm))
    assert _run(*paths).returncode == 0
    block = embedders.read_text().split("<!-- report:embedder-speed:start -->")[1]
    assert "| chosen for the CPU | short questions (11) | 4.20 ms | 12.00 ms | 0.35x (0.30-0.40x) | 2.50 ms |" \
        in block
    assert "| `OPENBLAS_CORETYPE=Haswell` | paraphrase queries (11) | 8.40 ms | 12.00 ms | 0.70x" in block
    assert "6.00 ms on 1 thread, 3.50 ms with `batch_threads=2` (1.71x)" in block
    assert "2031-01-02, load 0.5-0.7" in block
    assert ("| MiniLM query embedding, one short question (11 tokens), p50 | 4.20 ms (numpy, no torch, "
            "1 thread) | `SentenceTransformer.encode` on torch, 1 thread: 12.00 ms (semcache 0.35x "
            "(0.30-0.40x)) |") in readme.read_text()
    assert _run("--check", *paths).returncode == 0
