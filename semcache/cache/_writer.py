"""The write gateway of a cache: every write goes through :class:`Writer`, which also
carries the batched effects of reads (access times, hit counts, sliding expiry, shared
counters) into the next transaction.

A hit must stay a read: writing ``accessed_at`` and a counter on every hit would make every
reader a writer, serialized behind the cross-process write lock. Hits are therefore
recorded here, in memory, and written in one transaction at most every
:data:`FLUSH_INTERVAL` seconds: by the next write of this process, by the next lookup that
finds the batch due, or by a background timer, whichever comes first. So a worker stopped
by SIGTERM (uvicorn re-raises it; ``atexit`` does not run) loses at most one interval of
counts, and a quiet worker's counts reach the shared stats within that interval too.

Flushing never makes a read fail: if the batch cannot be written (the write lock is busy,
the disk is full, the file went read-only), it stays pending and is retried; past
:data:`MAX_PENDING` entries the oldest updates are dropped with one warning.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from semcache.errors import CacheFileError
from semcache.store.base import AccessUpdate, EntryRow, NewEntry, Store, StoreTxn, WriteConflict

log = logging.getLogger("semcache")

T = TypeVar("T")

#: Batched updates are written at least this often (seconds).
FLUSH_INTERVAL = 1.0
#: Counter of each kind of hit (HitKind).
_HIT_COUNTERS = {"exact": "exact_hits", "semantic": "semantic_hits"}
#: Past this many pending entries, updates are dropped rather than held (~100 B each).
MAX_PENDING = 100_000

#: Attempts of one write transaction that the server keeps aborting to break deadlocks
#: (PostgreSQL; each abort means another client's transaction went through).
CONFLICT_ATTEMPTS = 3
#: A due batch that found the write lock busy is tried again this much later (seconds),
#: not on every read meanwhile: each try is a lock attempt (a syscall) while another
#: process writes - ~20k wasted tries per second over 8 busy readers.
BUSY_RETRY = 0.05


class Write:
    """One write transaction (``txn``) that also carries the pending batch; ``count`` adds
    counters that commit (or roll back) with the transaction."""

    def __init__(self, txn: StoreTxn) -> None:
        self.txn = txn
        self.counts: dict[str, int] = {}

    def count(self, **deltas: int) -> None:
        for name, value in deltas.items():
            self.counts[name] = self.counts.get(name, 0) + value


class Writer:
    """Every write of one :class:`~semcache.Cache` (:meth:`write`, :meth:`run`), and its
    pending access updates and counters. Every flush of the batch also runs the engine's
    upkeep (``Store.upkeep``: SQLite's sqlite-vec rows), which never waits for the write
    lock; nothing runs it on an idle timer, so an idle cache writes nothing."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._access: dict[int, AccessUpdate] = {}
        self._counts: dict[str, int] = {}
        self._epoch = 0  # bumped by forget(): access updates taken before it are void
        self.last_flush = clock()  # read by the lookup path (see LookupPipeline.run_prompt)
        self._warned = False
        self._timer: _FlushTimer | None = None
        self._timer_running = False
        self._stopped = False
        _WRITERS.add(self)

    # -- recording -----------------------------------------------------------------------

    def record_hit(self, row: EntryRow, kind: str, now: float, refresh: bool) -> float | None:
        """Batch the effects of a hit on ``row``; returns the entry's expiry in force."""
        expires = row.expires_at
        entry_id = row.id
        # acquire/release rather than ``with``: on every hit, and ``with`` looks up and
        # binds __enter__ and __exit__ each time.
        lock = self._lock
        lock.acquire()
        try:
            update = self._access.get(entry_id)
            if update is None:
                update = self._access[entry_id] = AccessUpdate(now, 1)
            else:
                if update.expires_at is not None and expires is not None \
                        and update.expires_at > expires:
                    expires = update.expires_at
                if now > update.accessed_at:
                    update.accessed_at = now
                update.hits += 1
            if refresh and row.ttl is not None:
                expires = update.expires_at = now + row.ttl
            counts = self._counts
            counts["hits"] = counts.get("hits", 0) + 1
            name = _HIT_COUNTERS[kind]
            counts[name] = counts.get(name, 0) + 1
            if row.tokens:
                counts["tokens_saved"] = counts.get("tokens_saved", 0) + row.tokens
        finally:
            lock.release()
        if not self._timer_running:
            self._ensure_timer()
        return expires

    def count(self, **deltas: int) -> None:
        """Counters outside any write (misses, guard rejections)."""
        with self._lock:
            self._add(deltas)
        if not self._timer_running:
            self._ensure_timer()

    def _add(self, deltas: dict[str, int]) -> None:
        for name, value in deltas.items():
            if value:
                self._counts[name] = self._counts.get(name, 0) + value

    def pending_expiry(self, entry_id: int) -> float | None:
        """A sliding expiry pushed out by a hit that is not written yet."""
        update = self._access.get(entry_id)
        return None if update is None else update.expires_at

    @property
    def pending(self) -> bool:
        return bool(self._access or self._counts)

    def forget(self) -> None:
        """Drop the pending access updates: their entry ids are another incarnation's (the
        cache was replaced under this process; counters are kept). A batch already taken
        by a write in progress is dropped too, before it is applied."""
        with self._lock:
            self._access = {}
            self._epoch += 1

    # -- writing -------------------------------------------------------------------------

    def _take(self) -> tuple[dict[int, AccessUpdate], dict[str, int]]:
        with self._lock:
            taken = self._access, self._counts
            self._access, self._counts = {}, {}
        return taken

    def _restore(self, access: dict[int, AccessUpdate], counts: dict[str, int],
                 epoch: int | None = None) -> None:
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                access = {}  # taken before the cache was replaced: void
            for entry_id, update in access.items():
                newer = self._access.get(entry_id)
                if newer is None:
                    self._access[entry_id] = update
                else:  # hit again since it was taken: keep both hits' effects
                    newer.hits += update.hits
                    newer.accessed_at = max(newer.accessed_at, update.accessed_at)
                    if update.expires_at is not None:
                        newer.expires_at = max(newer.expires_at or 0.0, update.expires_at)
            self._add(counts)
            if len(self._access) > MAX_PENDING:
                self._drop_oldest(len(self._access) - MAX_PENDING)

    def _drop_oldest(self, n: int) -> None:
        for entry_id in list(self._access)[:n]:
            del self._access[entry_id]
        if not self._warned:
            self._warned = True
            log.warning("semcache: %s: batched access times cannot be written (see earlier "
                        "errors); dropping the oldest %d, hit counters are kept",
                        self._store.location, n)

    @contextmanager
    def write(self, timeout: float | None = None) -> Iterator[Write]:
        """A store write transaction carrying the pending batch; on failure the batch is
        put back for the next attempt and the transaction's own counts are dropped."""
        epoch = self._epoch
        access, counts = self._take()
        try:
            with self._store.write(timeout=timeout) as txn:
                batch = self._begin(txn, access, epoch)
                yield batch
                self._end(batch, counts)
        except BaseException:
            self._restore(access, counts, epoch)
            raise
        self._written()

    def run(self, work: Callable[[Write], T], timeout: float | None = None) -> T:
        """``work`` inside :meth:`write`'s transaction; returns what it returns: as
        ``with writer.write() as w: return work(w)``, without a generator-based context
        manager around it (puts and restores come this way), and with one difference: a
        transaction the server aborted to break a deadlock
        (:class:`~semcache.store.base.WriteConflict`: nothing of it written) is run again,
        up to :data:`CONFLICT_ATTEMPTS` times in all (``work`` only writes through its
        transaction, so running it again is safe). :meth:`write` does not retry."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            epoch = self._epoch
            access, counts = self._take()
            try:
                with self._store.write(timeout=timeout) as txn:
                    batch = self._begin(txn, access, epoch)
                    result = work(batch)
                    self._end(batch, counts)
            except WriteConflict as exc:
                self._restore(access, counts, epoch)
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                log.debug("semcache: %s: write retried (%s)", self._store.location, exc)
                continue
            except BaseException:
                self._restore(access, counts, epoch)
                raise
            self._written()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def put_alone(self, entry: NewEntry, max_entries: int | None) -> int | None:
        """One put when there is no pending batch to carry, written by the engine's
        :meth:`~semcache.store.base.Store.put_alone` (PostgreSQL: one round trip instead of
        three); its id, or None: write it in a transaction (:meth:`run`)."""
        if self.pending:
            return None
        entry_id = self._store.put_alone(entry, max_entries, self._clock())
        if entry_id is not None:
            self._written()
        return entry_id

    def _begin(self, txn: StoreTxn, access: dict[int, AccessUpdate], epoch: int) -> Write:
        if access and epoch == self._epoch:  # else taken before the cache was replaced
            txn.apply_access(access)
        return Write(txn)

    def _end(self, batch: Write, counts: dict[str, int]) -> None:
        merged = dict(counts)
        for name, value in batch.counts.items():
            merged[name] = merged.get(name, 0) + value
        batch.txn.add_counters(merged, self._clock())  # this minute of the time series

    def _written(self) -> None:
        self.last_flush = self._clock()

    def upkeep(self) -> None:
        """The engine's deferred work, if any (done by every flush; never raises)."""
        if not self._store.upkeep_due:
            return
        try:
            self._store.upkeep()
        except CacheFileError as exc:
            log.debug("semcache: %s: deferred index work postponed (%s)",
                      self._store.location, exc)

    def flush(self, timeout: float | None) -> bool:
        """Write the batch now, then the engine's deferred work; False when the write lock
        stayed busy for ``timeout``. Once it returned True, a cache that gets no further
        call writes nothing: no timer writes derived data on its own."""
        if self._store.readonly:
            return True
        if self.pending:
            if not self._store.lock.acquire(timeout=timeout):
                return False
            try:
                with self.write():
                    pass
            finally:
                self._store.lock.release()
        self.upkeep()
        return True

    def maybe_flush(self, now: float) -> None:
        """Flush if the batch is due, never waiting and never raising (reads call this)."""
        if now - self.last_flush < FLUSH_INTERVAL or not self.pending:
            return
        self.try_flush()

    def try_flush(self) -> None:
        try:
            if not self.flush(timeout=0):
                self.last_flush = self._clock() - FLUSH_INTERVAL + BUSY_RETRY
        except CacheFileError as exc:
            self.last_flush = self._clock()  # retry one interval later, not on every read
            if not self._warned:
                self._warned = True
                log.warning("semcache: batched hit counts of %s not written yet (%s); "
                            "retrying", self._store.location, exc)

    def close_store(self, wait: float) -> None:
        """Stop, write the batch (waiting at most ``wait`` seconds for the write lock, else
        drop it with a warning naming it) and close the store; never raises."""
        self.stop()
        location = self._store.location
        try:
            if not self._store.readonly and self.pending:
                pending = self.describe_pending()
                if not self.flush(timeout=wait):
                    log.warning("semcache: closing %s: the write lock stayed busy; dropped %s",
                                location, pending)
        except Exception as exc:  # noqa: BLE001 - closing a cache that was read must not fail
            log.warning("semcache: closing %s: batched hit counts and access times were not "
                        "written (%s)", location, exc)
        finally:
            self._store.close()

    def describe_pending(self) -> str:
        hits = self._counts.get("hits", 0)
        return (f"{len(self._access)} access-time updates and {hits} hit(s), "
                f"{self._counts.get('misses', 0)} miss(es) of counters")

    # -- background timer ------------------------------------------------------------------

    def _ensure_timer(self) -> None:
        """Start the flush timer of this process unless it runs (``_timer_running`` is the
        cheap check on every hit: the timer clears it when it ends, and a forked child's
        writers are reset by :func:`_after_fork`, since the child has no threads)."""
        with self._lock:
            if self._timer_running or self._stopped:
                return
            timer = self._timer = _FlushTimer(self)
            self._timer_running = True
        timer.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            timer, self._timer = self._timer, None
        if timer is not None and timer.pid == os.getpid():
            timer.stop()

    def _forked(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it
        self._timer = None
        self._timer_running = False


class _FlushTimer(threading.Thread):
    """Writes a due batch of hit effects even when the process makes no further call.
    With nothing pending it writes nothing (the engine's deferred work rides on flushes)."""

    def __init__(self, writer: Writer) -> None:
        super().__init__(name="semcache-flush", daemon=True)
        self.pid = os.getpid()
        # A weak reference: a cache dropped without close() must not be kept alive by this.
        self._writer = weakref.ref(writer)
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.wait(FLUSH_INTERVAL):
                writer = self._writer()
                if writer is None:
                    return
                if writer.pending:
                    writer.try_flush()
                del writer
        except Exception as exc:  # noqa: BLE001 - the next hit starts a new timer
            log.warning("semcache: the batched-hit flush timer stopped (%s)", exc)
        finally:
            writer = self._writer()
            if writer is not None and writer._timer is self:
                writer._timer_running = False

    def stop(self) -> None:
        self._stopped.set()


#: Every live writer of this process, so that a forked child can reset their timers.
_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


def _after_fork() -> None:
    for writer in list(_WRITERS):
        writer._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


__all__ = ["FLUSH_INTERVAL", "Write", "Writer"]
