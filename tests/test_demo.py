"""``semcache demo`` run twice from a clean directory, as a newcomer would: real MiniLM,
the real OpenAI SDK against the built-in stub server, a real file kept between runs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli

from semcache.demo import SCRIPT
from semcache.embedders import minilm_available

pytestmark = [
    pytest.mark.minilm,
    pytest.mark.skipif(not minilm_available(), reason="MiniLM runtime (tokenizers, safetensors) or weights not installed"),
]

SUMMARY = re.compile(r"(\d+) calls: (\d+) hits \((\d+) exact, (\d+) semantic\), (\d+) misses")


def test_demo_twice_from_a_clean_directory(tmp_path: Path) -> None:
    started = time.monotonic()
    first = run_cli("demo", "--latency", "0.2", cwd=tmp_path, timeout=120)
    first_s = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert first_s < 60, f"first run took {first_s:.1f}s"
    out = first.stdout
    assert (tmp_path / "semcache-demo" / "demo.db").exists()  # default --dir, in the cwd
    rows = [line for line in out.splitlines() if re.match(r"^\s*\d+\s{2}(MISS|HIT)", line)]
    assert len(rows) == len(SCRIPT)
    results = [line.split()[1] + (" " + line.split()[2] if "HIT" in line else "")
               for line in rows]
    assert results[:4] == ["MISS"] * 4                      # new questions
    assert results[4:6] == ["HIT exact"] * 2                # repeats
    assert all(r.startswith("HIT semantic") for r in results[6:10])  # paraphrases
    assert results[10:] == ["MISS"] * 3   # other model, other system prompt, look-alike
    sims = [float(s) for s in re.findall(r"sim=(\d\.\d\d)", out)]
    assert len(sims) == 4 and all(0.92 <= s <= 1.0 for s in sims)
    m = SUMMARY.search(out)
    assert m is not None and m.groups() == ("13", "6", "2", "4", "7"), out
    assert "time saved" in out and "tokens saved" in out
    assert "run it again" in out

    started = time.monotonic()
    second = run_cli("demo", "--latency", "0.2", "--json", cwd=tmp_path, timeout=120)
    second_s = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert second_s < 60, f"second run took {second_s:.1f}s"
    data = json.loads(second.stdout)
    assert data["existed"] is True
    assert data["misses"] == 0 and data["hits"] == len(SCRIPT) and data["model_calls"] == 0
    assert data["semantic_hits"] == 4 and data["exact_hits"] == 9
    assert data["tokens_saved"] > 0 and data["time_saved_s"] > 0
    assert data["file_stats"]["entries"] == 7
    for call in data["calls_detail"]:
        assert call["answer"].startswith("You asked:") and not call["reached_model"]
