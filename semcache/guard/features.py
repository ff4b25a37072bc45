"""The learned ``p_wrong`` of a candidate that every veto let through: a logistic regression
over a few cheap features of the query, the candidate's stored prompt and the other
candidates of the same lookup.

The vetoes (``semcache.guard.decision``) reject a candidate when one check finds a difference
that changes the answer. What they let through still differs in how sure it is: a cosine
just above the floor, another candidate with *another* answer almost as close, no other
candidate agreeing, content words without a counterpart on the other side, a question word
or quantifier on one side only (the checks veto only when both sides name one and they
differ). These are the features; their weights are fitted by ``scripts/train_decision.py``
on the development family streams (families as groups in the cross-validation that chooses
the L2 weight) and shipped in ``decision.json`` ("learned").

Everything is read from the two texts and the cosines the lookup already has: no model, no
embedder-specific state, about 0.1 ms (the text readings are memoized).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from semcache.guard.contrast import (
    Pair,
    check_modality,
    check_modifier,
    check_substitution,
    content,
)
from semcache.guard.text import analyze

#: The feature names, in the order of the weight vector.
FEATURES: tuple[str, ...] = (
    "cosine", "margin", "support", "unmatched_share", "unmatched_count", "alignment",
    "length_ratio", "soft_contrast", "one_sided_names", "one_sided_numbers", "near_veto",
    "unmatched_query", "unmatched_stored", "unmatched_both")
#: The margin to the closest candidate with another answer is capped here: beyond it the
#: rival is no look-alike (and a lookup without one gets the cap).
MARGIN_CAP = 0.10
#: Same-answer candidates count as support from this far below the candidate's cosine.
SUPPORT_WINDOW = 0.05


@dataclass(frozen=True, slots=True)
class Other:
    """Another candidate of the same lookup: its cosine and whether it holds the same answer
    (the same response bytes) as the candidate judged."""

    similarity: float
    same_answer: bool


def _one_sided(x: frozenset[str], y: frozenset[str]) -> bool:
    """Exactly one side names something of this kind (both naming different ones is a veto)."""
    return bool(x) != bool(y)


def _near_veto(pair: Pair) -> float:
    """How many of the alignment checks (modifier, substitution, modality) would fire if the
    two prompts were short and aligned enough for them: the rule families that nearly fired."""
    if pair.aligned:
        return 0.0  # they ran and let the pair through
    forced = replace(pair, short=True, ratio=1.0)
    return float(sum(check(forced) is not None
                     for check in (check_modifier, check_substitution, check_modality)))


def features(query: str, stored: str, similarity: float, others: Sequence[Other]) -> list[float]:
    """The feature vector of serving ``stored``'s answer for ``query`` (see :data:`FEATURES`)."""
    rival = max((o.similarity for o in others if not o.same_answer), default=None)
    margin = MARGIN_CAP if rival is None else min(MARGIN_CAP, max(0.0, similarity - rival))
    support = sum(1 for o in others
                  if o.same_answer and o.similarity >= similarity - SUPPORT_WINDOW)
    pair = Pair.of(query, stored)
    a, b = pair.a, pair.b
    only_q = sum(1 for w in pair.only_a if content(w))
    only_s = sum(1 for w in pair.only_b if content(w))
    unmatched = only_q + only_s
    words = max(1, len(a.words) + len(b.words))
    soft = sum(_one_sided(x, y) for x, y in (
        (a.questions, b.questions), (a.quantifiers, b.quantifiers), (a.modals, b.modals),
        (a.ordinals, b.ordinals), (a.comparisons, b.comparisons)))
    qa, sa = analyze(query), analyze(stored)
    return [
        similarity,
        margin,
        math.log1p(support),
        unmatched / words,
        float(min(unmatched, 6)),
        pair.ratio,
        abs(math.log((len(a.words) + 1) / (len(b.words) + 1))),
        float(soft),
        float(len(qa.names ^ sa.names) > 0),
        float(_one_sided(qa.numbers, sa.numbers)),
        _near_veto(pair),
        float(min(only_q, 4)),
        float(min(only_s, 4)),
        float(only_q > 0 and only_s > 0),
    ]


@dataclass(frozen=True, slots=True)
class LearnedPrior:
    """The fitted logistic regression (standardized features) and the default decision's
    cut: a candidate is served only when its ``p_wrong`` is below ``threshold``."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    threshold: float

    def p_wrong(self, x: Sequence[float]) -> float:
        z = self.intercept + sum(w * (v - m) / s for w, v, m, s
                                 in zip(self.weights, x, self.mean, self.scale, strict=True))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> LearnedPrior:
        if list(doc["features"]) != list(FEATURES):
            raise ValueError(f"decision.json 'learned' has features {doc['features']}, "
                             f"expected {list(FEATURES)}")
        return cls(tuple(map(float, doc["mean"])), tuple(map(float, doc["scale"])),
                   tuple(map(float, doc["weights"])), float(doc["intercept"]),
                   float(doc["threshold"]))


__all__ = ["FEATURES", "LearnedPrior", "Other", "features"]
