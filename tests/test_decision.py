"""The semantic decision (issue 22): each contrast check rejects its kind of look-alike,
rewordings pass, verdicts are deterministic, p_wrong is calibrated and reaches the Hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import semcache
from semcache.guard import DECISION_REASONS, SemanticDecision
from semcache.guard.decision import Calibration
from semcache.settings import COSINE_ONLY_THRESHOLDS, DEFAULT_THRESHOLDS
from tests.engines import ENGINES

ROOT = Path(__file__).resolve().parent.parent
DECISION = SemanticDecision()


@pytest.mark.parametrize(("query", "stored", "reason"), [
    ("When was Git created?", "Who created Git?", "question"),
    ("Where was Marie Curie born?", "When was Marie Curie born?", "question"),
    ("Are all wild mushrooms safe to eat?", "Are any wild mushrooms safe to eat?", "quantifier"),
    ("What is the probability that all three coins land heads?",
     "What is the probability that at least one of three coins lands heads?", "number"),
    ("Should I drink alcohol while taking antibiotics?",
     "Can I drink alcohol while taking antibiotics?", "modality"),
    ("Who was the second person to walk on the Moon?",
     "Who was the last person to walk on the Moon?", "ordinal"),
    ("How do I find the second highest salary in SQL?",
     "How do I find the highest salary in SQL?", "ordinal_added"),
    ("I just signed up for my first half marathon, how far is it?",
     "I just signed up for my first marathon, how far is it?", "modifier"),
    ("What is the deadline to file my taxes?", "What is the deadline to pay my taxes?",
     "substitution"),
    ("What is the water to rice ratio for brown rice?",
     "What is the water to rice ratio for white rice?", "entity"),
    ("How do you castle kingside in chess?", "How do you castle queenside in chess?",
     "prefix"),
    ("str -> int conversion in Python?", "int -> str conversion in Python?", "order"),
    ("Can I use honey instead of sugar?", "Can I use sugar instead of honey?", "order"),
    ("driving on overinflated tyres - whats the harm",
     "driving on underinflated tyres - whats the harm", "prefix"),
    ("if i give my son 20k do i owe tax on it", "if my dad gives me 20k do i owe tax on it",
     "person"),
    ("regex anything except digits", "regex digits only", "negation"),
    ("find files larger than 100 MB", "find files under 100 MB", "comparison"),
    ("When does the post office shut?", "When does the post office open?", "antonym"),
    ("What time is check-out at most hotels?", "What time is check-in at most hotels?",
     "substitution"),
    ("Why is my fridge too cold?", "Why is my fridge cold enough?", "antonym"),
    ("How do I disable two-factor authentication?",
     "How do I enable two-factor authentication?", "opposite_action"),
    ("What's new in Python 3.11?", "What's new in Python 3.12?", "number"),
    ("How many tablespoons in a cup?", "How many teaspoons in a cup?", "unit"),
    ("What is the capital of Austria?", "What is the capital of Australia?", "entity"),
    # the same things moving the other way around relation markers, multi-word names too
    ("move pictures from my windows computer onto my iphone",
     "move pictures off my iphone onto my windows computer", "flow"),
    ("iphone photos to pc", "Getting pics from a PC onto an iPhone - how?", "flow"),
    ("Can I paint latex over oil-based paint?", "Can I paint oil-based paint over latex?",
     "flow"),
    ("oil paint over latex paint ok?", "latex paint over oil paint ok?", "order"),
    ("Africa's second highest summit?", "Africa's highest summit?", "rank"),
    ("language with the 2nd most mother tongue speakers",
     "language with most mother tongue speakers", "rank"),
    ("Why do cats purr?", "How do cats purr?", "question"),
    ("start date of WWII", "start date of WWI", "entity"),
    ("Is every square a rectangle?", "Is every rectangle a square?", "order"),
    ("My baby has a cough but no fever", "My baby has a fever but no cough", "order"),
    ("What causes a migraine?", "What does a migraine cause?", "roles"),
])
def test_each_check_rejects_its_kind_of_look_alike(query: str, stored: str,
                                                   reason: str) -> None:
    verdict = DECISION.judge(query, stored, 0.95)
    assert not verdict.served
    assert verdict.reason == reason, str(verdict)
    assert verdict.reason in DECISION_REASONS
    # symmetric: the same difference seen from the other side
    assert not DECISION.judge(stored, query, 0.95).served


@pytest.mark.parametrize(("query", "stored"), [
    ("How can I turn on two-factor authentication?", "How do I enable two-factor authentication?"),
    ("Give me a pancake recipe for two people.", "Give me a pancake recipe for 2 people."),
    ("Why is my refrigerator too cold?", "Why is my fridge too cold?"),
    ("How do I upload a file to S3 using boto3?", "How do I upload a file to S3 with boto3?"),
    ("einstein birthday?", "When was Albert Einstein born?"),
    ("what year did einstien die", "What year did Einstein die?"),
    ("Who was the founder of Microsoft?", "Who founded Microsoft?"),
    ("sort a list in descending order python", "How do I sort a list in descending order in Python?"),
    ("Hugging Face Hub serves as a repository for Git-based models, datasets, and Spaces.",
     "Hugging Face Hub is a platform to host Git-based models, datasets, and Spaces."),
    # the same direction in other words; a reordering without a relation marker
    ("copy photos from my iphone to my pc", "iphone to pc photo transfer"),
    ("latex over oil based paint?", "Can I paint latex over oil-based paint?"),
    ("longest river africa", "Africa's longest river?"),
    ("How do I pay off my credit card faster?", "fastest way to pay off a credit card"),
    ("How do cats purr?", "how does a cat purr"),
    ("git undo last commit keep changes",
     "How do I undo the last git commit but keep my changes?"),
    ("What causes acne?", "what causes pimples and acne"),
])
def test_rewordings_are_served(query: str, stored: str) -> None:
    verdict = DECISION.judge(query, stored, 0.9)
    assert verdict.served, str(verdict)
    assert 0.0 < verdict.p_wrong < 1.0


def test_identical_texts_always_pass() -> None:
    text = "When was Git created?"
    assert DECISION.judge(text, text, 1.0).served
    assert DECISION.check(text, text) is None


def test_check_has_the_shape_of_the_near_miss_guard() -> None:
    """``check`` returns None or a rejection naming its reason, as NearMissGuard.check does
    (``semcache calibrate --pairs`` and quality_guard.py call it that way)."""
    assert DECISION.check("Who created Git?", "Who made Git?") is None
    rejection = DECISION.check("Who created Git?", "When was Git created?")
    assert rejection is not None and str(rejection).startswith("question: ")


def test_p_wrong_is_calibrated_on_dev_and_falls_with_similarity() -> None:
    doc = json.loads((ROOT / "semcache" / "guard" / "decision.json").read_text())
    assert "families_dev.json" in doc["trained_on"] and "families_dev2.json" in doc["trained_on"]
    assert "heldout" not in doc["trained_on"]
    assert doc["default_floor"]["minilm"] == DEFAULT_THRESHOLDS["minilm"]
    cal = Calibration.load()
    values = [cal.served(s) for s in (0.80, 0.85, 0.90, 0.95, 1.0)]
    assert values == sorted(values, reverse=True) and all(0.0 < v < 1.0 for v in values)
    # a rejection is more likely wrong than a served candidate at the floor
    assert min(cal.rejected.values()) > cal.served(DEFAULT_THRESHOLDS["minilm"])


def test_verdicts_do_not_depend_on_the_hash_seed() -> None:
    code = ("from semcache.guard import SemanticDecision\n"
            "d = SemanticDecision()\n"
            "pairs = [('When was Git created?', 'Who created Git?'),\n"
            "         ('Can I use honey instead of sugar?', 'Can I use sugar instead of honey?'),\n"
            "         ('How can I turn on 2FA?', 'How do I enable 2FA?')]\n"
            "print([str(d.judge(a, b, 0.9)) for a, b in pairs])\n")
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True, cwd=ROOT)
        outputs.add(run.stdout)
    assert len(outputs) == 1


class SameVector:
    """Every text gets the same vector: every stored prompt is a cosine-1.0 candidate."""

    name = "test-same:v1"
    dim = 8

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.tile(np.ones(self.dim, dtype=np.float32) / np.sqrt(self.dim), (len(texts), 1))


@pytest.mark.engines(*ENGINES)
def test_hits_carry_p_wrong(location: str) -> None:
    with semcache.open(location, embedder=SameVector()) as cache:
        cache.put("When was Git created?", "April 2005")
        cache.put("Who created Git?", "Linus Torvalds")
        exact = cache.get("Who created Git?")
        assert exact is not None and exact.kind == "exact" and exact.p_wrong is None
        hit = cache.get("who made git")
        assert hit is not None and hit.response == "Linus Torvalds"
        assert hit.p_wrong is not None and 0.0 < hit.p_wrong < 1.0
        assert hit.p_wrong == pytest.approx(Calibration.load().served(hit.similarity))
        assert cache.get("what year did git come out") is not None  # "when" vs "what year"
        assert cache.get("Where was Git created?") is None  # place vs time, person
    with semcache.open(location, embedder=SameVector(), guard=False) as cache:
        hit = cache.get("Where was Git created?")
        assert hit is not None and hit.p_wrong is None  # the cosine alone decided


def test_the_default_floor_depends_on_the_decision(tmp_path: Path) -> None:
    """With the decision on, MiniLM's default floor is lower than for the cosine alone."""
    assert DEFAULT_THRESHOLDS["minilm"] < COSINE_ONLY_THRESHOLDS["minilm"]
    with semcache.open(tmp_path / "a.db", embedder="minilm") as cache:
        assert cache.settings["similarity_threshold"] == DEFAULT_THRESHOLDS["minilm"]
    with semcache.open(tmp_path / "b.db", embedder="minilm", guard=False) as cache:
        assert cache.settings["similarity_threshold"] == COSINE_ONLY_THRESHOLDS["minilm"]
    with semcache.open(tmp_path / "c.db", embedder="minilm", guard=False,
                       similarity_threshold=0.8) as cache:
        assert cache.settings["similarity_threshold"] == 0.8  # an explicit floor wins


class Planted:
    """Chosen vectors for chosen texts (others: a fixed unrelated vector), to put candidates
    at known cosines from a query."""

    name = "test-planted:v1"
    dim = 3

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = [self.vectors.get(t, [0.0, 0.0, 1.0]) for t in texts]
        out = np.asarray(rows, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _at(cosine: float, side: float = 1.0) -> list[float]:
    """A unit vector at ``cosine`` from (1, 0, 0), on one side or the other."""
    return [cosine, side * float(np.sqrt(1.0 - cosine * cosine)), 0.0]


QUERY = "my garden soil is too acidic, how do i fix it"


@pytest.mark.engines(*ENGINES)
def test_a_rival_with_another_answer_means_no_hit(location: str) -> None:
    """The query sits between two look-alikes that the decision would both serve: the cosine
    cannot tell which is meant, so neither is served (a rejection is counted)."""
    embedder = Planted({QUERY: [1.0, 0.0, 0.0], "make soil more acidic": _at(0.90),
                        "make soil less acidic": _at(0.89, -1.0)})
    with semcache.open(location, embedder=embedder, similarity_threshold=0.8) as cache:
        cache.put("make soil more acidic", "Add sulfur or peat.")
        cache.put("make soil less acidic", "Add garden lime.")
        assert DECISION.judge(QUERY, "make soil more acidic", 0.90).served  # each alone
        assert DECISION.judge(QUERY, "make soil less acidic", 0.89).served  # would be served
        before = cache.stats()["guard_rejections"]
        assert cache.get(QUERY) is None
        assert cache.stats()["guard_rejections"] == before + 1
    with semcache.open(location, embedder=embedder, guard=False,
                       similarity_threshold=0.8) as cache:
        hit = cache.get(QUERY)  # the cosine alone serves the closest
        assert hit is not None and hit.response == "Add sulfur or peat."


@pytest.mark.engines(*ENGINES)
def test_rivals_that_are_far_or_hold_the_same_answer_do_not_block(location: str) -> None:
    far = Planted({QUERY: [1.0, 0.0, 0.0], "make soil more acidic": _at(0.95),
                   "make soil less acidic": _at(0.85, -1.0)})
    with semcache.open(location, embedder=far, similarity_threshold=0.8) as cache:
        cache.put("make soil more acidic", "Add sulfur or peat.")
        cache.put("make soil less acidic", "Add garden lime.")
        hit = cache.get(QUERY)  # 0.10 apart: the closer one is clearly meant
        assert hit is not None and hit.response == "Add sulfur or peat."
    same = Planted({QUERY: [1.0, 0.0, 0.0], "how do I lower soil acidity": _at(0.90),
                    "make soil less acidic": _at(0.89, -1.0)})
    with semcache.open(location, embedder=same, similarity_threshold=0.8,
                       namespace="same") as cache:
        cache.put("how do I lower soil acidity", "Add garden lime.")
        cache.put("make soil less acidic", "Add garden lime.")
        hit = cache.get(QUERY)  # two phrasings of one answer support each other
        assert hit is not None and hit.response == "Add garden lime."


@pytest.mark.engines(*ENGINES)
def test_a_rival_below_the_floor_still_blocks(location: str) -> None:
    """choose() hands the rival rule every other alive candidate, those under the floor
    too: a look-alike with another answer just below the floor, within the rival margin
    of the one chosen, still means no hit; raise it out of the margin and the chosen one
    is served."""
    near = Planted({QUERY: [1.0, 0.0, 0.0], "make soil more acidic": _at(0.905),
                    "make soil less acidic": _at(0.89, -1.0)})
    with semcache.open(location, embedder=near, similarity_threshold=0.9) as cache:
        cache.put("make soil more acidic", "Add sulfur or peat.")
        cache.put("make soil less acidic", "Add garden lime.")
        assert DECISION.judge(QUERY, "make soil less acidic", 0.89).served
        assert cache.get(QUERY) is None
    apart = Planted({QUERY: [1.0, 0.0, 0.0], "make soil more acidic": _at(0.905),
                     "make soil less acidic": _at(0.86, -1.0)})
    with semcache.open(location, embedder=apart, similarity_threshold=0.9,
                       namespace="apart") as cache:
        cache.put("make soil more acidic", "Add sulfur or peat.")
        cache.put("make soil less acidic", "Add garden lime.")
        hit = cache.get(QUERY)  # 0.045 apart: outside the margin
        assert hit is not None and hit.response == "Add sulfur or peat."
