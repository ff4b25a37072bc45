"""kill -9 of a writer at random instants: the file opens, passes integrity_check, the mirror
agrees (or is rebuilt), and every acknowledged put is there (scripts/stress.py does the work
in real processes; the full loop of >= 100 kills is the slow test and the script itself)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.stress.stress_helpers import run_stress


def _assert_clean(kill: dict[str, Any], kills: int) -> None:
    assert kill["failures"] == []
    assert kill["kills"] == kills
    assert kill["open_errors"] == 0
    assert kill["integrity_failures"] == 0
    assert kill["vec0_disagreements"] == 0
    assert kill["mirror_bad_after_search"] == 0
    assert kill["lost"] == 0
    assert kill["resurrected"] == 0
    assert kill["wrong_values"] == 0
    assert kill["semantic_misses"] == 0
    assert kill["acked_puts"] > kills  # the writer really worked between kills
    assert kill["ok"]


def test_writer_killed_at_random_instants(tmp_path):
    report = run_stress("kill", "--kills", "12", "--seed", "7", "--workdir", str(tmp_path))
    _assert_clean(report["kill"], 12)
    assert report["ok"]


@pytest.mark.slow
def test_writer_killed_100_times(tmp_path):
    report = run_stress("kill", "--kills", "100", "--seed", "11", "--workdir", str(tmp_path),
                        timeout=3600)
    _assert_clean(report["kill"], 100)
