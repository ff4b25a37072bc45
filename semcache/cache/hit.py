"""What a lookup returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: Which tier answered: the exact key, or a semantic (paraphrase) match.
HitKind = Literal["exact", "semantic"]
#: What decided to serve it: the exact key, the threshold (and the semantic decision), or
#: the error bound (``open(..., error_bound=)``).
Decision = Literal["exact", "threshold", "bound"]


@dataclass(slots=True)
class Hit:
    """A cached answer.

    ``similarity`` is 1.0 for exact hits and the cosine of the query and the entry's
    stored vector for semantic ones. ``prompt`` is the stored prompt (None when the cache
    keeps only hashes). ``query`` is the text that was looked up, when there was one:
    :meth:`semcache.Cache.feedback` uses it to remember a wrong (query, entry) pair.
    ``p_wrong`` is the semantic decision's estimate that the answer is wrong for this query
    (``semcache.guard.SemanticDecision``, calibrated on the project's development set); None
    for exact hits and for semantic hits decided by the cosine alone (``guard=False``,
    vector lookups, entries stored without their prompt). ``decision`` says what served
    it: "exact", "threshold" or "bound"; under an error bound ``p_wrong`` is the bound's
    estimate, corrected by the namespace's and the entry's verified outcomes.
    """

    response: Any
    kind: HitKind
    similarity: float
    entry_id: int
    namespace: str
    created_at: float
    expires_at: float | None
    prompt: str | None = None
    metadata: dict[str, Any] | None = None
    tokens: int = 0
    scope: str = ""
    query: str | None = None
    p_wrong: float | None = None
    decision: Decision = "threshold"


__all__ = ["Decision", "Hit", "HitKind"]
