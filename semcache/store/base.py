"""The small interface between the cache facade and a storage engine.

The SQLite engine (``semcache.store.sqlite``) is the only one today; a PostgreSQL engine
(SPEC section 10) implements the same records and methods. The facade only ever sees
these types, never a driver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Expiry value in integer columns for "never expires" (fits SQLite and uint64 math).
NEVER = 1 << 62


def expires_to_int(expires_at: float | None) -> int:
    """Whole epoch seconds, rounded up, for integer expiry columns. Rounding up means a
    filter ``expires > floor(now)`` never drops an entry that is still valid."""
    return NEVER if expires_at is None else math.ceil(expires_at)


@dataclass(slots=True)
class NewEntry:
    """An entry about to be written (values already validated and encoded)."""

    key_hash: bytes
    namespace: str
    scope: str
    prompt: str | None
    response: bytes
    metadata: str | None
    tokens: int
    created_at: float
    expires_at: float | None
    ttl: float | None
    code: bytes | None = None
    vector: bytes | None = None


@dataclass(slots=True)
class EntryRow:
    """An entry as read back."""

    id: int
    namespace: str
    partition_id: int
    prompt: str | None
    response: bytes
    metadata: str | None
    tokens: int
    created_at: float
    accessed_at: float
    expires_at: float | None
    ttl: float | None
    hits: int
    vector: bytes | None = None

    def alive(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(slots=True)
class Changes:
    """What one committed write did to entries that have codes: the mirror replays it."""

    seq_before: int = 0
    seq_after: int = 0
    added: list[tuple[int, int, float | None, bytes]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    expires: list[tuple[int, float | None]] = field(default_factory=list)
    cleared: bool = False

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.expires or self.cleared)


@dataclass(slots=True)
class AccessUpdate:
    """Batched effect of hits on one entry (flushed later, under the write lock)."""

    accessed_at: float
    hits: int = 0
    expires_at: float | None = None  # new expiry when refresh-on-access pushed it out
