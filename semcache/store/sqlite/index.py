"""The SQLite engine's search: keeps the mmap'd code mirror in step with SQLite, scans it
(or sqlite-vec's table, when the mirror cannot be trusted) and rescores the candidates by
exact cosine (:meth:`SemanticIndex.nearest`, the engine's ``Store.nearest``).

SQLite is the source of truth; the mirror (``<db>-codes``) is derived data. Every change the
mirror must reflect bumps ``sync_state.change_seq`` and draws a new random
``sync_state.state_token`` (triggers do it, even for hand-made SQL). The writing process
replays its changes into the mirror after COMMIT, still under the write lock, stamping the
mirror with the committed ``(change_seq, state_token)``. A mirror is used only when its
stamp equals the database's state exactly, so a mirror built from another history (a
database restored from a backup) is never trusted.

Keeping the check cheap: ``PRAGMA data_version`` (about 2 us) changes whenever another
connection commits. While it has not moved since the mirror was last found in step, a
search goes straight to the scan (plus one size check of the mapped file, so a file truncated
under the map is never touched: that would be a SIGBUS). When it moved, the state is read
and compared; a mirror behind it is either being updated by a writer right now (wait a few
ms), or was left behind by a writer killed between COMMIT and its mirror update, or by
hand-made SQL (rebuild under the write lock). Every committed entry is in the mirror, or the
mirror is known stale.

Candidates are only candidates: :meth:`SemanticIndex.nearest` re-reads them from SQLite and
rescores them on their stored vectors, so a stale or damaged mirror can cost a miss, never a
wrong answer. Ids that vanished between the scan and the read (another process replaced or
deleted the entry) trigger a fresh check and a rescan; the last retry runs under the write
lock, where the mirror and SQLite cannot move apart.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from semcache.store.base import Neighbours
from semcache.store.rescore import DamagedVectors, rescore
from semcache.store.sqlite import codes
from semcache.store.sqlite.codes import Changes
from semcache.store.sqlite.connection import Database
from semcache.store.sqlite.locking import ReadOnlyLock, WriteLock
from semcache.store.sqlite.mirror import CodeMirror, MirrorInvalid

log = logging.getLogger("semcache")

#: How long a reader waits for an in-flight writer to stamp the mirror before using SQL.
_WRITER_GRACE_S = 0.05
#: Rebuild (compact) the mirror when dead rows outnumber live ones beyond this.
_COMPACT_MIN_DEAD = 4096
#: After a mirror could not be written (a directory in its place, a full disk), searches
#: use SQL for this long before trying again (doubling up to the maximum).
_BACKOFF_FIRST_S = 30.0
_BACKOFF_MAX_S = 600.0
#: After a wait for a writer timed out, later searches go to SQL at once for this long.
_NO_WAIT_S = 1.0
#: Rescans when candidates vanished between scan and read; the last one under the lock.
_RESCANS = 3
_LOCKED_RESCAN_WAIT_S = 0.25

_NEVER_U32 = 0xFFFFFFFF


def expires_u32(expires_at: float | None) -> int:
    """Mirror expiry: whole seconds rounded up (never drops a still-valid entry)."""
    if expires_at is None:
        return _NEVER_U32
    return min(max(math.ceil(expires_at), 0), _NEVER_U32 - 1)


def expires_u32_array(expires: np.ndarray) -> np.ndarray:
    """:func:`expires_u32` of float epoch seconds (NaN = never)."""
    out = np.full(expires.shape, _NEVER_U32, dtype=np.uint32)
    finite = ~np.isnan(expires)
    out[finite] = np.clip(np.ceil(expires[finite]), 0, _NEVER_U32 - 1).astype(np.uint32)
    return out


class SemanticIndex:
    """Code mirror + SQL fallback + exact-cosine rescoring for one cache file.

    ``settings`` reads the store's settings table as it is now (the store reads it again
    when the file is replaced under this process): the mirror is kept once the file has
    vectors (``db_uid`` is pinned with the embedder) and is tied to that ``db_uid``."""

    def __init__(self, db: Database, lock: WriteLock | ReadOnlyLock,
                 settings: Callable[[], dict[str, str]],
                 mirror_path: str, damaged: DamagedVectors, *, use_mirror: bool = True) -> None:
        self._db = db
        self._lock_file = lock
        self._settings = settings
        self._damaged = damaged
        self.path = mirror_path
        self._use_mirror = use_mirror and not db.readonly
        self._mirror: CodeMirror | None = None
        self._lock = threading.RLock()
        self._checked: int | None = None  # data_version at which the mirror matched SQLite
        self._pid = os.getpid()
        self._backoff_until = 0.0
        self._backoff_s = 0.0
        self._no_wait_until = 0.0
        self._warned = False
        self.rebuilds = 0  # observed by tests and benchmarks
        self.rescans = 0

    @property
    def keeps_mirror(self) -> bool:
        """True when writes must bring the mirror in step (a file with vectors, a process
        allowed to write the mirror)."""
        return self._use_mirror and "db_uid" in self._settings()

    @property
    def _uid(self) -> str:
        """The database's identity the mirror is tied to (read from the settings each
        time: a file replaced under this process has another one)."""
        return self._settings()["db_uid"]

    # -- the search -----------------------------------------------------------------------

    def nearest(self, vector: np.ndarray, code: bytes, partition_id: int, now: float, k: int,
                min_cosine: float | None = None, version: int | None = None) -> Neighbours:
        """The ``k`` nearest codes of the partition, re-read from SQLite and rescored by
        exact cosine on their stored vectors (``Store.nearest``).

        ``version``: ``PRAGMA data_version`` as this lookup's incarnation check read it just
        before, after the lookup began, instead of reading it again for the freshness check:
        what was committed before the lookup began is seen either way (a commit after that
        read was concurrent with the lookup; the no-candidate case below still reads afresh).
        When no candidate reaches ``min_cosine``, the answer stands only if nothing was
        committed between the scan and the read (otherwise: look again; the last time
        under the write lock)."""
        q = np.frombuffer(code, dtype=np.uint8)
        found: Neighbours | None = None
        for attempt in range(_RESCANS + 1):
            if attempt == _RESCANS:
                rows = self._fetch_locked(q, partition_id, now, min_cosine, k)
                if rows is None:  # a long write holds the lock: keep the last answer
                    return found if found is not None else Neighbours([], [])
                return self._rescored(rows, vector, partition_id)
            ids, from_mirror, version = self._candidate_ids(q, partition_id, now, min_cosine,
                                                            attempt > 0, k,
                                                            None if attempt else version)
            rows = codes.read_rows(self._db, ids, True) if ids else []
            if from_mirror and any(r.partition_id != partition_id for r in rows):
                self._invalidate("rows of another partition")  # damaged: rebuild
                continue
            found = self._rescored(rows, vector, partition_id)
            ranked = found.ranked
            if ranked and (min_cosine is None or ranked[0][1] >= min_cosine):
                return found  # a candidate may answer
            if len(rows) == len(ids) and self._db.data_version() == version:
                return found  # nothing moved between the check, the scan and the read
            self.rescans += 1  # an entry was replaced or added meanwhile: look again
        return found if found is not None else Neighbours([], [])

    def _rescored(self, rows: list[Any], vector: np.ndarray, partition_id: int) -> Neighbours:
        return rescore([r for r in rows if r.partition_id == partition_id], vector,
                       self._damaged)

    def _fetch_locked(self, code: np.ndarray, partition_id: int, now: float,
                      min_cosine: float | None, k: int) -> list[Any] | None:
        """The last look: under the write lock nothing can commit between scan and read.
        None when the lock is not free soon (a long write)."""
        lock = self._lock_file
        if not lock.acquire(timeout=_LOCKED_RESCAN_WAIT_S):
            return None
        try:
            ids, from_mirror, _ = self._candidate_ids(code, partition_id, now, min_cosine, True,
                                                      k)
            rows = codes.read_rows(self._db, ids, True) if ids else []
            if from_mirror and len(rows) < len(ids):
                self._invalidate("ids missing from SQLite at the same state")
            return rows
        finally:
            lock.release()

    # -- candidates -----------------------------------------------------------------------

    def candidates(self, code: np.ndarray, partition_id: int, now: float, k: int,
                   min_cosine: float | None = None) -> list[int]:
        """Entry ids of the ``k`` nearest codes in the partition, unexpired at ``now``.

        ``min_cosine`` (the hit threshold) lets the mirror skip rows that cannot reach it.
        """
        code = np.ascontiguousarray(code, dtype=np.uint8)
        return self._candidate_ids(code, partition_id, now, min_cosine, False, k)[0]

    def _candidate_ids(self, code: np.ndarray, partition_id: int, now: float,
                       min_cosine: float | None, fresh: bool, k: int,
                       version: int | None = None) -> tuple[list[int], bool, int]:
        """(ids, whether they came from the mirror, data_version read before the scan;
        ``version``: one the caller read before, see :meth:`nearest`)."""
        with self._lock:
            mirror, version = self._usable(fresh, version)
            if mirror is not None:
                try:
                    if not mirror.verified:
                        mirror.verify_step()  # one block per search until all were checked
                    found = mirror.search(code, k, partition=partition_id, now=now,
                                          min_cosine=min_cosine)
                    return [i for i, _ in found], True, version
                except MirrorInvalid as exc:
                    self._invalidate(str(exc))
        version = self._db.data_version()
        found = codes.knn(self._db, code.tobytes(), partition_id, now, k)
        return [i for i, _ in found], False, version

    # -- freshness ------------------------------------------------------------------------

    def _usable(self, fresh: bool,
                version: int | None = None) -> tuple[CodeMirror | None, int]:
        """(the mirror if it matches SQLite's current state, else None: search in SQL;
        the data_version it was checked at; ``version``: one read just before)."""
        if not self.keeps_mirror or time.monotonic() < self._backoff_until:
            return None, -1
        if os.getpid() != self._pid:  # a forked child: its connection counts anew
            self._pid, self._checked = os.getpid(), None
        mirror = self._mirror
        if mirror is not None and not fresh and self._checked is not None:
            if version is None:
                version = self._db.data_version()
            if version == self._checked and mirror.size_ok() and mirror.header_unchanged():
                return mirror, version  # nothing committed elsewhere, nothing touched it
        return self._refresh(), self._checked if self._checked is not None else -1

    def _refresh(self) -> CodeMirror | None:
        self._checked = None
        deadline = time.monotonic() + _WRITER_GRACE_S
        reread = False
        while True:
            version = self._db.data_version()
            state = codes.sync_state(self._db)
            mirror = self._current()
            if mirror is not None and mirror.state == state:
                self._checked = version
                return mirror
            if mirror is not None and mirror.seq > state[0] and not reread:
                reread = True  # a writer may have committed and stamped after our read
                continue
            lock = self._lock_file
            if lock.acquire(timeout=0):
                try:  # no writer at work: the mirror is stale for good, rebuild it now
                    return self._rebuild_if_stale()
                finally:
                    lock.release()
            # A writer holds the lock: it stamps the mirror right after its COMMIT.
            clock = time.monotonic()
            if mirror is None or clock < self._no_wait_until:
                return None  # search in SQL meanwhile
            if clock > deadline:  # a long write: do not make every get wait for it
                self._no_wait_until = clock + _NO_WAIT_S
                return None
            time.sleep(0.0005)

    def _rebuild_if_stale(self) -> CodeMirror | None:
        """Under the write lock: use the mirror if it matches, else rebuild it."""
        version = self._db.data_version()
        mirror = self._current()
        if mirror is not None and mirror.state == codes.sync_state(self._db):
            self._checked = version
            return mirror
        mirror = self.rebuild()
        if mirror is not None:
            self._checked = version
        return mirror

    def _current(self) -> CodeMirror | None:
        """The mapped mirror, reopened when another process replaced it; None if unusable."""
        mirror = self._mirror
        if mirror is not None:
            try:
                if mirror.size_ok() and mirror.is_current():
                    return mirror
            except (MirrorInvalid, OSError) as exc:
                log.info("semcache: code mirror %s changed under the map (%s)", self.path, exc)
            self._close_map()
        try:
            self._mirror = CodeMirror.open(self.path, self._uid, writable=True)
        except FileNotFoundError:
            return None
        except (MirrorInvalid, OSError, ValueError) as exc:
            log.info("semcache: code mirror %s unusable (%s); it will be rebuilt", self.path, exc)
            return None
        return self._mirror

    def _invalidate(self, why: str) -> None:
        log.info("semcache: code mirror %s is damaged (%s); it will be rebuilt", self.path, why)
        self._close_map()
        self._checked = None
        try:  # remove it, so that no process keeps trusting it
            os.remove(self.path)
        except OSError:
            pass

    def _close_map(self) -> None:
        if self._mirror is not None:
            self._mirror.close()
            self._mirror = None

    # -- writing (caller holds the write lock) --------------------------------------------

    def rebuild(self) -> CodeMirror | None:
        """Write a fresh mirror from SQLite (caller holds the write lock)."""
        ids, parts, expires, code_bytes, seq, token = codes.code_rows(self._db)
        self._close_map()
        self._checked = None
        try:
            self._mirror = CodeMirror.create(
                self.path, self._uid, (seq, token), ids, parts, expires_u32_array(expires),
                code_bytes)
        except OSError as exc:
            self._publish_failed(exc)
            return None
        self._backoff_s = 0.0
        self.rebuilds += 1
        log.info("semcache: rebuilt code mirror %s (%d entries, seq %d)", self.path, len(ids), seq)
        return self._mirror

    def _publish_failed(self, exc: OSError) -> None:
        """Search in SQL for a while instead of failing to write the mirror on every call."""
        self._backoff_s = min(max(2 * self._backoff_s, _BACKOFF_FIRST_S), _BACKOFF_MAX_S)
        self._backoff_until = time.monotonic() + self._backoff_s
        self._close_map()
        msg = ("semcache: cannot write code mirror %s (%s); searching in SQL, next try in "
               "%.0f s")
        if self._warned:
            log.info(msg, self.path, exc, self._backoff_s)
        else:
            self._warned = True
            log.warning(msg, self.path, exc, self._backoff_s)

    def apply(self, changes: Changes) -> None:
        """Replay one committed transaction into the mirror (under the write lock).

        Never raises: a mirror that cannot be updated is removed, and rebuilt later.
        """
        if not self._use_mirror or time.monotonic() < self._backoff_until:
            return
        with self._lock:
            try:
                self._apply(changes)
            except OSError as exc:  # growth could not publish a file (disk full, ...)
                self._drop()
                self._publish_failed(exc)
            except Exception as exc:  # noqa: BLE001 - derived data must not fail a write
                log.warning("semcache: code mirror update failed (%s); dropping %s",
                            exc, self.path)
                self._drop()

    def _apply(self, changes: Changes) -> None:
        # _current follows a file another writer published (a grown or rebuilt mirror):
        # appending to a superseded file, and later publishing it, would lose that
        # writer's rows while claiming the current state.
        mirror = self._current()
        self._checked = None
        if mirror is None:
            return  # no mirror yet: the next search builds it
        before = (changes.seq_before, changes.token_before)
        after = (changes.seq_after, changes.token_after)
        if mirror.state != before or changes.cleared:
            self.rebuild()
            return
        if before != after:
            with mirror.update(after):
                if changes.added:  # first: an id added and removed in one transaction ends dead
                    added = changes.added
                    mirror.append(
                        np.asarray([a[0] for a in added], dtype=np.int64),
                        np.asarray([a[1] for a in added], dtype=np.int32),
                        np.asarray([expires_u32(a[2]) for a in added], dtype=np.uint32),
                        np.frombuffer(b"".join(a[3] for a in added),
                                      dtype=np.uint8).reshape(-1, 32))
                if changes.removed:
                    mirror.mark_dead(np.asarray(changes.removed, dtype=np.int64))
                if changes.expires:
                    mirror.set_expires(
                        np.asarray([i for i, _ in changes.expires], dtype=np.int64),
                        np.asarray([expires_u32(e) for _, e in changes.expires],
                                   dtype=np.uint32))
            if mirror.dead_count > max(_COMPACT_MIN_DEAD, mirror.live_count):
                mirror.compact()
        # The mirror matched SQLite before this transaction and now holds it: in step at
        # the data_version read inside the transaction.
        self._checked = changes.data_version

    def _drop(self) -> None:
        self._close_map()
        self._checked = None
        try:
            os.remove(self.path)
        except OSError:
            pass

    def warmup(self) -> None:
        """Map the mirror (building it if it is stale) ahead of the first search."""
        if self.keeps_mirror:
            with self._lock:
                self._usable(fresh=True)

    def rebuild_now(self) -> None:
        """Rebuild the mirror from the database (after a vacuum)."""
        if self.keeps_mirror and self._lock_file.acquire():
            try:
                with self._lock:
                    self.rebuild()
            finally:
                self._lock_file.release()

    def close(self) -> None:
        """Unmap the mirror."""
        with self._lock:
            self._close_map()
