"""N processes, one file, a mixed load: nothing escapes, no "database is locked", every
acknowledged put is readable by a fresh process afterwards, and the shared counters add up."""

from __future__ import annotations

import pytest

from tests.stress.stress_helpers import run_stress


@pytest.mark.parametrize("procs", [4, 8])
def test_mixed_load(tmp_path, procs):
    report = run_stress("mixed", "--procs", str(procs), "--seconds", "3", "--seed", str(procs),
                        "--workdir", str(tmp_path))
    (mixed,) = report["mixed"]
    assert mixed["errors"] == []
    assert mixed["exceptions_escaped"] == 0
    assert mixed["database_locked_seen"] == 0
    assert mixed["exitcodes"] == [0] * procs
    assert mixed["operations"] > 10 * procs
    assert mixed["counts"]["puts"] > 0 and mixed["counts"]["hits"] > 0
    assert mixed["counts"]["deletes"] > 0
    assert mixed["missing_after"] == 0
    assert mixed["resurrected"] == 0
    for name, pair in mixed["counters"].items():
        assert pair["file"] == pair["expected"], name
    assert mixed["verify_ok"]


@pytest.mark.slow
def test_mixed_load_long(tmp_path):
    report = run_stress("mixed", "--procs", "4", "8", "--seconds", "30",
                        "--workdir", str(tmp_path), timeout=3600)
    assert report["ok"], report


def test_corruption_fuzz_short(tmp_path):
    report = run_stress("corrupt", "--trials", "40", "--seed", "3", "--workdir", str(tmp_path))
    corrupt = report["corrupt"]
    assert corrupt["raw_exceptions"] == {}
    assert corrupt["outcomes"]["raw"] == 0
    assert corrupt["errors_not_naming_path"] == 0
    assert corrupt["outcomes"]["refused_at_open"] + corrupt["outcomes"]["raised_later"] > 0
