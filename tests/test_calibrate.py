"""Threshold calibration: curve, choice, the too-few-verdicts rule, JSONL parsing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from semcache.calibrate import (
    Observation,
    calibrate,
    compute_curve,
    format_curve,
    observations_from_pairs,
    parse_pairs_jsonl,
    plot_curve,
    verdicts_needed,
    wilson_upper,
)
from semcache.embedders import get_embedder, minilm_available
from semcache.errors import InvalidInputError, SemcacheError, ThresholdError
from semcache.guard import NearMissGuard

GRID = [round(0.80 + 0.01 * i, 2) for i in range(20)]


def test_wilson_bound_matches_the_closed_form_and_known_values() -> None:
    z = 1.6448536269514722  # one-sided 95%
    assert wilson_upper(0, 100) == pytest.approx(z * z / (100 + z * z))
    assert wilson_upper(0, 268) <= 0.01 < wilson_upper(0, 267)
    assert wilson_upper(5, 0) == 1.0
    # More verdicts at the same rate tighten the bound; a higher rate loosens it.
    assert wilson_upper(1, 100) > wilson_upper(10, 1000) > 0.01
    assert wilson_upper(2, 100) > wilson_upper(1, 100)


def test_verdicts_needed_is_the_first_count_under_the_target() -> None:
    assert verdicts_needed(0.0, 0) == 268
    assert verdicts_needed(0.0, 200) == 68
    assert verdicts_needed(0.0, 500) == 0
    assert verdicts_needed(0.02, 100) is None  # rate above the target: never
    more = verdicts_needed(0.002, 100)
    assert more is not None
    n = 100 + more
    assert wilson_upper(0.002 * n, n) <= 0.01 < wilson_upper(0.002 * (n - 1), n - 1)


def _constructed() -> list[Observation]:
    """400 right hits spread over [0.90, 1.0), 20 wrong ones all below 0.93."""
    obs = [Observation(0.90 + 0.1 * i / 400, True) for i in range(400)]
    obs += [Observation(0.85 + 0.08 * i / 20, False) for i in range(20)]
    return obs


def test_curve_counts_hits_wrong_and_recall_per_threshold() -> None:
    curve = {p.threshold: p for p in compute_curve(_constructed(), GRID)}
    p = curve[0.85]
    assert (p.hits, p.wrong) == (420, 20)
    assert p.wrong_rate == pytest.approx(20 / 420)
    assert p.recall == 1.0
    p = curve[0.93]
    assert p.wrong == 0
    assert p.hits == sum(1 for i in range(400) if 0.90 + 0.1 * i / 400 >= 0.93)
    assert p.recall == pytest.approx(p.hits / 400)
    assert curve[0.99].hits < curve[0.93].hits
    assert all(a.hits >= b.hits for a, b in zip(compute_curve(_constructed(), GRID),
                                                compute_curve(_constructed(), GRID)[1:],
                                                strict=False))


def test_calibrate_picks_the_lowest_threshold_whose_bound_is_under_the_target() -> None:
    cal = calibrate(_constructed(), target_wrong=0.01, thresholds=GRID)
    assert cal.decided
    assert cal.threshold == 0.93
    chosen = cal.point(0.93)
    assert chosen is not None and chosen.upper_bound <= 0.01
    below = cal.point(0.92)
    assert below is not None and below.upper_bound > 0.01
    assert "0.930" in cal.message
    # A looser target allows a lower threshold.
    loose = calibrate(_constructed(), target_wrong=0.05, thresholds=GRID)
    assert loose.threshold is not None and loose.threshold < 0.93


def test_tuples_and_observations_are_interchangeable() -> None:
    as_tuples = [(o.similarity, o.correct) for o in _constructed()]
    assert calibrate(as_tuples, thresholds=GRID).threshold == 0.93


def test_too_few_verdicts_decides_nothing_and_says_how_many_more() -> None:
    obs = [Observation(0.95, True)] * 50 + [Observation(0.85, False)] * 3
    cal = calibrate(obs, thresholds=GRID)
    assert not cal.decided and cal.threshold is None
    assert cal.candidate == 0.86  # the lowest threshold measuring 0 wrong
    assert cal.needed == 268 - 50
    assert "too few verdicts" in cal.message and "218 more" in cal.message


def test_rate_above_target_everywhere_says_more_verdicts_cannot_help() -> None:
    obs = [Observation(0.95, True)] * 50 + [Observation(0.99, False)] * 5
    cal = calibrate(obs, thresholds=GRID)
    assert cal.threshold is None and cal.needed is None
    assert "cannot lower it" in cal.message


def test_guarded_observations_are_never_hits() -> None:
    obs = _constructed()
    guarded = [Observation(o.similarity, o.correct, guarded=not o.correct) for o in obs]
    cal = calibrate(guarded, thresholds=GRID)
    assert cal.guarded == 20
    assert cal.point(0.85) is not None and cal.point(0.85).wrong == 0  # type: ignore[union-attr]
    assert cal.threshold is not None and cal.threshold < 0.93


def test_no_verdicts_at_all() -> None:
    cal = calibrate([], thresholds=GRID)
    assert cal.threshold is None and cal.observations == 0
    # the fewest that could decide: all right, all above the threshold (issue 20 item 15)
    assert cal.needed == verdicts_needed(0.0, 0) == 268
    assert "no verdicts yet" in cal.message and "feedback(" in cal.message


@pytest.mark.parametrize("target", [0, 1, -0.1, 1.5, float("nan")])
def test_bad_target_is_rejected(target: float) -> None:
    with pytest.raises(ThresholdError):
        calibrate(_constructed(), target_wrong=target)


def test_bad_inputs_raise_semcache_errors() -> None:
    with pytest.raises(ThresholdError):
        calibrate(_constructed(), thresholds=[0.9, 1.2])
    with pytest.raises(ThresholdError):
        calibrate(_constructed(), thresholds=[])
    with pytest.raises(InvalidInputError, match="not finite"):
        calibrate([(float("nan"), True)])
    with pytest.raises(InvalidInputError, match="confidence"):
        calibrate(_constructed(), confidence=1.0)


def test_format_curve_prints_rows_and_the_decision() -> None:
    cal = calibrate(_constructed(), thresholds=GRID)
    text = format_curve(cal)
    assert "threshold" in text.splitlines()[0]
    assert "<- chosen" in text
    assert text.splitlines()[-1] == cal.message


def test_plot_curve_writes_a_png(tmp_path: Path) -> None:
    out = plot_curve(calibrate(_constructed(), thresholds=GRID), tmp_path / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- JSONL --------------------------------------------------------------------------------


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_parse_pairs_reads_lines_and_skips_blanks(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        json.dumps({"query": "a?", "stored": "b?", "same": True}), "",
        json.dumps({"query": "c?", "stored": "d?", "same": False}),
    ])
    pairs = parse_pairs_jsonl(path)
    assert [(p.query, p.stored, p.same, p.line) for p in pairs] == [
        ("a?", "b?", True, 1), ("c?", "d?", False, 3)]
    assert parse_pairs_jsonl(path.read_text().splitlines()) == pairs


@pytest.mark.parametrize(("bad", "message"), [
    ("{not json", "line 2: not JSON"),
    ("[1, 2]", "line 2: expected an object, got list"),
    ('{"query": "", "stored": "x", "same": true}', "line 2: 'query' must be a non-empty string"),
    ('{"query": "q", "same": true}', "line 2: 'stored' must be a non-empty string"),
    ('{"query": "q", "stored": "x", "same": "yes"}', "line 2: 'same' must be true or false"),
    ('{"query": "q", "stored": "x", "same": 1}', "line 2: 'same' must be true or false"),
    ('{"query": "q", "stored": "x", "same": true, "extra": 1}', "line 2: unknown key 'extra'"),
])
def test_parse_errors_name_the_line(tmp_path: Path, bad: str, message: str) -> None:
    good = json.dumps({"query": "a", "stored": "b", "same": True})
    with pytest.raises(InvalidInputError, match=message) as info:
        parse_pairs_jsonl(_write(tmp_path, [good, bad]))
    assert isinstance(info.value, SemcacheError)


def test_parse_errors_for_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be read"):
        parse_pairs_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(InvalidInputError, match="no pair found"):
        parse_pairs_jsonl(_write(tmp_path, ["", "  "]))


class _TableEmbedder:
    """Fixed 2-D vectors by text: the cosine of each pair is known exactly."""

    name, dim = "table", 2

    def __init__(self, angles: dict[str, float]) -> None:
        self.angles = angles
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([[math.cos(self.angles[t]), math.sin(self.angles[t])] for t in texts])


def test_observations_from_pairs_embed_once_and_apply_the_guard(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        json.dumps({"query": "Enable 2FA", "stored": "Disable 2FA", "same": False}),
        json.dumps({"query": "Enable 2FA", "stored": "Turn on 2FA", "same": True}),
    ])
    angles = {"Enable 2FA": 0.0, "Disable 2FA": 0.2, "Turn on 2FA": 0.3}
    emb = _TableEmbedder(angles)
    pairs = parse_pairs_jsonl(path)
    obs = observations_from_pairs(pairs, emb)
    assert len(emb.calls) == 1 and sorted(emb.calls[0]) == sorted(angles)
    assert [round(o.similarity, 6) for o in obs] == [round(math.cos(0.2), 6),
                                                     round(math.cos(0.3), 6)]
    assert [o.guarded for o in obs] == [False, False]
    guarded = observations_from_pairs(pairs, emb, guard=NearMissGuard())
    assert [o.guarded for o in guarded] == [True, False]


@pytest.mark.minilm
@pytest.mark.skipif(not minilm_available(), reason="torch / sentence-transformers not installed")
def test_calibrating_labelled_pairs_with_minilm() -> None:
    root = Path(__file__).resolve().parent.parent / "benchmarks" / "data"
    rewordings = json.loads((root / "rewordings.json").read_text("utf-8"))["pairs"]
    hard = json.loads((root / "hard_negatives.json").read_text("utf-8"))["pairs"]
    lines = [json.dumps({"query": p["query"], "stored": p["stored"], "same": True})
             for p in rewordings]
    lines += [json.dumps({"query": p["query"], "stored": p["stored"], "same": False})
              for p in hard]
    pairs = parse_pairs_jsonl(lines)
    emb = get_embedder("minilm")
    plain = calibrate(observations_from_pairs(pairs, emb), target_wrong=0.05)
    guarded = calibrate(observations_from_pairs(pairs, emb, guard=NearMissGuard()),
                        target_wrong=0.05)
    # Without the guard the swapped/negated pairs score ~0.99: no threshold is safe with so
    # few verdicts; with it, the wrong verdicts are filtered and the curve says so.
    p_plain, p_guard = plain.point(0.92), guarded.point(0.92)
    assert p_plain is not None and p_guard is not None
    assert p_plain.wrong > 10
    assert p_guard.wrong <= 2
    assert guarded.guarded >= len(hard) - 2
