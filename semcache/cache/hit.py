"""What a lookup returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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


__all__ = ["Hit", "HitKind"]
