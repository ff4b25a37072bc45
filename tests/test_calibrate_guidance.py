"""``semcache calibrate`` without enough verdicts says how many it needs and how to collect
them, instead of a curve of zeros (issue 20, item 15)."""

from __future__ import annotations

import json

import pytest

import semcache
from semcache.calibrate import calibrate, verdicts_needed
from tests.cli_helpers import run_cli
from tests.engines import ENGINES

pytestmark = pytest.mark.engines(*ENGINES)


def test_calibrate_with_no_verdicts_says_what_it_needs(location: str) -> None:
    with semcache.open(location, embedder="hashing"):
        pass
    proc = run_cli("calibrate", location)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) <= 3, proc.stdout  # no table of zeros
    assert "0.500" not in proc.stdout and "100.00" not in proc.stdout
    need = verdicts_needed(0.0, 0)
    assert f"needs at least {need} verdicts" in proc.stdout
    assert "feedback(" in proc.stdout and "--pairs" in proc.stdout
    out = json.loads(run_cli("calibrate", location, "--json").stdout)
    assert out["threshold"] is None and out["needed"] == need == 268
    assert out["observations"] == 0 and "--pairs" in out["message"]


def test_calibrate_with_too_few_verdicts_says_how_many_more_and_how(location: str) -> None:
    with semcache.open(location, embedder="hashing") as cache:
        entry = cache.put("How do I configure the billing service?", "answer")
        for _ in range(3):
            cache.feedback(entry, True, query="Configure the billing service how?",
                           similarity=0.95)
    out = json.loads(run_cli("calibrate", location, "--json").stdout)
    assert out["threshold"] is None and out["needed"] == verdicts_needed(0.0, 3) == 265
    assert "265 more verdicts" in out["message"] and "feedback(" in out["message"]


def test_verdicts_only_below_the_grid_are_reported_as_such() -> None:
    result = calibrate([(0.2, True), (0.3, True)])
    assert result.threshold is None and result.needed == 268
    assert "2 verdicts, none at a similarity of 0.500 or more" in result.message
