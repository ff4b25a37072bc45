"""scripts/quality.py on the first 100 paraphrase pairs with the real MiniLM model.

Checks that binary + rescoring (the real semcache.Cache path) decides like exact float
cosine, and that the default-region threshold serves few wrong answers.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from semcache.embedders import minilm_available  # noqa: E402
from semcache.settings import DEFAULT_THRESHOLDS  # noqa: E402

pytestmark = [
    pytest.mark.minilm,
    pytest.mark.skipif(not minilm_available(), reason="MiniLM runtime (tokenizers, safetensors) or weights not installed"),
]

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "quality.py"


def _load_quality() -> ModuleType:
    spec = importlib.util.spec_from_file_location("semcache_quality_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_rescoring_matches_float_on_100_pairs(tmp_path: Path) -> None:
    quality = _load_quality()
    pairs = quality.load_pairs(limit=100)
    emb = quality.SharedEmbedder(quality.get_embedder("minilm"))
    result = quality.evaluate_pairs(emb, pairs, str(tmp_path))

    assert result["n_queries"] == 100
    rows = {r["threshold"]: r for r in result["rows"]}
    for t, row in rows.items():
        assert row["agreement_rescore_float"] >= 0.99, (t, row)
    assert rows[0.92]["rescore"]["wrong"] <= 0.05, rows[0.92]
    # The paraphrases are found at all: far more correct than wrong hits.
    assert rows[0.92]["rescore"]["correct"] >= 0.4, rows[0.92]

    # The derived decisions are the real ones: a cache opened at 0.92 returns the same.
    check = quality.verify_real_threshold(emb, result, 0.92, str(tmp_path))
    assert check["identical"], check


def test_guard_figures_on_100_pairs(tmp_path: Path) -> None:
    """The with/without-guard measurement runs end to end and the JSON is clean."""
    import json

    quality = _load_quality()
    result = quality.run_embedder("minilm", quality.load_pairs(limit=100),
                                  quality.load_hard_negatives(), str(tmp_path),
                                  rewordings=quality.load_rewordings())
    guard = result["guard"]
    assert guard["default_threshold"] == DEFAULT_THRESHOLDS["minilm"]
    hard = guard["hard_negatives"]["at_default"]
    assert hard["no_guard"] > 0.2 and hard["guard"] <= 0.05, hard
    assert set(hard["by_split"]) == {"dev", "heldout"}
    pairs = guard["pairs"]["at_default"]
    # The semantic decision trades some paraphrase hits for stopping look-alikes (a synonym
    # it does not know reads as a substituted word; docs/quality.md): it may cost a share of
    # the correct hits (about a quarter on the full set), never most of them.
    assert pairs["guard"]["correct"] >= 0.6 * pairs["no_guard"]["correct"], pairs
    assert guard["rewordings"]["at_default"]["hit_rate_kept"] >= 0.6
    assert guard["latency"]["n"] > 0 and guard["latency"]["p50_ms"] > 0
    text = json.dumps(quality.public(result), default=quality._jsonable)
    assert "_checks" not in text
