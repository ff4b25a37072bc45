"""The learned ``p_wrong`` of the semantic decision (issue 22): its features, its cut, what
ships in decision.json, and that the cache serves with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import semcache
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
from tests.engines import ENGINES

ROOT = Path(__file__).resolve().parent.parent
DECISION = SemanticDecision()
LEARNED = DECISION.calibration.learned


def _feature(x: list[float], name: str) -> float:
    return x[FEATURES.index(name)]


def test_decision_json_ships_a_learned_p_wrong_trained_on_every_dev_split() -> None:
    doc = json.loads((ROOT / "semcache" / "guard" / "decision.json").read_text())
    for split in ("families_dev.json", "families_dev2.json", "families_dev3.json"):
        assert split in doc["trained_on"]
    assert "heldout" not in doc["trained_on"]
    learned = doc["learned"]
    assert learned["features"] == list(FEATURES)
    assert len(learned["weights"]) == len(learned["mean"]) == len(learned["scale"]) \
        == len(FEATURES)
    assert 0.0 < learned["threshold"] <= 1.0
    assert str(learned["l2"]) in learned["l2_cv_log_loss"]
    assert doc["default_floor"]["minilm"] == DEFAULT_THRESHOLDS["minilm"]
    assert LEARNED is not None and LEARNED.threshold == learned["threshold"]


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


def test_the_shipped_p_wrong_ranks_an_added_word_above_a_rewording() -> None:
    """Both pass every veto at the same cosine; the look-alike with a content word on one
    side only (a more specific question) is the likelier wrong answer."""
    assert LEARNED is not None
    rewording = LEARNED.p_wrong(features("longest river africa", "Africa's longest river?",
                                         0.9, []))
    added = LEARNED.p_wrong(features("Which freshwater lake covers the most area?",
                                     "Which lake covers the most area?", 0.9, []))
    assert rewording < added


class Planted:
    """Chosen vectors for chosen texts, to put candidates at known cosines."""

    name = "test-planted:v1"
    dim = 3

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = [self.vectors.get(t, [0.0, 0.0, 1.0]) for t in texts]
        out = np.asarray(rows, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _at(cosine: float) -> list[float]:
    return [cosine, float(np.sqrt(1.0 - cosine * cosine)), 0.0]


@pytest.mark.engines(*ENGINES)
def test_the_cache_reports_the_learned_p_wrong(location: str) -> None:
    """Through the real cache: a hit carries the learned p_wrong of its candidate, given the
    other candidates of the lookup (the rival-rule hook that rejects is covered by
    test_decision.py's rival tests; the cut by test_settle_serves_under_the_cut...)."""
    assert LEARNED is not None
    query, stored = "how do i sort a python list", "How do I sort a list in Python?"
    same = "sorting a list in python"
    embedder = Planted({query: [1.0, 0.0, 0.0], stored: _at(0.95), same: _at(0.93)})
    with semcache.open(location, embedder=embedder, similarity_threshold=0.8) as cache:
        cache.put(stored, "sorted(xs) or xs.sort()")
        cache.put(same, "sorted(xs) or xs.sort()")
        vectors = embedder.embed([query, stored, same])
        cos_stored = float(np.dot(vectors[0], vectors[1]))
        cos_same = float(np.dot(vectors[0], vectors[2]))
        expected = DECISION.settle(query, stored, cos_stored, [(same, cos_same, True)])
        assert expected.served
        hit = cache.get(query)
        assert hit is not None and hit.response == "sorted(xs) or xs.sort()"
        assert hit.prompt == stored
        assert hit.p_wrong == pytest.approx(expected.p_wrong, rel=1e-4)
        # the support of the second phrasing is part of it
        assert hit.p_wrong != pytest.approx(DECISION.settle(query, stored, cos_stored,
                                                            []).p_wrong, rel=1e-6)
