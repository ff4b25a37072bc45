"""The learned ``p_wrong`` of the semantic decision (issue 22, round 4): its features and
``SemanticDecision.settle`` with and without it. It is measured, not shipped (docs/quality.md
"Round 4"): the shipped decision.json has no learned part and settles as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semcache.guard import SemanticDecision
from semcache.guard.decision import Calibration
from semcache.guard.features import (
    FEATURES,
    MARGIN_CAP,
    LearnedPrior,
    Other,
    features,
)
from semcache.settings import DEFAULT_THRESHOLDS

ROOT = Path(__file__).resolve().parent.parent
DECISION = SemanticDecision()
LEARNED = DECISION.calibration.learned


def _feature(x: list[float], name: str) -> float:
    return x[FEATURES.index(name)]


def test_the_shipped_decision_has_no_learned_part_and_settles_as_before() -> None:
    doc = json.loads((ROOT / "semcache" / "guard" / "decision.json").read_text())
    assert "learned" not in doc and LEARNED is None
    assert doc["default_floor"]["minilm"] == DEFAULT_THRESHOLDS["minilm"]
    cal = DECISION.calibration
    q, s = "Who founded Microsoft?", "Who was the founder of Microsoft?"
    verdict = DECISION.settle(q, s, 0.9, [("When was Microsoft founded?", 0.89, False)])
    assert verdict.served and verdict.p_wrong == pytest.approx(cal.served(0.9))


def test_a_learned_part_must_name_the_features_in_order() -> None:
    n = len(FEATURES)
    doc = {"features": list(FEATURES), "mean": [0.0] * n, "scale": [1.0] * n,
           "weights": [0.0] * n, "intercept": 0.0, "threshold": 1.0}
    assert LearnedPrior.from_doc(doc).p_wrong([1.0] * n) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="features"):
        LearnedPrior.from_doc({**doc, "features": list(reversed(FEATURES))})


def test_features_read_the_other_candidates() -> None:
    q, s = "Why is my fridge too cold?", "Why is my refrigerator too cold?"
    alone = features(q, s, 0.93, [])
    assert len(alone) == len(FEATURES)
    assert _feature(alone, "margin") == MARGIN_CAP  # no rival: the cap
    assert _feature(alone, "support") == 0.0
    crowded = features(q, s, 0.93, [Other(0.91, False), Other(0.90, True), Other(0.85, True),
                                    Other(0.80, False)])
    assert _feature(crowded, "margin") == pytest.approx(0.02)  # the closest other answer
    assert _feature(crowded, "support") == pytest.approx(np.log1p(1))  # within 0.05 only


def test_features_read_the_texts() -> None:
    same = features("How do I sort a list in Python?", "how do i sort a list in python", 0.97, [])
    assert _feature(same, "unmatched_count") == 0.0
    assert _feature(same, "unmatched_share") == 0.0
    added = features("How many black keys does a full piano have?",
                     "How many keys does a full piano have?", 0.95, [])
    assert _feature(added, "unmatched_query") == 1.0  # "black"
    assert _feature(added, "unmatched_stored") == 0.0
    soft = features("When was Git created?", "git creation", 0.85, [])
    assert _feature(soft, "soft_contrast") == 1.0  # a question kind on one side only
    assert _feature(features("When was Git created?", "when was git made", 0.9, []),
                    "soft_contrast") == 0.0


def _cosine_only(cut: float) -> SemanticDecision:
    """A decision whose learned part reads the cosine alone: p_wrong 0.5 at 0.9."""
    weights = tuple(-1.0 if name == "cosine" else 0.0 for name in FEATURES)
    mean = tuple(0.9 if name == "cosine" else 0.0 for name in FEATURES)
    scale = tuple(0.01 if name == "cosine" else 1.0 for name in FEATURES)
    return SemanticDecision(Calibration(0.0, 0.0, {"rival": 0.5}, "test",
                                        LearnedPrior(mean, scale, weights, 0.0, cut)))


def test_settle_serves_under_the_cut_and_rejects_from_it() -> None:
    decision = _cosine_only(0.3)
    q, s = "Who founded Microsoft?", "Who was the founder of Microsoft?"
    served = decision.settle(q, s, 0.92, [])
    assert served.served and served.p_wrong == pytest.approx(1 / (1 + np.exp(2.0)))
    rejected = decision.settle(q, s, 0.90, [])
    assert not rejected.served and rejected.reason == "uncertain"
    assert rejected.p_wrong == pytest.approx(0.5)
    # a rival with another answer that the decision would serve vetoes whatever p_wrong says
    rival = decision.settle(q, s, 0.95, [("Who founded Microsoft?", 0.94, False)])
    assert not rival.served and rival.reason == "rival"
    # the same answer is no rival
    assert decision.settle(q, s, 0.95, [("Who started Microsoft?", 0.94, True)]).served


def test_without_a_learned_part_settle_is_the_cosine_curve_and_the_rival_rule() -> None:
    cal = Calibration(5.0, -10.0, {"rival": 0.4}, "test")
    decision = SemanticDecision(cal)
    verdict = decision.settle("Who founded Microsoft?", "Who was the founder of Microsoft?",
                              0.6, [])
    assert verdict.served and verdict.p_wrong == pytest.approx(cal.served(0.6))
