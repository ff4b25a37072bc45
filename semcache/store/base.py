"""The engine interface: what the cache (and ``semcache.verify``) may ask of a storage
engine, and the records that cross it.

Two engines implement :class:`Store`, each whole in its own package: SQLite
(``semcache.store.sqlite``: one file, its write lock, its code mirror and sqlite-vec table)
and PostgreSQL (``semcache.store.postgres``: one schema). Nothing here names a driver: no
connection objects, no SQL fragments. Filters are typed (:class:`EntryFilter`), admin
operations are methods, and each engine owns its write serialization (:attr:`Store.lock`),
its search (:meth:`Store.nearest`), its derived data and its integrity checks
(:meth:`Store.check`). ``tests/test_store_contract.py`` holds both engines to this protocol.

Where new engine state goes (one place per engine): a numbered migration file (SQLite:
``semcache/migrations/``, PostgreSQL: ``semcache/store/postgres/migrations/``), the
statements in the engine's write transaction (``store/sqlite/write.py``,
``store/postgres/txn.py``) and admin reads (``store/sqlite/store.py``,
``store/postgres/store.py``), a method here, and its tests in the contract suite. Per
namespace values live in the settings table (``threshold:<namespace>``, read with
:attr:`Store.settings`, written with :meth:`Store.write_settings`); per-entry judgements
in ``feedback`` (:class:`Verdict`) and ``outcomes`` (:class:`Outcome`, with their
namespace pools in ``outcome_pools``); counters in ``counters`` (:meth:`StoreTxn.add_counters`,
the one place every shared count is written).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from semcache.errors import CacheFileError

#: How long the per-minute counters (:meth:`Store.counter_history`) are kept: 30 days.
SERIES_RETENTION_MINUTES = 30 * 24 * 60

#: ``progress(step, done, steps)`` of a vacuum: called as each step starts (``done`` steps
#: finished out of ``steps``) and once at the end (``done == steps``).
VacuumProgress = Callable[[str, int, int], None]

#: Orders of :meth:`Store.list_entries`.
EntryOrder = Literal["id", "newest", "oldest", "hits", "accessed"]


class WriteConflict(CacheFileError):
    """A write transaction the server aborted to let a concurrent one through (PostgreSQL:
    chosen as a deadlock's victim, or a serialization failure). Nothing of it was written,
    so running the same work again in a new transaction is safe: puts and imports are run
    again a few times before the error reaches the caller (``Writer.run``); other writes
    (delete, clear, feedback, the batched hits) fail with it, asking to retry."""


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


#: Bytes counted for each entry besides its values: the fixed-width columns (id, partition,
#: tokens, created / accessed / expiry times, ttl, hits, the per-entry outcome counts).
ENTRY_FIXED_BYTES = 64


def entry_size(e: NewEntry) -> int:
    """What an entry occupies, as ``stats()["bytes"]`` and ``max_bytes`` count it: its
    fixed-width columns (:data:`ENTRY_FIXED_BYTES`), key hash, key material, namespace,
    prompt and metadata (UTF-8), response (compressed, as stored), float vector and code.
    Each engine's migration 0009 computes the same sum in SQL (docs/operations.md, "Sizing")."""
    return (ENTRY_FIXED_BYTES + len(e.key_hash) + len(e.key_material or b"")
            + len(e.namespace.encode()) + (len(e.prompt.encode()) if e.prompt else 0)
            + len(e.response) + (len(e.metadata.encode()) if e.metadata else 0)
            + len(e.vector or b"") + len(e.code or b""))


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


#: How many outcomes each entry keeps (the newest): its own evidence for the error bound.
OUTCOMES_PER_ENTRY = 16
#: How many outcomes a namespace keeps in all (the newest); its pools keep every count.
OUTCOMES_PER_NAMESPACE = 20_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """A verified answer of a candidate for a query (the error bound's evidence): after an
    exploration, the request's fresh answer compared with the candidate's; or a verdict
    (``Cache.feedback``) on a semantic hit. ``prior`` is the decision's ``p_wrong`` for the
    pair, ``bin`` the error bound's score bin of that prior (one of 10), under which the
    namespace's pools count it."""

    entry_id: int
    namespace: str
    similarity: float
    prior: float
    bin: int
    correct: bool
    source: str  # "explore" or "feedback"
    created_at: float


@dataclass(frozen=True, slots=True)
class OutcomePool:
    """A namespace's pooled outcomes in one score bin: right and wrong counts, and the
    wrong answers the prior expected (the sum of their ``prior``)."""

    bin: int
    right: int
    wrong: int
    expected: float


class Neighbours(NamedTuple):
    """What :meth:`Store.nearest` found: candidates with their exact cosine, and the ids of
    candidates skipped because their stored vector is damaged (missing, of the wrong length,
    zero or not finite). A damaged candidate is never served and never fails a lookup: the
    engine logs it once, the cache counts it (``stats()["damaged_vectors"]``) and
    :meth:`Store.check` (``semcache verify``) reports it."""

    ranked: list[tuple[EntryRow, float]]
    """(row, cosine) pairs, best cosine first, ties newest (highest id) first."""
    damaged: list[int]


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


class StoreTxn(Protocol):
    """What may be done inside one write transaction (all of it commits, or none)."""

    def insert_many(self, entries: Sequence[NewEntry]) -> list[int]:
        """Insert each entry in order, replacing the entry with the same key (a key given
        twice: the later one wins); returns their ids, each larger than any before."""
        ...

    def delete(self, where: EntryFilter) -> list[int]:
        """Delete the entries the filter selects; returns their ids."""
        ...

    def clear_all(self) -> int: ...
    def purge_expired(self, now: float) -> int: ...
    def evict_lru(self, count: int) -> int:
        """Delete the ``count`` least recently accessed entries; returns how many."""
        ...

    def entry_count(self) -> int: ...
    def entry_bytes(self) -> int:
        """What the entries occupy (:func:`entry_size` summed), this transaction's own
        changes included; exact for the bound: writers that enforce ``max_bytes`` are
        serialized from this read to COMMIT."""
        ...

    def evict_bytes(self, amount: int) -> int:
        """Delete the least recently accessed entries until at least ``amount`` bytes are
        freed (or none is left); returns how many were deleted."""
        ...

    def apply_access(self, updates: dict[int, AccessUpdate]) -> None:
        """Write batched hits: access times and expiries only move forward."""
        ...

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

    def record_outcomes(self, outcomes: Sequence[Outcome], pool: bool = True) -> None:
        """Record outcomes: each entry keeps its newest :data:`OUTCOMES_PER_ENTRY`, each
        namespace its newest :data:`OUTCOMES_PER_NAMESPACE`, and each is added to its
        namespace's pool of its bin. ``pool=False``: an import (its pools come with their
        namespace), where an outcome already recorded (same namespace, similarity, prior,
        verdict, source and time: the import run again) is moved to the given entry
        instead of being recorded twice."""
        ...

    def restore_pools(self, namespace: str, pools: Sequence[OutcomePool]) -> None:
        """Exported pools of ``namespace``: each bin keeps the larger of its stored and
        exported counts (importing the same export twice counts it once)."""
        ...


class Store(Protocol):
    """A storage engine: one cache's entries, settings and shared counters."""

    #: Where the cache lives, as shown in messages: a file path or a URL without password.
    location: str
    #: The file, resolved (symlinks followed once); for a server, the same as ``location``.
    path: str
    readonly: bool
    #: The settings table (file-defining settings and stored tunables), as text.
    settings: dict[str, str]
    #: The incarnation token this process last read (settings ``incarnation``): ids read
    #: from the cache are valid only while it is the cache's (see check_incarnation).
    incarnation: str | None
    #: Called (no arguments, no database work) when check_incarnation finds a new token,
    #: after the store refreshed ``settings`` and dropped its own memos; it may raise.
    on_incarnation: Callable[[], None] | None
    #: How many times this process saw another connection's commit at an incarnation check
    #: (SQLite; PostgreSQL: 0, its statements check the token and that a remembered
    #: partition id still names its partition, and a forced check compares every remembered
    #: id with the partitions table). A copy of the same cache
    #: restored in place keeps the token but may give a remembered partition id to another
    #: partition: callers that remember ids look them up again when this moves.
    commits_seen: int

    @property
    def lock(self) -> StoreLock:
        """Serializes writers (a cross-process file lock for SQLite); readers never take it."""
        ...

    @property
    def created(self) -> bool:
        """True when this open created the cache (a failed open then removes it)."""
        ...

    def read_settings(self) -> dict[str, str]:
        """The settings table as it is now (one read): ``settings`` becomes it. What other
        processes set after this one opened (namespace thresholds and error bounds) reaches
        a cache through this."""
        ...

    def check_incarnation(self, force: bool = False) -> bool:
        """True when the cache was replaced since the token was read (a file restored over
        by another cache, a schema dropped and created again): ``settings`` is then read
        again, the store's memos dropped and ``on_incarnation`` called. Cheap unless
        ``force``: SQLite reads the token only after another connection committed;
        PostgreSQL only when forced (its statements that use remembered ids check the
        token themselves and come back empty when it moved or the id names another
        partition; a forced check also compares the remembered partition ids with the
        partitions table and, on a difference - an older backup restored in place - drops
        them and calls ``on_incarnation`` with the same token)."""
        ...

    # -- the lookup path
    def get_by_key(self, key_hash: bytes) -> EntryRow | None: ...
    def get_by_ids(self, ids: Sequence[int], *, with_vector: bool = False) -> list[EntryRow]: ...
    def find_partition(self, namespace: str, scope: str) -> int | None: ...
    def nearest(self, vector: np.ndarray, code: bytes, partition_id: int, now: float, k: int,
                min_cosine: float | None = None, checked: bool = False) -> Neighbours:
        """The ``k`` entries of the partition nearest to ``code`` by Hamming distance,
        unexpired at ``now`` (whole seconds: the caller checks the exact expiry), rescored
        by the exact cosine of their stored vectors with ``vector`` (a unit float32 vector;
        ``code`` is its 256-bit code). ``min_cosine`` (the caller's threshold) lets the engine
        skip codes that cannot reach it. A candidate replaced by a concurrent writer between
        the engine's scan and its read is looked for again. ``checked``: this lookup ran
        :meth:`check_incarnation` on this thread just before, after it began; the engine may
        reuse what that check read instead of reading it again."""
        ...

    def blocked_entries(self, query_hash: bytes) -> set[int]:
        """Ids of entries judged wrong for this query (never served for it again)."""
        ...

    # -- shared state
    def counters(self) -> dict[str, int]: ...
    def counter_history(self, since_minute: int, step: int) -> list[tuple[int, str, int]]:
        """The counters added since minute ``since_minute`` (epoch seconds // 60), summed
        over every process, in buckets of ``step`` minutes aligned on multiples of
        ``step``: ``(first minute of the bucket, counter name, total)``, unordered."""
        ...

    def size_bytes(self) -> int:
        """Bytes the cache occupies (file + WAL, or the schema's relations)."""
        ...

    def verdicts(self, namespace: str | None = None) -> list[Verdict]: ...
    def entry_outcomes(self, entry_id: int) -> list[Outcome]:
        """The outcomes kept for an entry, oldest first (read by the error bound)."""
        ...

    def outcome_pools(self, namespace: str) -> list[OutcomePool]:
        """The namespace's pooled outcomes, by bin (bins without any are left out)."""
        ...

    def outcomes(self, namespace: str | None = None) -> list[Outcome]:
        """Every kept outcome (of one namespace when given), oldest first."""
        ...

    # -- admin reads
    def count_entries(self, where: EntryFilter) -> int: ...
    def list_entries(self, where: EntryFilter, *, order: EntryOrder = "id",
                     limit: int | None = None, after_id: int | None = None,
                     with_vector: bool = False) -> list[EntryRecord]: ...
    def namespace_summary(self, now: float) -> list[NamespaceSummary]:
        """Entries, expired entries, hits and bytes of each namespace: biggest (most
        entries) first, then by name."""
        ...

    def partitions(self, namespace: str) -> list[tuple[int, str]]:
        """(partition id, scope) of every partition of a namespace, oldest first."""
        ...

    # -- writes
    def write(self, timeout: float | None = None) -> AbstractContextManager[StoreTxn]:
        """One write transaction (under :attr:`lock` for SQLite); ``timeout``: seconds to
        wait for other writers, else CacheFileError. The engine brings its derived data
        (the code mirror) in step after COMMIT."""
        ...

    def put_alone(self, e: NewEntry, max_entries: int | None, now: float) -> int | None:
        """A put with nothing else to write, where the engine has a cheaper way than a
        transaction (PostgreSQL: one statement): its id once committed, or None - nothing
        was written, the caller writes it in a transaction (:meth:`write`)."""
        ...

    def write_settings(self, values: dict[str, str]) -> None: ...
    def pin_settings(self, values: dict[str, str]) -> dict[str, str]:
        """Decide settings once for every process: in one write transaction, write those
        not stored yet and return what is stored (another first open may have won)."""
        ...

    # -- coalescing of identical misses (what Cache.claim builds on)
    def claim(self, key_hash: bytes, lease: float) -> bool:
        """Try to become the one caller fetching ``key_hash`` (across processes and hosts
        that share this cache); never waits. A holder that dies frees it within ``lease``."""
        ...

    def release(self, key_hash: bytes) -> None: ...

    # -- upkeep and lifetime
    @property
    def upkeep_due(self) -> bool:
        """True when this process left deferred work that :meth:`upkeep` does (SQLite: the
        sqlite-vec rows of the entries it wrote); cheap, read after every write."""
        ...

    def upkeep(self) -> None:
        """A batch of deferred work if the write lock is free right now; never waits for
        the lock. The cache calls it after each flush of batched hits (a write that happens
        anyway), never from an idle timer: an idle cache writes nothing."""
        ...

    def warmup(self) -> None:
        """Ready the search ahead of the first lookup (SQLite: map or build the mirror)."""
        ...

    def check(self, *, quick: bool = False) -> tuple[dict[str, Any], list[str]]:
        """The engine's own integrity report for ``semcache verify``: sections (``database``,
        and for SQLite ``mirror`` and ``vec0``) and the problems found. Changes nothing."""
        ...

    def vacuum(self, progress: VacuumProgress | None = None) -> dict[str, int]:
        """Repair derived data after hand-made changes, compact storage, rebuild indexes;
        returns the repairs made. ``progress(step, done, steps)``: see VacuumProgress."""
        ...

    def drop(self, *, if_empty: bool = False) -> None:
        """Close the store and delete the cache, entries included: the file and its
        companions, or the schema (only semcache's tables when it holds anything else).
        ``if_empty``: only while it holds no entries (a failed open: another client may
        have started using the cache meanwhile)."""
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


__all__ = ["ENTRY_FIXED_BYTES", "OUTCOMES_PER_ENTRY", "OUTCOMES_PER_NAMESPACE",
           "SERIES_RETENTION_MINUTES", "AccessUpdate", "EntryFilter", "EntryOrder",
           "EntryRecord", "EntryRow", "NamespaceSummary", "Neighbours", "NewEntry", "Outcome",
           "OutcomePool", "Store", "StoreLock", "StoreTxn", "VacuumProgress", "Verdict",
           "accept_incarnation", "entry_size"]
