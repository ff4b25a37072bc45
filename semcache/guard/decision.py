"""The semantic decision: may a candidate's answer serve this query, and how likely is it to
be wrong?

A candidate reaches the decision when its cosine is at or above the floor
(``similarity_threshold``). It is rejected when its stored prompt differs from the query in
something that changes the answer - the near-miss guard's precise rules (opposite actions,
swapped direction, negation, a different number, unit or entity in the same place) and the
contrast checks of :mod:`semcache.guard.contrast` (question kind, quantifier, ordinal,
antonym, word order around a direction, an added modifier or a substituted word in two
aligned prompts...). Otherwise :meth:`SemanticDecision.settle` has the last word, given the
lookup's other candidates: no hit when a rival with another answer would be served too, else
served with ``p_wrong``, the probability that its answer is wrong: a logistic curve in the
cosine fitted by ``scripts/train_decision.py`` on the development family sets and shipped in
``decision.json``. That probability is what ``Hit.p_wrong`` reports and the error bound's
prior. A ``decision.json`` may also hold a learned ``p_wrong`` over several features
(:mod:`semcache.guard.features`, ``train_decision.py --learned``) and a cut on it; the shipped
one does not: measured by leaving one development split out, neither beat the cosine curve
(docs/quality.md, "Round 4").

Why rules that veto rather than a learned weighted sum: measured on the development stream,
a logistic regression over the same checks and the cosine served more wrong answers at every
hit rate than the checks used as vetoes (docs/quality.md): a high cosine outweighed a
detected contrast, which is exactly the mistake to avoid.

It reads only the texts and the cosines: no model, no network, the same verdict in every
process and with every embedder. English word lists; other languages get the number and name checks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from semcache.guard.contrast import CHECKS, Pair, same_thing
from semcache.guard.features import LearnedPrior, Other, features
from semcache.guard.flow import FLOW_CHECKS
from semcache.guard.rules import check_actions, check_direction, check_negation, check_opposites
from semcache.guard.text import Analysis, analyze, stem

#: A candidate is not served when another candidate with another answer, which the decision
#: would serve too, is at most this much less similar (measured on the development streams,
#: ``scripts/train_decision.py``: fewer wrong answers at every hit rate from 0.01 to 0.04).
RIVAL_MARGIN = 0.03

#: Every rejection reason, in the order the checks run.
DECISION_REASONS: tuple[str, ...] = (
    "opposite_action", "direction", "negation", "number", "unit", "entity",
    *(name for name, _ in CHECKS), *(name for name, _ in FLOW_CHECKS), "rival", "uncertain")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one candidate: ``reason`` is None when it may be served."""

    reason: str | None
    detail: str
    p_wrong: float

    @property
    def served(self) -> bool:
        return self.reason is None

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.reason else f"served (p_wrong {self.p_wrong:.3f})"


@dataclass(frozen=True, slots=True)
class Calibration:
    """``p_wrong`` of a served candidate as a function of its cosine, and of a rejected one
    by reason (both measured on the development stream)."""

    intercept: float
    slope: float
    rejected: dict[str, float]
    source: str
    #: The learned ``p_wrong`` over several features and the serving cut (None: the cosine
    #: curve alone, and no cut).
    learned: LearnedPrior | None = None

    def served(self, similarity: float) -> float:
        z = self.intercept + self.slope * similarity
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    @classmethod
    def load(cls) -> Calibration:
        doc: dict[str, Any] = json.loads(
            resources.files("semcache.guard").joinpath("decision.json").read_text("utf-8"))
        served = doc["served"]
        learned = LearnedPrior.from_doc(doc["learned"]) if "learned" in doc else None
        return cls(float(served["intercept"]), float(served["slope"]),
                   {k: float(v) for k, v in doc["rejected"].items()}, str(doc["trained_on"]),
                   learned)


def _mentions(a: Analysis, name: str) -> bool:
    """``a`` mentions ``name``: in any inflection, or abbreviated ("teen" / "teenager"); a
    one-letter change is another name ("Austria" / "Australia"), not a typo."""
    return (name in a.vocabulary or stem(name) in a.stems
            or any(same_thing(name, v) for v in a.vocabulary if len(v) >= 3))


def _entity_substitution(q: Analysis, s: Analysis) -> str | None:
    """A name on each side that the other side does not mention (an alias or abbreviation
    counts as a mention: "USA" / "United States", "teen" / "teenager")."""
    only_q = {n for n in q.names - s.names if not _mentions(s, n)}
    only_s = {n for n in s.names - q.names if not _mentions(q, n)}
    if only_q and only_s:
        return f"{', '.join(sorted(only_q))} vs {', '.join(sorted(only_s))}"
    return None


def _number_change(q: Analysis, s: Analysis) -> str | None:
    """Both prompts name numbers and they differ (a number on one side only is context)."""
    if q.numbers and s.numbers and q.numbers != s.numbers:
        return f"{', '.join(sorted(q.numbers))} vs {', '.join(sorted(s.numbers))}"
    return None


def _unit_change(q: Analysis, s: Analysis) -> str | None:
    """Both prompts name units and they differ ("tablespoons" / "teaspoons")."""
    if q.units and s.units and q.units != s.units:
        return f"{', '.join(sorted(q.units))} vs {', '.join(sorted(s.units))}"
    return None


def _guard_rules(q: Analysis, s: Analysis) -> tuple[str, str] | None:
    for verdict in (check_opposites(q, s), check_actions(q, s), check_direction(q, s),
                    check_negation(q, s)):
        if verdict is not None:
            return verdict
    for reason, rule in (("number", _number_change), ("unit", _unit_change),
                         ("entity", _entity_substitution)):
        detail = rule(q, s)
        if detail is not None:
            return reason, detail
    return None


class SemanticDecision:
    """Judges semantic candidates; see the module docstring. Stateless apart from the
    memoized text readings, so one instance serves every thread and namespace."""

    def __init__(self, calibration: Calibration | None = None) -> None:
        self.calibration = calibration or Calibration.load()

    def judge(self, query: str, stored: str, similarity: float) -> Verdict:
        """The verdict on serving ``stored``'s answer for ``query`` at this cosine."""
        if query == stored:
            return Verdict(None, "", self.calibration.served(similarity))
        found = _guard_rules(analyze(query), analyze(stored))
        if found is None:
            pair = Pair.of(query, stored)
            for name, check in (*CHECKS, *FLOW_CHECKS):
                detail = check(pair)
                if detail is not None:
                    found = (name, detail)
                    break
        if found is None:
            return Verdict(None, "", self.calibration.served(similarity))
        reason, detail = found
        return Verdict(reason, detail, self.calibration.rejected.get(reason, 1.0))

    def rival(self, query: str, similarity: float,
              rivals: Iterable[tuple[str, float]]) -> str | None:
        """Why the candidate served at ``similarity`` should not be, after all: one of the
        ``rivals`` (the stored prompts of the other candidates that hold *another* answer,
        with their cosines) is within :data:`RIVAL_MARGIN` of it and would be served too.
        The query then sits between look-alikes ("my soil is too acidic" between "make soil
        more acidic" and "make soil less acidic") and the cosine cannot tell which is meant.
        None = no such rival."""
        for prompt, sim in rivals:
            if sim >= similarity - RIVAL_MARGIN and self.judge(query, prompt, sim).served:
                return f"another answer at {sim:.3f} (served at {similarity:.3f})"
        return None

    def settle(self, query: str, stored: str, similarity: float,
               others: Sequence[tuple[str | None, float, bool]]) -> Verdict:
        """The last word on the candidate :meth:`judge` passed, given the ``others``
        candidates of the lookup (stored prompt or None, cosine, holds the same answer):
        rejected when a rival with another answer would be served too (:meth:`rival`), or
        when the learned ``p_wrong`` (:mod:`semcache.guard.features`) is at or above the
        shipped cut; else served with that ``p_wrong``."""
        rivals = [(p, s) for p, s, same in others if not same and p is not None]
        why = self.rival(query, similarity, rivals) if rivals else None
        learned = self.calibration.learned
        if learned is None:
            p = self.calibration.served(similarity)
            return Verdict("rival", why, self.calibration.rejected.get("rival", 1.0)) \
                if why else Verdict(None, "", p)
        p = learned.p_wrong(features(query, stored, similarity,
                                     [Other(s, same) for _, s, same in others]))
        if why:
            return Verdict("rival", why, max(p, self.calibration.rejected.get("rival", 1.0)))
        if p >= learned.threshold:
            return Verdict("uncertain", f"p_wrong {p:.3f} >= {learned.threshold}", p)
        return Verdict(None, "", p)

    def check(self, query: str, stored: str) -> Verdict | None:
        """The rejection of ``stored`` for ``query`` (None = no difference found), without a
        cosine: the shape of :meth:`NearMissGuard.check`."""
        verdict = self.judge(query, stored, 1.0)
        return None if verdict.served else verdict


__all__ = ["DECISION_REASONS", "RIVAL_MARGIN", "Calibration", "SemanticDecision", "Verdict"]
