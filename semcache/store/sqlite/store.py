"""The SQLite storage engine: one file, WAL, plain SQL, and its own semantic search.

Reads run on the connection directly (autocommit, WAL snapshot per statement). Writes go
through :meth:`SQLiteStore.write`, which takes the cross-process write lock, runs one
``BEGIN IMMEDIATE`` transaction and, after COMMIT and still under the lock, replays the
changes into the code mirror (:mod:`semcache.store.sqlite.index`), so that derived data is
updated by exactly one process at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import apsw
import numpy as np

from semcache.errors import (
    CacheFileError,
    CacheNotFoundError,
    CorruptCacheError,
    InvalidInputError,
    NotASemcacheFileError,
    ReadOnlyCacheError,
)
from semcache.store.base import (
    EntryFilter,
    EntryOrder,
    EntryRecord,
    EntryRow,
    NamespaceSummary,
    Neighbours,
    NewEntry,
    Outcome,
    OutcomePool,
    VacuumProgress,
    Verdict,
    accept_incarnation,
)
from semcache.store.filters import compile_filter, order_sql
from semcache.store.rescore import DamagedVectors
from semcache.store.sqlite import check as checks
from semcache.store.sqlite import codes
from semcache.store.sqlite import outcomes as outcome_sql
from semcache.store.sqlite.connection import DEFAULT_PRAGMAS, Database, translate, translated
from semcache.store.sqlite.index import SemanticIndex
from semcache.store.sqlite.locking import ClaimFile, ReadOnlyLock, WriteLock
from semcache.store.sqlite.schema import (
    SCHEMA_VERSION,
    ensure_schema,
    file_version,
    read_settings,
)
from semcache.store.sqlite.write import WriteBlock

log = logging.getLogger("semcache")

#: Suffixes of the files an SQLite cache consists of.
SQLITE_FILES = ("", "-wal", "-shm", "-codes", ".lock", ".claims")
_BY_KEY = f"SELECT {codes.ROW_COLUMNS} FROM entries WHERE key_hash = ?"
_new_object = object.__new__
_PRAGMA_PREFIX = "sqlite_"
#: The upkeep writes at most this many pending entry_codes rows per call (~10-20 ms under
#: the lock); close() writes at most CLOSE_CATCH_UP_ROWS (~0.1-0.2 s), waiting at most
#: CLOSE_CATCH_UP_WAIT_S for the write lock; what is left waits for the next writer.
UPKEEP_ROWS = 2048
CLOSE_CATCH_UP_ROWS = 16_384
CLOSE_CATCH_UP_WAIT_S = 0.2
_COUNTERS = frozenset(("hits", "exact_hits", "semantic_hits", "misses", "puts", "evictions",
                       "expirations", "tokens_saved", "entries", "bytes"))
_RECORD_COLUMNS = (
    "e.id, e.key_hash, e.namespace, p.scope, e.prompt, e.response, e.metadata, e.tokens, "
    "e.size, e.created_at, e.accessed_at, e.expires_at, e.ttl, e.hits, e.code IS NOT NULL"
)
_FROM = "FROM entries e JOIN partitions p ON p.id = e.partition_id"
_INCARNATION = "SELECT value FROM settings WHERE name = 'incarnation'"


def open_sqlite(path: str, *, readonly: bool = False, use_mirror: bool = True,
                create: bool = True) -> SQLiteStore:
    """Open the cache file at ``path``, creating it unless ``readonly`` or not ``create``
    (then it must be an existing, non-empty file)."""
    if not path or path == ":memory:" or path.startswith("file:"):
        raise InvalidInputError(
            f"path must name a file (semcache is persistent); got {path!r}")
    if not create:
        if not os.path.exists(path):
            raise CacheNotFoundError(f"no cache file at {path!r}")
        if os.path.isdir(path):
            raise CacheFileError(f"{path!r} is a directory, not a cache file")
        if os.path.getsize(path) == 0:
            raise NotASemcacheFileError(f"{path!r} is an empty file, not a semcache cache")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CacheFileError(f"cannot create cache file {path!r}: its directory "
                             f"{directory!r} does not exist")
    created = not os.path.exists(path)
    try:
        return SQLiteStore(path, readonly=readonly, use_mirror=use_mirror, created=created)
    except BaseException:
        if created and not readonly:
            remove_files(os.path.realpath(path))
        raise


def remove_files(path: str) -> None:
    """Remove a cache file and its companions (WAL, shared memory, mirror, lock, claims)."""
    for suffix in SQLITE_FILES:
        try:
            os.remove(path + suffix)
        except OSError:
            pass


class SQLiteStore:
    """Storage engine over one SQLite file (see docs/schema.md for the tables).

    The path is resolved once (symlinks included), so that every way of naming the same
    database shares one lock file and one code mirror. ``use_mirror=False`` searches in SQL
    (sqlite-vec) only.
    """

    def __init__(self, path: str, *, readonly: bool = False, use_mirror: bool = True,
                 created: bool = False) -> None:
        self.location = path
        path = os.path.realpath(path)
        self.path = path
        db = self._db = Database(path, readonly=readonly)
        if not readonly and db.conn.readonly("main"):
            # A write-protected file (chmod 0444, read-only mount): SQLite opened it for
            # reading. Gets work; writes raise ReadOnlyCacheError.
            log.info("semcache: %s is not writable; opened read-only", path)
            readonly = db.readonly = True
        self.readonly = readonly
        self._file_lock = None if readonly else WriteLock(path + ".lock")
        self._claims = ClaimFile(path + ".claims")
        self.lock: WriteLock | ReadOnlyLock = self._file_lock or ReadOnlyLock(path)
        try:
            self.settings, fresh = self._open_schema(db)
        except ReadOnlyCacheError as exc:
            db.close()
            directory = os.path.dirname(os.path.abspath(path))
            if os.access(directory, os.W_OK):
                raise
            raise ReadOnlyCacheError(
                f"{exc}; its directory {directory!r} is not writable, and SQLite must create "
                f"{path + '-shm'!r} (and -wal) there to read a WAL file: make the directory "
                "writable for this user, or read a copy") from None
        except BaseException:
            db.close()
            raise
        # Created by this open: the file did not exist and this open made it a cache (two
        # first opens at once both find no file; only one migrates it from empty).
        self.created = created and fresh
        #: The incarnation token last read, and PRAGMA data_version when it was read.
        self.incarnation: str | None = self.settings.get("incarnation")
        self.on_incarnation: Callable[[], None] | None = None
        self._incarnation_version = db.data_version()
        # The process whose connection _incarnation_version was read on: a forked child's
        # new connection counts data_version anew, so its first check must read the token.
        self._version_pid = db.pid
        self.commits_seen = 0  # see Store.commits_seen
        # The data_version this thread's last incarnation check read, handed to the search
        # that follows it in the same lookup (``nearest(checked=True)``): one PRAGMA per
        # semantic lookup instead of two. Other searches read their own.
        self._version_read = threading.local()
        self._damaged = DamagedVectors(path)
        self._index = SemanticIndex(db, self.lock, lambda: self.settings, path + "-codes",
                                    self._damaged, use_mirror=use_mirror)

    def _open_schema(self, db: Database) -> tuple[dict[str, str], bool]:
        """Migrate the file if needed, read its settings, apply its pragmas; True when
        this open found the file empty (it made it a cache)."""
        path = self.path
        with translated(path):
            if self.readonly and file_version(db.conn, path) < SCHEMA_VERSION \
                    and os.access(path, os.W_OK):
                _migrate(path)  # an older file read by a newer semcache (e.g. the CLI)
            fresh = ensure_schema(db.conn, path, self._file_lock) == 0
            settings = read_settings(db.conn)
        if not all(isinstance(v, str) for kv in settings.items() for v in kv):
            raise CorruptCacheError(f"cache file {path!r} is corrupt (settings table "
                                    "holds non-text values); delete it to start a new cache")
        pragmas = dict(DEFAULT_PRAGMAS)
        pragmas.update({k[len(_PRAGMA_PREFIX):]: v for k, v in settings.items()
                        if k.startswith(_PRAGMA_PREFIX)})
        db.configure(pragmas)
        return settings, fresh

    @property
    def mirror_path(self) -> str:
        """The code mirror beside the file (derived data, rebuilt from the file)."""
        return self._index.path

    def close(self) -> None:
        if self._db.codes_pending and not self.readonly:
            try:  # leave the sqlite-vec table complete for the sqlite3 CLI, if it is quick
                self.catch_up_codes(CLOSE_CATCH_UP_ROWS, timeout=CLOSE_CATCH_UP_WAIT_S)
            except Exception as exc:  # noqa: BLE001 - derived data: the next writer catches up
                log.warning("semcache: closing %s: entry_codes not caught up (%s)", self.path,
                            exc)
        self._index.close()
        with self._db.mutex:
            self.lock.close()
            self._claims.close()
            self._db.close()

    def drop(self, *, if_empty: bool = False) -> None:
        """Close, and remove the file with its companions (``if_empty``: only a file that
        holds no entries, as a failed open leaves it)."""
        try:
            keep = if_empty and bool(self._db.query("SELECT count(*) FROM entries")[0][0])
        except (CacheFileError, IndexError):
            keep = False  # a file this open could not even read: nothing to keep
        self.close()
        if not keep:
            remove_files(self.path)

    # -- the lookup path ------------------------------------------------------------------

    def get_by_key(self, key_hash: bytes) -> EntryRow | None:
        # The exact tier's hot path: one indexed SELECT, and the mutex taken by acquire()
        # and release() rather than ``with`` (which looks up and binds __enter__ and
        # __exit__ on every call: ~0.1 us of a ~9 us hit).
        db = self._db
        mutex = db.mutex
        mutex.acquire()
        try:
            if db.forked:
                db.check_fork()
            # Iterated to its end (key_hash is UNIQUE: one row at most), so the statement
            # is reset and no read transaction stays open; no list built, as fetchall does.
            found = None
            for found in db.key_cursor.execute(_BY_KEY, (key_hash,)):  # noqa: B007
                pass
        except (apsw.Error, UnicodeDecodeError) as exc:
            raise translate(exc, self.path) from None
        finally:
            mutex.release()
        if found is None:
            return None
        # The row's fields set in place: EntryRow(*found) goes through the dataclass's
        # Python __init__ (~3k instructions, a tenth of the exact hit); the slots are the same.
        row = _new_object(EntryRow)
        (row.id, row.namespace, row.partition_id, row.prompt, row.response, row.metadata,
         row.tokens, row.created_at, row.accessed_at, row.expires_at, row.ttl,
         row.hits) = found
        row.vector = None
        return row

    def get_by_ids(self, ids: Sequence[int], *, with_vector: bool = False) -> list[EntryRow]:
        return codes.read_rows(self._db, ids, with_vector)

    def find_partition(self, namespace: str, scope: str) -> int | None:
        for (pid,) in self._db.query(
                "SELECT id FROM partitions WHERE namespace = ? AND scope = ?", (namespace, scope)):
            return int(pid)
        return None

    def nearest(self, vector: np.ndarray, code: bytes, partition_id: int, now: float, k: int,
                min_cosine: float | None = None, checked: bool = False) -> Neighbours:
        """The mirror's (or sqlite-vec's) Hamming k-nearest, rescored by exact cosine."""
        read = self._version_read
        version = getattr(read, "version", None) if checked else None
        read.version = None
        return self._index.nearest(vector, code, partition_id, now, k, min_cosine, version)

    def blocked_entries(self, query_hash: bytes) -> set[int]:
        return {int(r[0]) for r in self._db.query(
            "SELECT entry_id FROM feedback WHERE query_hash = ? AND correct = 0", (query_hash,))}

    # -- incarnation ------------------------------------------------------------------------

    def check_incarnation(self, force: bool = False) -> bool:
        """See :meth:`Store.check_incarnation`: the token is read (~2 us) only after
        another connection committed (``PRAGMA data_version`` moved) or when forced."""
        db = self._db
        with db.mutex:  # on every semantic lookup: no contextlib helper, the fork flag
            if db.forked:
                db.check_fork()
            try:
                return self._incarnation_moved(force)
            except (apsw.Error, UnicodeDecodeError) as exc:  # what translated() catches
                raise translate(exc, self.path) from None

    def _incarnation_moved(self, force: bool = False) -> bool:
        """Caller holds the mutex: read the token if it may have moved; a new one is taken
        (settings read again) once ``on_incarnation`` accepted it - if that raises, the
        next check raises again."""
        conn, pid = self._db.conn, self._db.pid
        version = conn.execute("PRAGMA data_version").fetchall()[0][0]
        self._version_read.version = version
        moved = version != self._incarnation_version or pid != self._version_pid
        if not moved and not force:
            return False
        if moved:
            self.commits_seen += 1
        rows = conn.execute(_INCARNATION).fetchall()
        token = rows[0][0] if rows else None
        if token == self.incarnation:
            self._incarnation_version, self._version_pid = version, pid
            return False
        log.warning("semcache: %s was replaced by another cache (incarnation %s -> %s); "
                    "ids remembered by this process are dropped", self.path,
                    self.incarnation, token)
        accept_incarnation(self, token, read_settings(conn))
        self._incarnation_version, self._version_pid = version, pid
        self._db.minute_open = None  # the time series' open minute was the old file's
        self._db.series_pruned = 0
        return True

    # -- shared state and admin reads -------------------------------------------------------

    def counters(self) -> dict[str, int]:
        out = {str(n): v for n, v in self._db.query(
            "SELECT name, value FROM counters WHERE name <> 'minute' "
            "AND name NOT GLOB 'minute:*'")}
        if not _COUNTERS <= out.keys() or not all(isinstance(v, int) for v in out.values()):
            raise CorruptCacheError(f"cache file {self.path!r} is corrupt (counters table "
                                    "damaged); delete it to start a new cache")
        return out

    def counter_history(self, since_minute: int, step: int) -> list[tuple[int, str, int]]:
        # Past minutes, and the current one's counts kept in counters (see write.py).
        return [(int(m), str(n), int(v)) for m, n, v in self._db.query(
            "SELECT minute / ? * ?, name, sum(value) FROM (SELECT minute, name, value FROM "
            "counter_minutes UNION ALL SELECT (SELECT value FROM counters WHERE name = "
            "'minute'), substr(name, 8), value FROM counters WHERE name GLOB 'minute:*') "
            "WHERE minute >= ? GROUP BY 1, 2", (int(step), int(step), int(since_minute)))]

    def size_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal")
                   if os.path.exists(p))

    def verdicts(self, namespace: str | None = None) -> list[Verdict]:
        cond, params = ("WHERE namespace = ?", (namespace,)) if namespace is not None else ("", ())
        return [Verdict(int(r[0]), r[1], r[2], r[3], float(r[4]), bool(r[5]), float(r[6]))
                for r in self._db.query(
                    "SELECT entry_id, namespace, query_hash, kind, similarity, correct, "
                    f"created_at FROM feedback {cond} ORDER BY id", params)]

    def entry_outcomes(self, entry_id: int) -> list[Outcome]:
        return outcome_sql.entry_outcomes(self._db.query, entry_id)

    def outcomes(self, namespace: str | None = None) -> list[Outcome]:
        return outcome_sql.outcomes(self._db.query, namespace)

    def outcome_pools(self, namespace: str) -> list[OutcomePool]:
        return outcome_sql.outcome_pools(self._db.query, namespace)

    def count_entries(self, where: EntryFilter) -> int:
        cond, params = compile_filter(where)
        return int(self._db.query(f"SELECT count(*) {_FROM} WHERE {cond}", params)[0][0])

    def list_entries(self, where: EntryFilter, *, order: EntryOrder = "id",
                     limit: int | None = None, after_id: int | None = None,
                     with_vector: bool = False) -> list[EntryRecord]:
        cond, params = compile_filter(where)
        if after_id is not None:
            cond += " AND e.id > ?"
            params.append(after_id)
        cols = _RECORD_COLUMNS + (", e.vector" if with_vector else ", NULL") + ", e.key_material"
        rows = self._db.query(
            f"SELECT {cols} {_FROM} WHERE {cond} ORDER BY {order_sql(order)} LIMIT ?",
            (*params, -1 if limit is None else limit))
        return [EntryRecord(
            id=r[0], key_hash=bytes(r[1]), namespace=r[2], scope=r[3], prompt=r[4],
            response=r[5], metadata=r[6], tokens=r[7], size=r[8], created_at=r[9],
            accessed_at=r[10], expires_at=r[11], ttl=r[12], hits=r[13], has_code=bool(r[14]),
            vector=r[15], key_material=r[16]) for r in rows]

    def namespace_summary(self, now: float) -> list[NamespaceSummary]:
        rows = self._db.query(
            "SELECT namespace, count(*), sum(expires_at IS NOT NULL AND expires_at <= ?), "
            "sum(hits), sum(size) FROM entries GROUP BY namespace "
            "ORDER BY count(*) DESC, namespace", (now,))
        return [NamespaceSummary(ns, int(n), int(exp or 0), int(h or 0), int(b or 0))
                for ns, n, exp, h, b in rows]

    def partitions(self, namespace: str) -> list[tuple[int, str]]:
        return [(int(i), str(s)) for i, s in self._db.query(
            "SELECT id, scope FROM partitions WHERE namespace = ? ORDER BY id", (namespace,))]

    # -- writes -------------------------------------------------------------------------

    def put_alone(self, e: NewEntry, max_entries: int | None, now: float) -> int | None:
        """None: a transaction of one put is a local COMMIT here, no cheaper path."""
        return None

    def write(self, timeout: float | None = None) -> WriteBlock:
        """One write transaction under the cross-process lock (see :class:`WriteBlock`);
        the code mirror replays it after COMMIT when this process keeps it."""
        index = self._index
        return WriteBlock(self._db, self.lock, self._incarnation_moved,
                          index.apply if index.keeps_mirror else None, timeout)

    def read_settings(self) -> dict[str, str]:
        db = self._db
        with db.mutex:
            if db.forked:
                db.check_fork()
            try:
                self.settings = read_settings(db.conn)
            except (apsw.Error, UnicodeDecodeError) as exc:
                raise translate(exc, self.path) from None
        return self.settings

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

    def claim(self, key_hash: bytes, lease: float) -> bool:
        """A byte-range lock per key on ``<db>.claims`` (the kernel frees it if we die)."""
        return self._claims.try_claim(key_hash)  # lease: not needed, the kernel frees it

    def release(self, key_hash: bytes) -> None:
        self._claims.release(key_hash)

    # -- upkeep and maintenance -------------------------------------------------------------

    @property
    def upkeep_due(self) -> bool:
        """True when this process wrote entries whose entry_codes rows may still be due."""
        return self._db.codes_pending

    def upkeep(self) -> None:
        """Write a batch of pending entry_codes rows if the write lock is free now."""
        if self._db.codes_pending:
            self.catch_up_codes(UPKEEP_ROWS, 0.0)

    def catch_up_codes(self, limit: int | None = None, timeout: float | None = 0.0) -> int:
        """Write pending entry_codes rows (at most ``limit``) if the write lock is free
        within ``timeout`` seconds; returns how many were written (0 if the lock was busy).
        The upkeep, close() and vacuum() call it; so may an operator's script."""
        if self.readonly or not self.lock.acquire(timeout=timeout):
            return 0
        try:
            with self.write() as txn:
                return txn.catch_up_codes(limit)
        finally:
            self.lock.release()

    def warmup(self) -> None:
        """Map the mirror (building it if it is stale) ahead of the first search."""
        self._index.warmup()

    def check(self, *, quick: bool = False) -> tuple[dict[str, Any], list[str]]:
        """The database, the code mirror and the vec0 table, each against the file's
        rows (see :mod:`semcache.store.sqlite.check`)."""
        return checks.check(self._db, self.settings, self.mirror_path, quick=quick)

    def vacuum(self, progress: VacuumProgress | None = None) -> dict[str, int]:
        """Make ``entry_codes`` match ``entries`` again (rows deleted or edited by hand with
        the sqlite3 CLI), then rebuild the file compactly (VACUUM), truncate the WAL and
        rebuild the code mirror, all under the write lock. Returns the repairs made."""
        db = self._db
        tell = progress or (lambda step, done, steps: None)
        with self.lock.hold():
            tell("repairing the code index", 0, 3)
            with self.write() as txn:
                orphans, added = txn.repair_codes()
            tell("compacting the file", 1, 3)
            with db.mutex, translated(self.path):
                db.check_fork()
                db.conn.execute("VACUUM")
                db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            tell("rebuilding the code mirror", 2, 3)
            self._index.rebuild_now()
        tell("done", 3, 3)
        return {"orphan_codes": orphans, "missing_codes": added}


def _migrate(path: str) -> None:
    """Apply pending migrations through a short-lived writable connection."""
    conn = Database(path, readonly=False)
    lock = WriteLock(path + ".lock")
    try:
        ensure_schema(conn.conn, path, lock)
    finally:
        lock.close()
        conn.close()


if TYPE_CHECKING:  # mypy checks that the engine implements the interface
    from semcache.store.base import Store, StoreTxn
    from semcache.store.sqlite.write import WriteTxn

    def _conforms(store: SQLiteStore, txn: WriteTxn) -> tuple[Store, StoreTxn]:
        return store, txn


__all__ = ["SQLITE_FILES", "SQLiteStore", "open_sqlite", "remove_files"]
