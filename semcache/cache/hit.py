"""What a lookup returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from semcache.errors import InvalidInputError
from semcache.validation import check_entry_id, check_prompt

#: Which tier answered: the exact key, or a semantic (paraphrase) match.
HitKind = Literal["exact", "semantic"]


@dataclass(slots=True)
class Hit:
    """A cached answer.

    ``similarity`` is 1.0 for exact hits and the cosine of the query and the entry's
    stored vector for semantic ones. ``prompt`` is the stored prompt (None when the cache
    keeps only hashes). ``query`` is the text that was looked up, when there was one:
    :meth:`semcache.Cache.feedback` uses it to remember a wrong (query, entry) pair.
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


def verdict_subject(hit: Hit | int, query: str | None,
                     similarity: float | None) -> tuple[int, str, float, str | None]:
    """(entry id, kind, similarity, query text) of a feedback call."""
    if isinstance(hit, Hit):
        text = query if query is not None else hit.query
        return hit.entry_id, hit.kind, float(hit.similarity), text
    entry_id = check_entry_id(hit)
    text = None if query is None else check_prompt(query, "query")
    if similarity is not None and not (isinstance(similarity, (int, float))
                                       and -1.0 <= similarity <= 1.0):
        raise InvalidInputError(f"similarity must be a cosine in [-1, 1]; got {similarity!r}")
    return entry_id, "semantic", 0.0 if similarity is None else float(similarity), text



__all__ = ["Hit", "HitKind", "verdict_subject"]
