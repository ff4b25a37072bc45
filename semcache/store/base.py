"""The engine interface: what the cache, the search layer, the CLI, verify and transfer
may ask of a storage engine, and the records that cross it.

Two engines implement :class:`Store`: SQLite (``semcache.store.sqlite``, one file) and
PostgreSQL (``semcache.store.postgres``, one schema). Nothing here names a driver: no
connection objects, no SQL fragments. Filters are typed (:class:`EntryFilter`), admin
operations are methods, and the engine owns its write serialization (:attr:`Store.lock`).

Engines that keep their codes where a process can map them (SQLite) also implement
:class:`LocalCodeSource`, which the search layer uses to keep a shared in-memory mirror of
the codes; the others search in the server (:meth:`Store.search`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

#: Expiry value in integer columns for "never expires" (fits SQLite and uint64 math).
NEVER = 1 << 62

#: How long the per-minute counters (:meth:`Store.counter_history`) are kept: 30 days.
SERIES_RETENTION_MINUTES = 30 * 24 * 60

#: Orders of :meth:`Store.list_entries`.
EntryOrder = Literal["id", "newest", "oldest", "hits", "accessed"]


def expires_to_int(expires_at: float | None) -> int:
    """Whole epoch seconds, rounded up, for integer expiry columns. Rounding up means a
    filter ``expires > floor(now)`` never drops an entry that is still valid."""
    return NEVER if expires_at is None else math.ceil(expires_at)


# -- records -------------------------------------------------------------------------------


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
    #: Exact-key material of a request entry (kept so an import can derive the key again).
    key_material: bytes | None = None
    #: Restored usage (import): last access time and hit count; None = a fresh entry.
    accessed_at: float | None = None
    hits: int = 0


@dataclass(slots=True)
class EntryRow:
    """An entry as the lookup path reads it back."""

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


@dataclass(slots=True)
class EntryRecord:
    """An entry with everything an operator or an export may want (admin reads)."""

    id: int
    key_hash: bytes
    namespace: str
    scope: str
    prompt: str | None
    response: bytes
    metadata: str | None
    tokens: int
    size: int
    created_at: float
    accessed_at: float
    expires_at: float | None
    ttl: float | None
    hits: int
    has_code: bool
    vector: bytes | None = None
    key_material: bytes | None = None


@dataclass(frozen=True, slots=True)
class NamespaceSummary:
    """One namespace as ``semcache stats`` shows it."""

    namespace: str
    entries: int
    expired: int
    hits: int
    bytes: int


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Which entries an admin read or delete applies to. Every field that is given
    narrows the selection (they combine with AND); an empty filter selects everything.

    ``expired_at``: entries whose expiry is at or before this time;
    ``live_at``: entries still valid at this time;
    ``created_before``: entries created before this time (``purge --older-than``);
    ``scoped``: True for entries stored by request (scope not empty), False for plain
    prompts.
    """

    namespace: str | None = None
    expired_at: float | None = None
    live_at: float | None = None
    created_before: float | None = None
    ids: tuple[int, ...] | None = None
    key_hash: bytes | None = None
    prompt: str | None = None
    scope: str | None = None
    scoped: bool | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A recorded judgement of a served hit (``Cache.feedback``)."""

    entry_id: int
    namespace: str
    query_hash: bytes | None
    kind: str
    similarity: float
    correct: bool
    created_at: float


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


# -- protocols ------------------------------------------------------------------------------


class StoreLock(Protocol):
    """The engine's write serialization, re-entrant within a process."""

    def acquire(self, timeout: float | None = None) -> bool:
        """Take it; False when ``timeout`` seconds (0 = don't wait) ran out."""
        ...

    def release(self) -> None: ...

    def hold(self, timeout: float | None = None) -> AbstractContextManager[None]:
        """Take it for a block; raises CacheFileError naming the lock on timeout."""
        ...


class StoreTxn(Protocol):
    """What may be done inside one write transaction (all of it commits, or none)."""

    changes: Changes

    def insert(self, entry: NewEntry) -> int:
        """Insert, replacing the entry with the same key; returns the new (larger) id."""
        ...

    def insert_many(self, entries: Sequence[NewEntry]) -> list[int]:
        """:meth:`insert` of each entry in order (a key given twice: the later one wins),
        batched; returns their ids."""
        ...

    def delete(self, where: EntryFilter) -> list[int]:
        """Delete the entries the filter selects; returns their ids."""
        ...

    def clear_all(self) -> int: ...
    def purge_expired(self, now: float) -> int: ...
    def evict_lru(self, count: int) -> int: ...
    def entry_count(self) -> int: ...
    def apply_access(self, updates: dict[int, AccessUpdate]) -> None: ...
    def add_counters(self, deltas: dict[str, int], at: float | None = None) -> None:
        """Add to the shared counters, and to their bucket of the minute ``at`` (epoch
        seconds; None: now), in this transaction. Buckets older than
        :data:`SERIES_RETENTION_MINUTES` are pruned by writers."""
        ...

    def set_settings(self, values: dict[str, str]) -> None: ...
    def add_settings(self, values: dict[str, str]) -> dict[str, str]:
        """Write the settings not stored yet (a stored value is kept, whoever wrote it);
        returns every stored setting as this transaction sees them."""
        ...

    def record_verdict(self, verdict: Verdict) -> None: ...
    def restore_verdicts(self, verdicts: Sequence[Verdict]) -> None:
        """Record exported verdicts; one already recorded (same namespace, query, kind,
        similarity, verdict and time: an import run again) is moved to the given entry
        instead of being recorded twice."""
        ...



class Store(Protocol):
    """A storage engine: one cache's entries, settings and shared counters."""

    #: Where the cache lives, as shown in messages: a file path or a URL without password.
    location: str
    readonly: bool
    #: The settings table (file-defining settings and stored tunables), as text.
    settings: dict[str, str]
    #: The incarnation token this process last read (settings ``incarnation``): ids read
    #: from the cache are valid only while it is the cache's (see check_incarnation).
    incarnation: str | None
    #: Called (no arguments, no database work) when check_incarnation finds a new token,
    #: after the store refreshed ``settings`` and dropped its own memos; it may raise.
    on_incarnation: Callable[[], None] | None

    @property
    def lock(self) -> StoreLock:
        """Serializes writers (a cross-process file lock for SQLite); readers never take it."""
        ...

    def check_incarnation(self, force: bool = False) -> bool:
        """True when the cache was replaced since the token was read (a file restored over
        by another cache, a schema dropped and created again): ``settings`` is then read
        again, the store's memos dropped and ``on_incarnation`` called. Cheap unless
        ``force``: SQLite reads the token only after another connection committed;
        PostgreSQL only when forced (its statements that use remembered ids check the
        token themselves and come back empty when it moved)."""
        ...

    # reads on the lookup path
    def get_by_key(self, key_hash: bytes) -> EntryRow | None: ...
    def get_by_ids(self, ids: Sequence[int], *, with_vector: bool = False) -> list[EntryRow]: ...
    def find_partition(self, namespace: str, scope: str) -> int | None: ...
    def search(self, code: bytes, vector: np.ndarray, partition_id: int, now: float,
               k: int) -> list[tuple[EntryRow, float]]:
        """The ``k`` nearest unexpired entries of the partition by Hamming distance of
        their codes, rescored by exact cosine of their stored vectors with ``vector``
        (a unit float32 vector), best first. Rows carry no vector."""
        ...

    def blocked_entries(self, query_hash: bytes) -> set[int]:
        """Ids of entries judged wrong for this query (never served for it again)."""
        ...

    def verdicts(self, namespace: str | None = None) -> list[Verdict]: ...
    def counters(self) -> dict[str, int]: ...
    def counter_history(self, since_minute: int, step: int) -> list[tuple[int, str, int]]:
        """The counters added since minute ``since_minute`` (epoch seconds // 60), summed
        over every process, in buckets of ``step`` minutes aligned on multiples of
        ``step``: ``(first minute of the bucket, counter name, total)``, unordered."""
        ...

    def size_bytes(self) -> int:
        """Bytes the cache occupies (file + WAL, or the schema's relations)."""
        ...

    # admin reads
    def count_entries(self, where: EntryFilter) -> int: ...
    def list_entries(self, where: EntryFilter, *, order: EntryOrder = "id",
                     limit: int | None = None, after_id: int | None = None,
                     with_vector: bool = False) -> list[EntryRecord]: ...
    def namespace_summary(self, now: float) -> list[NamespaceSummary]: ...
    def partitions(self, namespace: str) -> list[tuple[int, str]]:
        """(partition id, scope) of every partition of a namespace."""
        ...

    def check(self, *, quick: bool = False) -> tuple[dict[str, Any], list[str]]:
        """Engine-level integrity report and the problems found (``semcache verify``)."""
        ...

    # writes
    def write(self, on_commit: Callable[[Changes], None] | None = None,
              timeout: float | None = None) -> AbstractContextManager[StoreTxn]: ...

    # coalescing of identical misses (what Cache.claim builds on)
    def claim(self, key_hash: bytes, lease: float) -> bool:
        """Try to become the one caller fetching ``key_hash`` (across processes and hosts
        that share this cache); never waits. A holder that dies frees it within ``lease``."""
        ...

    def release(self, key_hash: bytes) -> None: ...
    def write_settings(self, values: dict[str, str]) -> None: ...
    def pin_settings(self, values: dict[str, str]) -> dict[str, str]:
        """Decide settings once for every process: in one write transaction, write those
        not stored yet and return what is stored (another first open may have won)."""
        ...

    def vacuum(self) -> dict[str, int]:
        """Repair derived tables after hand-made changes and compact storage."""
        ...

    def close(self) -> None: ...


def accept_incarnation(store: Store, token: str | None, settings: dict[str, str]) -> None:
    """Take a new incarnation of the cache: its token and settings, then the store's
    ``on_incarnation``; if that refuses it (raises), the store keeps the old ones, so that
    the next check finds the change again and refuses again."""
    old = store.incarnation, store.settings
    store.incarnation, store.settings = token, settings
    try:
        if store.on_incarnation is not None:
            store.on_incarnation()
    except BaseException:
        store.incarnation, store.settings = old
        raise



@runtime_checkable
class LocalCodeSource(Store, Protocol):
    """An engine whose codes the search layer mirrors in a shared mapped file."""

    mirror_path: str

    def change_seq(self) -> int: ...
    def sync_state(self) -> tuple[int, int]:
        """``(change_seq, state_token)``: the exact state a mirror must match."""
        ...

    def data_version(self) -> int:
        """A number that changes whenever another connection commits (cheap to read)."""
        ...

    def code_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
        """(ids int64, partitions int32, expires float64 NaN=never, codes (n, 32) uint8,
        change_seq, state_token), every entry that has a code, in id order, from one
        snapshot."""
        ...
    def knn(self, code: bytes, partition_id: int, now: float,
            k: int) -> list[tuple[int, int]]:
        """(entry id, Hamming distance) of the k nearest codes, searched by the engine."""
        ...

    def check_code_index(self, code_rows: tuple[Any, ...]) -> tuple[dict[str, Any], list[str]]:
        """The engine's own code index (SQLite: the vec0 table) against ``code_rows``."""
        ...

    @property
    def codes_pending(self) -> bool:
        """True when entries this process wrote may not be in the engine's index yet."""
        ...

    def catch_up_codes(self, limit: int | None = None, timeout: float | None = 0.0) -> int:
        """Index up to ``limit`` pending entries if the write lock is free within
        ``timeout`` s; returns how many (the engine's search covers pending ones anyway)."""
        ...

