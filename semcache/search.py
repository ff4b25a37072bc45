"""The semantic index: keeps the mmap'd code mirror in step with SQLite and searches it.

SQLite is the source of truth; the mirror (``<db>-codes``) is derived data. Every write
transaction bumps ``sync_state.change_seq`` (triggers do it, even for hand-made SQL), and
the writing process replays its changes into the mirror after COMMIT, still under the
write lock, stamping the mirror with the committed seq. A reader compares the two numbers:

* mirror seq >= database seq: scan the mirror (hot path, no lock);
* behind: the file may have been replaced (growth, rebuild) - reopen it; a writer may be
  between COMMIT and its mirror update - wait a few ms; otherwise (a writer was killed, or
  the database was edited by hand) rebuild from SQLite under the write lock;
* still nothing usable (lock busy, read-only file): search in SQL with sqlite-vec.

Candidates are only candidates: the caller re-reads them from SQLite and decides on exact
cosine, so a stale or damaged mirror can cost a miss, never a wrong answer.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable

import numpy as np

from semcache.errors import CorruptCacheError
from semcache.kernels.mirror import CodeMirror, MirrorInvalid
from semcache.kernels.projection import BinaryEncoder
from semcache.store.base import Changes, EntryRow, LocalCodeSource, Store

log = logging.getLogger("semcache")

#: How long a reader waits for an in-flight writer to stamp the mirror before rebuilding.
_WRITER_GRACE_S = 0.05
#: How many Hamming candidates are rescored with exact cosine.
RESCORE_K = 16
#: Rebuild (compact) the mirror when dead rows outnumber live ones beyond this.
_COMPACT_MIN_DEAD = 4096

_NEVER_U32 = 0xFFFFFFFF


def expires_u32(expires_at: float | None) -> int:
    """Mirror expiry: whole seconds rounded up (never drops a still-valid entry)."""
    if expires_at is None:
        return _NEVER_U32
    return min(max(math.ceil(expires_at), 0), _NEVER_U32 - 1)


def _expires_u32_array(expires: np.ndarray) -> np.ndarray:
    out = np.full(expires.shape, _NEVER_U32, dtype=np.uint32)
    finite = ~np.isnan(expires)
    out[finite] = np.clip(np.ceil(expires[finite]), 0, _NEVER_U32 - 1).astype(np.uint32)
    return out


Alive = Callable[[EntryRow, float], bool]


def cosines(stored: np.ndarray, unit_query: np.ndarray) -> np.ndarray:
    """Exact cosine of each stored row with a unit query. Stored norms are not trusted
    (a vector edited by hand or imported by an older version may not be unit length):
    each row is divided by its own norm, which costs nothing at k rows."""
    rows = stored.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1)
    norms[norms == 0] = np.inf  # a zero vector is similar to nothing
    return np.clip((rows @ unit_query.astype(np.float64)) / norms, -1.0, 1.0)


def make_search(store: Store, encoder: BinaryEncoder, *,
                use_mirror: bool = True) -> SemanticIndex | StoreSearch:
    """The search layer for ``store``: a shared code mirror when the engine's codes can be
    mapped locally (SQLite), else the engine's own search (PostgreSQL)."""
    if isinstance(store, LocalCodeSource):
        return SemanticIndex(store, encoder, use_mirror=use_mirror)
    return StoreSearch(store, encoder)


Accept = Callable[[EntryRow, float], bool]


def _decide(ranked: list[tuple[EntryRow, float]], threshold: float, now: float,
            alive: Alive, accept: Accept | None) -> tuple[EntryRow, float] | None:
    """The best alive candidate at or above ``threshold`` that ``accept`` (the near-miss
    guard) lets through; ties go to the newest entry."""
    above = sorted(((row, sim) for row, sim in ranked if sim >= threshold and alive(row, now)),
                   key=lambda rs: (rs[1], rs[0].id), reverse=True)
    for row, sim in above:
        if accept is None or accept(row, sim):
            return row, sim
    return None


class StoreSearch:
    """Search done by the engine (in the server), rescored there by exact cosine."""

    def __init__(self, store: Store, encoder: BinaryEncoder) -> None:
        self._store = store
        self._encoder = encoder

    def best(self, vector: np.ndarray, partition_id: int, now: float, threshold: float,
             alive: Alive, accept: Accept | None = None) -> tuple[EntryRow, float] | None:
        code = self._encoder.encode_unit(vector).tobytes()
        ranked = self._store.search(code, vector, partition_id, now, RESCORE_K)
        return _decide(ranked, threshold, now, alive, accept)

    def warmup(self) -> None:
        pass

    def rebuild_now(self) -> None:
        pass

    def close(self) -> None:
        pass


class SemanticIndex:
    """Code mirror + SQL fallback for one cache file."""

    def __init__(self, store: LocalCodeSource, encoder: BinaryEncoder, *,
                 use_mirror: bool = True) -> None:
        self._store = store
        self._encoder = encoder
        self.path = store.mirror_path
        self._uid = self._store.settings["db_uid"]
        self._use_mirror = use_mirror and not self._store.readonly
        self._mirror: CodeMirror | None = None
        self._lock = threading.RLock()
        self.rebuilds = 0  # observed by tests and `verify`

    # -- reading ------------------------------------------------------------------------

    def best(self, vector: np.ndarray, partition_id: int, now: float, threshold: float,
             alive: Alive, accept: Accept | None = None) -> tuple[EntryRow, float] | None:
        """The best entry of the partition for ``vector``: Hamming candidates from the
        mirror (or SQL), re-read from the database and decided by exact cosine, then by
        ``accept`` (the near-miss guard) in order of similarity."""
        code = self._encoder.encode_unit(vector)
        ids = self.candidates(code, partition_id, now, RESCORE_K, min_cosine=threshold)
        if not ids:
            return None
        rows = [row for row in self._store.get_by_ids(ids, with_vector=True)
                if row.partition_id == partition_id and row.vector is not None]
        if not rows:
            return None
        size = 4 * vector.shape[0]
        for row in rows:
            if not isinstance(row.vector, bytes) or len(row.vector) != size:  # damaged row
                raise CorruptCacheError(
                    f"entry {row.id} of cache {self._store.location!r} is corrupt (stored "
                    f"vector is not {size} bytes); delete it (cache.delete({row.id}))")
        # One (k, dim) @ (dim,) product: k separate numpy calls per query cost as much as
        # the whole Hamming scan of 10k entries.
        stored = np.frombuffer(b"".join([r.vector for r in rows if r.vector is not None]),
                               dtype="<f4").reshape(len(rows), -1)
        sims = cosines(stored, vector)
        return _decide(list(zip(rows, sims.tolist(), strict=True)), threshold, now, alive,
                       accept)

    def warmup(self) -> None:
        """Map the mirror (building it if needed) ahead of the first search."""
        if self._use_mirror:
            with self._lock:
                self._fresh_mirror()

    def rebuild_now(self) -> None:
        """Rebuild the mirror from the database (after a vacuum)."""
        if self._use_mirror and self._store.lock.acquire():
            try:
                self.rebuild()
            finally:
                self._store.lock.release()

    def candidates(self, code: np.ndarray, partition_id: int, now: float, k: int,
                   min_cosine: float | None = None) -> list[int]:
        """Entry ids of the ``k`` nearest codes in the partition, unexpired at ``now``.

        ``min_cosine`` (the hit threshold) lets the mirror skip rows that cannot reach it.
        """
        if self._use_mirror:
            with self._lock:
                mirror = self._fresh_mirror()
                if mirror is not None:
                    words = np.ascontiguousarray(code, dtype=np.uint8).view("<u8")
                    return [int(i) for i, _ in
                            mirror.search(words, k, partition=partition_id, now=now,
                                          min_cosine=min_cosine)]
        return [i for i, _ in self._store.knn(
            np.ascontiguousarray(code, dtype=np.uint8).tobytes(), partition_id, now, k)]

    def _fresh_mirror(self) -> CodeMirror | None:
        db_seq = self._store.change_seq()
        mirror = self._mirror
        # is_current: header re-read plus one stat(), so a mirror file deleted or replaced
        # by another process is noticed on the next call.
        if mirror is not None and mirror.is_current() and mirror.seq >= db_seq:
            return mirror
        mirror = self._reopen()
        if mirror is not None and mirror.seq >= db_seq:
            return mirror
        deadline = time.monotonic() + _WRITER_GRACE_S
        while mirror is not None and time.monotonic() < deadline:
            time.sleep(0.0005)
            mirror.reload_header()
            if mirror.seq >= db_seq:
                return mirror
        return self._rebuild_locked()

    def _reopen(self) -> CodeMirror | None:
        """Map the mirror file afresh (another process may have replaced it)."""
        if self._mirror is not None:
            self._mirror.close()
            self._mirror = None
        try:
            self._mirror = CodeMirror.open(self.path, self._uid, writable=True)
        except FileNotFoundError:
            return None
        except (MirrorInvalid, OSError, ValueError) as exc:
            log.info("semcache: code mirror %s unusable (%s); it will be rebuilt", self.path, exc)
            return None
        return self._mirror

    def _rebuild_locked(self) -> CodeMirror | None:
        lock = self._store.lock
        # Never wait behind a writer (a long write transaction would stall every semantic
        # get): if the lock is busy, this search runs in SQL and a later one rebuilds.
        if not lock.acquire(timeout=0):
            return None
        try:
            mirror = self._reopen()
            if mirror is not None and mirror.seq == self._store.change_seq():
                return mirror
            return self.rebuild()
        finally:
            lock.release()

    # -- writing (caller holds the write lock) --------------------------------------------

    def rebuild(self) -> CodeMirror | None:
        """Write a fresh mirror from SQLite (caller holds the write lock)."""
        ids, parts, expires, codes, seq = self._store.code_rows()
        if self._mirror is not None:
            self._mirror.close()
            self._mirror = None
        try:
            self._mirror = CodeMirror.create(
                self.path, self._uid, seq, ids, parts, _expires_u32_array(expires), codes)
        except OSError as exc:
            log.warning("semcache: cannot write code mirror %s (%s); searching in SQL",
                        self.path, exc)
            return None
        self.rebuilds += 1
        log.info("semcache: rebuilt code mirror %s (%d entries, seq %d)", self.path, len(ids), seq)
        return self._mirror

    def apply(self, changes: Changes) -> None:
        """Replay one committed transaction into the mirror (under the write lock).

        Never raises: a mirror that cannot be updated is removed, and rebuilt later.
        """
        if not self._use_mirror:
            return
        with self._lock:
            try:
                self._apply(changes)
            except Exception as exc:  # noqa: BLE001 - derived data must not fail a write
                log.warning("semcache: code mirror update failed (%s); dropping %s",
                            exc, self.path)
                self._drop()

    def _apply(self, changes: Changes) -> None:
        mirror = self._mirror
        if mirror is not None:
            mirror.reload_header()
        if mirror is None or mirror.seq != changes.seq_before:
            mirror = self._reopen()
        if mirror is None:
            return  # no mirror yet: the next search builds it
        if mirror.seq != changes.seq_before or changes.cleared:
            self.rebuild()
            return
        seq = changes.seq_after
        if changes.removed:
            mirror.mark_dead(np.asarray(changes.removed, dtype=np.int64), seq)
        if changes.expires:
            mirror.set_expires(
                np.asarray([i for i, _ in changes.expires], dtype=np.int64),
                np.asarray([expires_u32(e) for _, e in changes.expires], dtype=np.uint32), seq)
        if changes.added:
            added = changes.added
            mirror.append(  # grows (a new, larger file) by itself when full
                np.asarray([a[0] for a in added], dtype=np.int64),
                np.asarray([a[1] for a in added], dtype=np.int32),
                np.asarray([expires_u32(a[2]) for a in added], dtype=np.uint32),
                np.frombuffer(b"".join(a[3] for a in added), dtype=np.uint8).reshape(-1, 32),
                seq)
        mirror.set_seq(seq)
        if mirror.dead_count > max(_COMPACT_MIN_DEAD, mirror.live_count):
            mirror.compact(seq)

    def _drop(self) -> None:
        if self._mirror is not None:
            self._mirror.close()
            self._mirror = None
        try:
            os.remove(self.path)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._mirror is not None:
                self._mirror.close()
                self._mirror = None
