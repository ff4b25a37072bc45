"""The SQLite storage engine: one file, WAL, plain SQL.

Reads run on the connection directly (autocommit, WAL snapshot per statement). Writes
go through :meth:`SQLiteStore.write`, which takes the cross-process write lock, runs one
``BEGIN IMMEDIATE`` transaction and, after COMMIT and still under the lock, hands the
:class:`Changes` to a callback (the code mirror) so that derived data is updated by
exactly one process at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import apsw
import numpy as np

from semcache.errors import CorruptCacheError, ReadOnlyCacheError
from semcache.store.base import (
    Changes,
    EntryRow,
    accept_incarnation,
)
from semcache.store.connection import (
    DEFAULT_PRAGMAS,
    apply_pragmas,
    connect,
    translate,
    translated,
)
from semcache.store.locking import ClaimFile, ReadOnlyLock, WriteLock
from semcache.store.schema import (
    SCHEMA_VERSION,
    ensure_schema,
    file_version,
    read_settings,
)
from semcache.store.sqlite_admin import SQLiteAdmin
from semcache.store.sqlite_write import CODE_BYTES, WriteBlock, WriteTxn

log = logging.getLogger("semcache")

_ROW_COLUMNS = (
    "id, namespace, partition_id, prompt, response, metadata, tokens, created_at, "
    "accessed_at, expires_at, ttl, hits"
)
_BY_KEY = f"SELECT {_ROW_COLUMNS} FROM entries WHERE key_hash = ?"
_PRAGMA_PREFIX = "sqlite_"
_SEQ = "SELECT change_seq FROM sync_state WHERE id = 1"
_STATE = "SELECT change_seq, state_token FROM sync_state WHERE id = 1"
_STATE_AFTER = ("SELECT change_seq, state_token, (SELECT data_version FROM pragma_data_version) "
                "FROM sync_state WHERE id = 1")
_CODES_THROUGH = "SELECT codes_through FROM sync_state WHERE id = 1"
_INCARNATION = "SELECT value FROM settings WHERE name = 'incarnation'"
#: close() writes at most this many pending entry_codes rows (~0.1-0.2 s), waiting at most
#: CLOSE_CATCH_UP_WAIT_S for the write lock; what is left waits for the next writer.
CLOSE_CATCH_UP_ROWS = 16_384
CLOSE_CATCH_UP_WAIT_S = 0.2
_COUNTERS = frozenset(("hits", "exact_hits", "semantic_hits", "misses", "puts", "evictions",
                       "expirations", "tokens_saved", "entries", "bytes"))


class SQLiteStore(SQLiteAdmin):
    """Storage engine over one SQLite file (see docs/schema.md for the tables).

    The path is resolved once (symlinks included), so that every way of naming the same
    database shares one lock file and one code mirror.
    """

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.location = path
        path = os.path.realpath(path)
        self.path = path
        self.mirror_path = path + "-codes"
        self._mutex = threading.RLock()  # one connection, shared by the threads of a process
        self._conn: Any = connect(path, readonly=readonly)
        if not readonly and self._conn.readonly("main"):
            # A write-protected file (chmod 0444, read-only mount): SQLite opened it for
            # reading. Gets work; writes raise ReadOnlyCacheError.
            log.info("semcache: %s is not writable; opened read-only", path)
            readonly = True
        self.readonly = readonly
        self._file_lock = None if readonly else WriteLock(path + ".lock")
        self._claims = ClaimFile(path + ".claims")
        self.lock: WriteLock | ReadOnlyLock = self._file_lock or ReadOnlyLock(path)
        try:
            with translated(path):
                if readonly and file_version(self._conn, path) < SCHEMA_VERSION \
                        and os.access(path, os.W_OK):
                    _migrate(path)  # an older file read by a newer semcache (e.g. the CLI)
                #: True when this open made the file a cache (it was empty under the lock):
                #: only then may a failed open remove it (another open may be using it).
                self.created = ensure_schema(self._conn, path,
                                             None if readonly else self._file_lock) == 0
                self.settings = read_settings(self._conn)
            if not all(isinstance(v, str) for kv in self.settings.items() for v in kv):
                raise CorruptCacheError(f"cache file {path!r} is corrupt (settings table "
                                        "holds non-text values); delete it to start a new cache")
            pragmas = dict(DEFAULT_PRAGMAS)
            pragmas.update({k[len(_PRAGMA_PREFIX):]: v for k, v in self.settings.items()
                            if k.startswith(_PRAGMA_PREFIX)})
            apply_pragmas(self._conn, pragmas, path)
            self._pragmas = pragmas
        except ReadOnlyCacheError as exc:
            self._conn.close()
            directory = os.path.dirname(os.path.abspath(path))
            if os.access(directory, os.W_OK):
                raise
            raise ReadOnlyCacheError(
                f"{exc}; its directory {directory!r} is not writable, and SQLite must create "
                f"{path + '-shm'!r} (and -wal) there to read a WAL file: make the directory "
                "writable for this user, or read a copy") from None
        except BaseException:
            self._conn.close()
            raise
        self._pid = os.getpid()
        # The exact tier's statement runs on a cursor of its own, kept: creating a cursor
        # per lookup costs ~0.35 us of a ~5 us hit. fetchall() always runs the statement to
        # its end, so no read transaction stays open between lookups.
        self._key_cursor: Any = self._conn.cursor()
        # Likewise for the counters every write transaction adds (~1.5 us per statement).
        self._counter_cursor: Any = self._conn.cursor()
        self._forked = False  # set in a forked child (see _after_fork): reconnect first
        self._codes_pending = False  # this process wrote entries not in entry_codes yet
        self.incarnation: str | None = self.settings.get("incarnation")
        self.on_incarnation: Callable[[], None] | None = None
        self._incarnation_version = self.data_version()  # data_version of the last check
        self._series_pruned = 0  # minute this process last pruned counter_minutes
        self._minute_open: int | None = None  # the series' current minute, as last seen
        _STORES.add(self)

    # -- connection management -------------------------------------------------------

    def _check_fork(self) -> None:
        # A connection must not cross fork() (gunicorn --preload): reopen in the child.
        if os.getpid() != self._pid:
            self._conn = connect(self.path, readonly=self.readonly)
            apply_pragmas(self._conn, self._pragmas, self.path)
            self._key_cursor = self._conn.cursor()
            self._counter_cursor = self._conn.cursor()
            self._pid = os.getpid()
        self._forked = False

    def close(self) -> None:
        if self._codes_pending and not self.readonly:
            try:  # leave the sqlite-vec table complete for the sqlite3 CLI, if it is quick
                self.catch_up_codes(CLOSE_CATCH_UP_ROWS, timeout=CLOSE_CATCH_UP_WAIT_S)
            except Exception as exc:  # noqa: BLE001 - derived data: the next writer catches up
                log.warning("semcache: closing %s: entry_codes not caught up (%s)", self.path,
                            exc)
        with self._mutex:
            self.lock.close()
            self._claims.close()
            try:
                self._conn.close()
            except apsw.Error as exc:
                log.warning("semcache: error closing %s: %s", self.path, exc)

    # -- reads ------------------------------------------------------------------------

    def get_by_key(self, key_hash: bytes) -> EntryRow | None:
        # The exact tier's hot path: no context-manager helpers, one indexed SELECT.
        with self._mutex:
            if self._forked:
                self._check_fork()
            try:
                rows = self._key_cursor.execute(_BY_KEY, (key_hash,)).fetchall()
            except (apsw.Error, UnicodeDecodeError) as exc:
                raise translate(exc, self.path) from None
        return EntryRow(*rows[0]) if rows else None

    def get_by_id(self, entry_id: int, *, with_vector: bool = False) -> EntryRow | None:
        rows = self.get_by_ids([entry_id], with_vector=with_vector)
        return rows[0] if rows else None

    def get_by_ids(self, ids: Sequence[int], *, with_vector: bool = False) -> list[EntryRow]:
        if not ids:
            return []
        cols = _ROW_COLUMNS + (", vector" if with_vector else "")
        marks = ",".join("?" * len(ids))
        with self._mutex, translated(self.path):
            self._check_fork()
            return [EntryRow(*r) for r in self._conn.execute(
                f"SELECT {cols} FROM entries WHERE id IN ({marks})", tuple(ids))]

    def find_partition(self, namespace: str, scope: str) -> int | None:
        with self._mutex, translated(self.path):
            self._check_fork()
            for (pid,) in self._conn.execute(
                "SELECT id FROM partitions WHERE namespace = ? AND scope = ?", (namespace, scope)
            ):
                return int(pid)
        return None

    def _scalar(self, sql: str, what: str) -> int:
        """The one integer a bookkeeping query returns; its absence means a damaged file."""
        rows = self._conn.execute(sql).fetchall()
        if len(rows) != 1 or not isinstance(rows[0][0], int):
            raise CorruptCacheError(f"cache file {self.path!r} is corrupt ({what} is missing "
                                    "or not an integer); delete it to start a new cache")
        return int(rows[0][0])

    def change_seq(self) -> int:
        with self._mutex, translated(self.path):
            self._check_fork()
            return self._scalar(_SEQ, "sync_state.change_seq")

    def sync_state(self) -> tuple[int, int]:
        """``(change_seq, state_token)``: the exact database state the code mirror must match
        (a restored backup has another token even at the same change_seq)."""
        with self._mutex, translated(self.path):
            self._check_fork()
            return self._state()

    def _state(self) -> tuple[int, int]:
        rows = self._conn.execute(_STATE).fetchall()
        seq, token = rows[0] if len(rows) == 1 else (None, None)
        if not isinstance(seq, int) or not isinstance(token, int):
            raise CorruptCacheError(f"cache file {self.path!r} is corrupt (sync_state is "
                                    "missing or not integers); delete it to start a new cache")
        return seq, token

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when another connection commits (the
        semantic index's cheap "did anything change?" check, ~2 us)."""
        with self._mutex:
            if os.getpid() != self._pid:
                self._check_fork()
            try:
                version = self._conn.execute("PRAGMA data_version").fetchall()[0][0]
            except apsw.Error as exc:
                raise translate(exc, self.path) from None
        assert isinstance(version, int)
        return version

    def check_incarnation(self, force: bool = False) -> bool:
        """See :meth:`Store.check_incarnation`: the token is read (~2 us) only after
        another connection committed (``PRAGMA data_version`` moved) or when forced."""
        with self._mutex, translated(self.path):
            self._check_fork()
            return self._incarnation_moved(force)

    def _incarnation_moved(self, force: bool) -> bool:
        """Caller holds the mutex: read the token if it may have moved; a new one is taken
        (settings read again) once ``on_incarnation`` accepted it - if that raises, the
        next check raises again."""
        version = self._conn.execute("PRAGMA data_version").fetchall()[0][0]
        if not force and version == self._incarnation_version:
            return False
        rows = self._conn.execute(_INCARNATION).fetchall()
        token = rows[0][0] if rows else None
        if token == self.incarnation:
            self._incarnation_version = version
            return False
        log.warning("semcache: %s was replaced by another cache (incarnation %s -> %s); "
                    "ids remembered by this process are dropped", self.path,
                    self.incarnation, token)
        accept_incarnation(self, token, read_settings(self._conn))
        self._incarnation_version = version
        self._minute_open = None  # the time series' open minute was the old file's
        self._series_pruned = 0
        return True

    def counters(self) -> dict[str, int]:
        with self._mutex, translated(self.path):
            self._check_fork()
            out = {n: v for n, v in self._conn.execute(
                "SELECT name, value FROM counters WHERE name <> 'minute' "
                "AND name NOT GLOB 'minute:*'")}
        if not _COUNTERS <= out.keys() or not all(isinstance(v, int) for v in out.values()):
            raise CorruptCacheError(f"cache file {self.path!r} is corrupt (counters table "
                                    "damaged); delete it to start a new cache")
        return out

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only SQL statement of this engine (admin reads, checks)."""
        with self._mutex, translated(self.path):
            self._check_fork()
            return [tuple(r) for r in self._conn.execute(sql, params)]

    def code_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
        """Everything the code mirror needs, in id order, read in one snapshot.

        Returns (ids int64, partition ids int32, expires u32-ready float64 with NaN for
        never, codes (n, 32) uint8, change_seq, state_token)."""
        with self._mutex, translated(self.path):
            self._check_fork()
            with self._conn:  # one read transaction: rows and state from the same snapshot
                seq, token = self._state()
                rows = self._conn.execute(
                    "SELECT id, partition_id, expires_at, code FROM entries "
                    "WHERE code IS NOT NULL ORDER BY id").fetchall()
        n = len(rows)
        try:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
            parts = np.fromiter((r[1] for r in rows), dtype=np.int32, count=n)
            expires = np.fromiter((np.nan if r[2] is None else r[2] for r in rows),
                                  dtype=np.float64, count=n)
            codes = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.uint8).reshape(n, 32) \
                if n else np.zeros((0, 32), dtype=np.uint8)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CorruptCacheError(f"cache file {self.path!r} is corrupt (entries.code or "
                                    f"partition_id damaged: {exc}); delete it to start a new "
                                    "cache") from None
        return ids, parts, expires, codes, seq, token

    def knn(self, code: bytes, partition_id: int, now: float, k: int) -> list[tuple[int, int]]:
        """Hamming k-nearest codes in one partition, unexpired: sqlite-vec's search of
        ``entry_codes``, merged with a direct scan of the entries it does not hold yet (above
        ``codes_through``, at most ~CODES_LAG_MAX), both read from one snapshot."""
        with self._mutex, translated(self.path):
            self._check_fork()
            with self._conn:  # one read transaction: the mark and both searches agree
                through = self._scalar(_CODES_THROUGH, "sync_state.codes_through")
                found = [(int(i), int(d)) for i, d in self._conn.execute(
                    "SELECT entry_id, distance FROM entry_codes WHERE code MATCH vec_bit(?) "
                    "AND k = ? AND partition_id = ? AND expires_at > ?",
                    (code, k, partition_id, int(now)))]
                # expires_at > floor(now) is the vec0 filter's ceil(expires_at) > floor(now)
                tail = self._conn.execute(
                    "SELECT id, code FROM entries WHERE id > ? AND partition_id = ? AND "
                    f"length(code) = {CODE_BYTES} AND (expires_at IS NULL OR expires_at > ?)",
                    (through, partition_id, int(now))).fetchall()
        if not tail:
            return found
        codes = np.frombuffer(b"".join(c for _, c in tail), dtype=np.uint8).reshape(
            len(tail), CODE_BYTES)
        query = np.frombuffer(code, dtype=np.uint8)
        distances = np.bitwise_count(codes ^ query).sum(axis=1, dtype=np.int64).tolist()
        merged = found + [(int(i), d) for (i, _), d in zip(tail, distances, strict=True)]
        merged.sort(key=lambda hit: hit[1])  # stable: sqlite-vec's order among its ties
        return merged[:k]

    def catch_up_codes(self, limit: int | None = None, timeout: float | None = 0.0) -> int:
        """Write pending entry_codes rows (at most ``limit``) if the write lock is free
        within ``timeout`` seconds; returns how many were written (0 if the lock was busy).
        Called by every flush of batched hits, by close() and by vacuum."""
        if self.readonly or not self.lock.acquire(timeout=timeout):
            return 0
        try:
            with self.write() as txn:
                return txn.catch_up_codes(limit)
        finally:
            self.lock.release()

    @property
    def codes_pending(self) -> bool:
        """True when this process wrote entries whose entry_codes rows may still be due."""
        return self._codes_pending

    def search(self, code: bytes, vector: np.ndarray, partition_id: int, now: float,
               k: int) -> list[tuple[EntryRow, float]]:
        """sqlite-vec's Hamming k-nearest, rescored by exact cosine (best first)."""
        ids = [i for i, _ in self.knn(code, partition_id, now, k)]
        rows = [r for r in self.get_by_ids(ids, with_vector=True)
                if r.partition_id == partition_id and r.vector is not None]
        if not rows:
            return []
        stored = np.frombuffer(b"".join(r.vector for r in rows if r.vector is not None),
                               dtype="<f4").reshape(len(rows), -1).astype(np.float64)
        norms = np.linalg.norm(stored, axis=1)
        norms[norms == 0] = np.inf  # stored norms are not trusted; zero matches nothing
        sims = np.clip((stored @ vector.astype(np.float64)) / norms, -1.0, 1.0)
        ranked = sorted(zip(rows, sims.tolist(), strict=True), key=lambda rs: (-rs[1], -rs[0].id))
        for row, _ in ranked:
            row.vector = None
        return ranked

    # -- writes -----------------------------------------------------------------------

    def write(self, on_commit: Callable[[Changes], None] | None = None,
              timeout: float | None = None) -> WriteBlock:
        """One write transaction under the cross-process lock (see :class:`WriteBlock`)."""
        return WriteBlock(self, on_commit, timeout)

    def _stamp_after(self, changes: Changes) -> None:
        """The state a transaction leaves, and ``PRAGMA data_version`` read inside it:
        nobody else can commit until ours is done, and our own COMMIT does not change it,
        so it is exactly the version at which the mirror (once updated) matches."""
        rows = self._conn.execute(_STATE_AFTER).fetchall()
        seq, token, version = rows[0] if len(rows) == 1 else (None, None, None)
        if not isinstance(seq, int) or not isinstance(token, int):
            raise CorruptCacheError(f"cache file {self.path!r} is corrupt (sync_state is "
                                    "missing or not integers); delete it to start a new cache")
        changes.seq_after, changes.token_after = seq, token
        changes.data_version = version if isinstance(version, int) else None

    def claim(self, key_hash: bytes, lease: float) -> bool:
        """A byte-range lock per key on ``<db>.claims`` (the kernel frees it if we die)."""
        return self._claims.try_claim(key_hash)  # lease: not needed, the kernel frees it

    def release(self, key_hash: bytes) -> None:
        self._claims.release(key_hash)

    def vacuum(self) -> dict[str, int]:
        """Make ``entry_codes`` match ``entries`` again (rows deleted or edited by hand with
        the sqlite3 CLI), then rebuild the file compactly (VACUUM) and truncate the WAL,
        all under the write lock. Returns the repairs made."""
        with self.lock.hold():
            with self.write() as txn:
                orphans, added = txn.repair_codes()
            with self._mutex, translated(self.path):
                self._check_fork()
                self._conn.execute("VACUUM")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return {"orphan_codes": orphans, "missing_codes": added}

    def write_settings(self, values: dict[str, str]) -> None:
        with self.write() as txn:
            txn.set_settings(values)
        self.settings.update(values)

    def pin_settings(self, values: dict[str, str]) -> dict[str, str]:
        """Under the write lock: write what is not stored yet, return what is stored."""
        with self.write() as txn:
            stored = txn.add_settings(values)
        self.settings = dict(stored)
        return dict(stored)


#: Every open store of this process: a forked child marks them all, so that the exact
#: tier's hot path checks a flag instead of calling getpid() on every lookup.
_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def _after_fork() -> None:
    for store in list(_STORES):
        store._forked = True
        store._mutex = threading.RLock()  # a parent's thread may have held it at fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _migrate(path: str) -> None:
    """Apply pending migrations through a short-lived writable connection."""
    conn = connect(path)
    lock = WriteLock(path + ".lock")
    try:
        ensure_schema(conn, path, lock)
    finally:
        lock.close()
        conn.close()


__all__ = ["SQLiteStore", "WriteTxn"]
