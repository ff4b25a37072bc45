"""The small interface between the cache facade and a storage engine.

The SQLite engine (``semcache.store.sqlite``) is the only one today; a PostgreSQL engine
(SPEC section 10) implements the same records and methods. The facade only ever sees
these types, never a driver.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    token_before: int = 0  # sync_state.state_token before / after (see migration 0002)
    token_after: int = 0
    data_version: int | None = None  # PRAGMA data_version inside the transaction
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


class StoreTxn(Protocol):
    """What the facade may do inside one write transaction."""

    changes: Changes

    def insert(self, entry: NewEntry) -> int: ...
    def delete_where(self, where: str, params: Sequence[Any] = ()) -> list[int]: ...
    def delete_ids(self, ids: Iterable[int]) -> list[int]: ...
    def clear_all(self) -> int: ...
    def purge_expired(self, now: float) -> int: ...
    def evict_lru(self, count: int) -> int: ...
    def entry_count(self) -> int: ...
    def apply_access(self, updates: dict[int, AccessUpdate]) -> None: ...
    def add_counters(self, deltas: dict[str, int]) -> None: ...


class Store(Protocol):
    """The storage engine interface the facade and the semantic index use.

    ``semcache.store.sqlite.SQLiteStore`` implements it; a PostgreSQL engine (SPEC
    section 10) would implement the same methods, with ``knn_sql`` as its search.
    """

    path: str
    readonly: bool
    settings: dict[str, str]

    def get_by_key(self, key_hash: bytes) -> EntryRow | None: ...
    def get_by_ids(self, ids: Sequence[int], *, with_vector: bool = False) -> list[EntryRow]: ...
    def find_partition(self, namespace: str, scope: str) -> int | None: ...
    def change_seq(self) -> int: ...
    def counters(self) -> dict[str, int]: ...
    def knn_sql(self, code: bytes, partition_id: int, now: float,
                k: int) -> list[tuple[int, int]]: ...
    def write(self, on_commit: Callable[[Changes], None] | None = None,
              timeout: float | None = None) -> AbstractContextManager[StoreTxn]: ...
    def write_settings(self, values: dict[str, str]) -> None: ...
    def close(self) -> None: ...
