"""What may be done inside one SQLite write transaction (:meth:`SQLiteStore.write`).

Every operation also records, in :class:`~semcache.store.sqlite.codes.Changes`, what the code mirror
must replay once the transaction committed.

Inserts are batched: ``put_many`` of n entries runs one probe for existing keys, one
partition lookup and one ``executemany`` INSERT, instead of five statements per entry. A
single put runs three statements: probe the key (a SELECT, cheaper than a DELETE when the key
is new, as it usually is), look the partition up, INSERT.

The sqlite-vec table ``entry_codes`` (used only by the SQL search and the sqlite3 CLI) is not
written by the INSERT: its rows cost ~6-10 us each plus several WAL pages per put, and they
are written in id order, in batches, by :meth:`WriteTxn.catch_up_codes`, which moves
``sync_state.codes_through`` in the same transaction. A write that leaves more than
``CODES_LAG_MAX`` entries behind catches up at once; the upkeep after every flush of batched
hits, ``close()`` and ``vacuum`` catch up too (never an idle timer: an idle cache writes
nothing). The SQL search scans the entries above the mark
directly, so an entry is searchable the moment its put returns (docs/schema.md).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import apsw

from semcache.errors import CorruptCacheError
from semcache.store.base import (
    SERIES_RETENTION_MINUTES,
    AccessUpdate,
    EntryFilter,
    NewEntry,
    Outcome,
    OutcomePool,
    Verdict,
    entry_size,
)
from semcache.store.filters import compile_filter
from semcache.store.sqlite import outcomes as outcome_sql
from semcache.store.sqlite.codes import CODE_BYTES, CODES_THROUGH, Changes, expires_to_int
from semcache.store.sqlite.connection import Database, translate
from semcache.store.sqlite.locking import ReadOnlyLock, WriteLock
from semcache.store.sqlite.schema import add_settings, write_settings

log = logging.getLogger("semcache")

_INSERT = (
    "INSERT INTO entries (key_hash, namespace, partition_id, prompt, response, metadata, size, "
    "tokens, created_at, accessed_at, expires_at, ttl, code, vector, hits, key_material) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CODE = (
    "INSERT INTO entry_codes (entry_id, partition_id, expires_at, code) "
    "VALUES (?, ?, ?, vec_bit(?))"
)
_KEY_ID = "SELECT id FROM entries WHERE key_hash = ?"
_STATE_AFTER = ("SELECT change_seq, state_token, (SELECT data_version FROM pragma_data_version) "
                "FROM sync_state WHERE id = 1")
#: Rows of ``counters`` that hold the current minute of the time series (see add_counters).
_MINUTE_PREFIX = "minute:"
_CURRENT_MINUTE = "SELECT value FROM counters WHERE name = 'minute'"
_CLOSE_MINUTE = (
    "INSERT INTO counter_minutes (minute, name, value) SELECT ?, substr(name, 8), value "
    "FROM counters WHERE name GLOB 'minute:*' AND value <> 0 "
    "ON CONFLICT (minute, name) DO UPDATE SET value = value + excluded.value")
_ADD_MINUTE = ("INSERT INTO counter_minutes (minute, name, value) VALUES (?, ?, ?) "
               "ON CONFLICT (minute, name) DO UPDATE SET value = value + excluded.value")


@functools.cache
def _add_counters_sql(rows: int) -> str:
    """One statement adding ``rows`` (name, value) pairs to counters (cheaper than
    executemany's one step per row)."""
    return ("INSERT INTO counters (name, value) VALUES " + ", ".join(["(?, ?)"] * rows)
            + " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value")


#: Entries with a code that may wait for their entry_codes row; a write that leaves more
#: behind catches them all up in its own transaction. It bounds the rows the SQL search
#: scans directly (~20k: a few tens of milliseconds) when entry_codes is behind.
CODES_LAG_MAX = 20_000
#: Keys probed per statement when a batch looks for entries it replaces.
_KEYS_PER_PROBE = 500


class WriteBlock:
    """``with store.write(timeout) as txn:`` - one ``BEGIN IMMEDIATE`` transaction under the
    cross-process write lock.

    ``on_begin`` (the store's incarnation check) runs right after BEGIN, holding the
    connection's mutex. ``on_commit`` (the code mirror's update, when the store keeps one)
    runs after COMMIT,
    still holding the write lock but no longer the connection's mutex: the mirror takes its
    own lock and then reads through this connection, so holding both here would invert that
    order. Driver errors (of BEGIN, of the block, of COMMIT) roll back and raise as semcache
    errors.

    A class rather than a generator-based context manager: every put passes through it,
    and the generator machinery cost ~1 us of a ~40 us put.
    """

    __slots__ = ("_db", "_lock", "_on_begin", "_on_commit", "_timeout", "_txn")

    def __init__(self, db: Database, lock: WriteLock | ReadOnlyLock,
                 on_begin: Callable[[], object],
                 on_commit: Callable[[Changes], None] | None, timeout: float | None) -> None:
        self._db, self._lock, self._timeout = db, lock, timeout
        self._on_begin, self._on_commit = on_begin, on_commit

    def __enter__(self) -> WriteTxn:
        db = self._db
        self._lock.take(self._timeout)
        db.mutex.acquire()  # held until __exit__: the connection's transaction is ours
        try:
            db.check_fork()
            txn = WriteTxn(db)
            db.conn.execute("BEGIN IMMEDIATE")
            # Nothing else can commit now: a file replaced since our last look is seen
            # before this transaction uses anything this process remembers of it.
            self._on_begin()  # may refuse (another embedder): rolled back
            if self._on_commit is not None:  # only the mirror needs the states
                txn.changes.seq_before, txn.changes.token_before = db.state()
        except BaseException as exc:
            failure = self._rolled_back(exc)
            db.mutex.release()
            self._lock.release()
            if failure is exc:
                raise
            raise failure from None
        self._txn = txn
        return txn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        db = self._db
        try:
            try:
                if exc is None:
                    try:
                        if self._on_commit is not None:
                            self._stamp_after(self._txn.changes)
                        db.conn.execute("COMMIT")
                    except BaseException as failure:
                        translated = self._rolled_back(failure)
                        if translated is failure:
                            raise
                        raise translated from None
                elif not isinstance(exc, apsw.Error):
                    self._rolled_back(exc)
                    return  # the block's own exception goes on
                else:
                    raise self._rolled_back(exc) from None
            finally:
                db.mutex.release()
            if self._on_commit is not None:
                self._on_commit(self._txn.changes)
        finally:
            self._lock.release()

    def _stamp_after(self, changes: Changes) -> None:
        """The state a transaction leaves, and ``PRAGMA data_version`` read inside it:
        nobody else can commit until ours is done, and our own COMMIT does not change it,
        so it is exactly the version at which the mirror (once updated) matches."""
        rows = self._db.conn.execute(_STATE_AFTER).fetchall()
        seq, token, version = rows[0] if len(rows) == 1 else (None, None, None)
        if not isinstance(seq, int) or not isinstance(token, int):
            raise CorruptCacheError(f"cache file {self._db.path!r} is corrupt (sync_state is "
                                    "missing or not integers); delete it to start a new cache")
        changes.seq_after, changes.token_after = seq, token
        changes.data_version = version if isinstance(version, int) else None

    def _rolled_back(self, exc: BaseException) -> BaseException:
        """Roll back what is open; returns the exception to raise (driver errors
        translated, naming the file)."""
        self._db.minute_open = None  # a minute opened by this transaction may be undone
        conn = self._db.conn
        if not conn.getautocommit():
            try:
                conn.execute("ROLLBACK")
            except apsw.Error:
                pass
        return translate(exc, self._db.path) if isinstance(exc, apsw.Error) else exc


class WriteTxn:
    """The operations allowed inside :meth:`SQLiteStore.write`; records mirror changes."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: Any = db.conn
        self.changes = Changes()
        self._partitions: dict[tuple[str, str], int] = {}

    def set_settings(self, values: dict[str, str]) -> None:
        write_settings(self._conn, values)

    def add_settings(self, values: dict[str, str]) -> dict[str, str]:
        return add_settings(self._conn, values)

    def partition_id(self, namespace: str, scope: str) -> int:
        """The partition's id, created if it is new (looked up once per transaction: an id
        remembered past it could name another partition once the file is restored from an
        older copy, which keeps its incarnation token, or replaced under a forked child)."""
        pid = self._partitions.get((namespace, scope))
        if pid is not None:
            return pid
        for (found,) in self._conn.execute(
                "SELECT id FROM partitions WHERE namespace = ? AND scope = ?", (namespace, scope)):
            pid = int(found)
        if pid is None:
            pid = int(self._conn.execute(
                "INSERT INTO partitions (namespace, scope) VALUES (?, ?) RETURNING id",
                (namespace, scope)).fetchall()[0][0])
        self._partitions[(namespace, scope)] = pid
        return pid

    def insert(self, e: NewEntry) -> int:
        """Insert (or replace the entry with the same key). Replacing deletes and
        re-inserts, so entry ids only ever grow: the mirror relies on it."""
        return self.insert_many((e,))[0]

    def insert_many(self, entries: Sequence[NewEntry]) -> list[int]:
        """:meth:`insert` of every entry, in order; returns their ids."""
        if not entries:
            return []
        keys = [e.key_hash for e in entries]
        if len(set(keys)) != len(keys):
            # A key given twice: each replaces the one before it, so insert them in order.
            return [self.insert_many((e,))[0] for e in entries]
        self._replace_keys(keys)
        pids = {(e.namespace, e.scope): 0 for e in entries}
        for part in pids:
            pids[part] = self.partition_id(*part)
        rows = []
        for e in entries:
            prompt, vector, metadata = e.prompt, e.vector, e.metadata
            rows.append((e.key_hash, e.namespace, pids[(e.namespace, e.scope)], prompt,
                         e.response, metadata, entry_size(e), e.tokens, e.created_at,
                         e.created_at if e.accessed_at is None else e.accessed_at,
                         e.expires_at, e.ttl, e.code, vector, e.hits, e.key_material))
        ids = self._insert_rows(rows)
        added: list[tuple[int, int, float | None, bytes]] = [
            (i, row[2], e.expires_at, e.code)
            for i, row, e in zip(ids, rows, entries, strict=True) if e.code is not None]
        if added:
            # The entry_codes rows are written later, in batches (see catch_up_codes).
            self.changes.added.extend(added)
            self._db.codes_pending = True
            if ids[-1] - self.codes_through() > CODES_LAG_MAX:
                self._catch_up_guarded()
        return ids

    # -- the sqlite-vec table, caught up in batches -----------------------------------------

    def codes_through(self) -> int:
        """The id up to which every entry with a code has its entry_codes row."""
        return self._db.scalar(CODES_THROUGH, "sync_state.codes_through")

    def catch_up_codes(self, limit: int | None = None) -> int:
        """Write the entry_codes rows of the entries above ``codes_through`` (at most
        ``limit``, in id order) and move the mark; returns how many were written."""
        through = self.codes_through()
        rows = self._conn.execute(
            "SELECT id, partition_id, expires_at, code FROM entries WHERE id > ? AND "
            f"code IS NOT NULL AND length(code) = {CODE_BYTES} ORDER BY id LIMIT ?",
            (through, -1 if limit is None else limit)).fetchall()
        if rows:
            self._conn.executemany(_INSERT_CODE, [(i, p, expires_to_int(e), c)
                                                  for i, p, e, c in rows])
        if limit is not None and len(rows) == limit:
            mark = int(rows[-1][0])
        else:  # everything above the mark is written: the mark covers every id
            top = self._conn.execute("SELECT max(id) FROM entries").fetchall()[0][0]
            mark = max(through, int(top or 0))
            self._db.codes_pending = False
        if mark != through:
            self._conn.execute("UPDATE sync_state SET codes_through = ? WHERE id = 1", (mark,))
        return len(rows)

    def _catch_up_guarded(self) -> None:
        """:meth:`catch_up_codes` inside a put: a failure (an entry_codes row made by hand
        ahead of the mark) is rolled back alone and logged; the put goes on (``semcache
        vacuum`` repairs the table)."""
        try:
            with self._conn:  # a savepoint inside the write transaction
                self.catch_up_codes()
        except apsw.Error as exc:
            log.warning("semcache: %s: could not catch up the entry_codes table (%s); "
                        "run `semcache vacuum` to repair it", self._db.path, exc)

    def _insert_rows(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """INSERT the rows; returns their ids. Inside our write transaction AUTOINCREMENT
        hands out consecutive ids (nothing else inserts meanwhile), which saves a
        ``RETURNING`` per row (~1.2 us); the first and last ids confirm it."""
        conn = self._conn
        conn.execute(_INSERT, rows[0])
        first = int(conn.last_insert_rowid())
        if len(rows) == 1:
            return [first]
        conn.executemany(_INSERT, rows[1:])
        last = int(conn.last_insert_rowid())
        if last - first == len(rows) - 1:
            return list(range(first, last + 1))
        by_key = dict(self._select_ids([r[0] for r in rows], "key_hash, id"))  # pragma: no cover
        return [int(by_key[r[0]]) for r in rows]  # pragma: no cover

    def _select_ids(self, keys: list[bytes], columns: str = "id") -> list[Any]:
        """``SELECT columns FROM entries WHERE key_hash IN keys``, in chunks."""
        out: list[Any] = []
        for start in range(0, len(keys), _KEYS_PER_PROBE):
            chunk = keys[start:start + _KEYS_PER_PROBE]
            out += self._conn.execute(f"SELECT {columns} FROM entries WHERE key_hash IN "
                                      f"({','.join('?' * len(chunk))})", chunk).fetchall()
        return out

    def _replace_keys(self, keys: list[bytes]) -> None:
        """Delete the entries that hold any of ``keys`` (the ones being put again)."""
        if len(keys) == 1:
            found = [int(r[0]) for r in self._conn.execute(_KEY_ID, (keys[0],))]
        else:
            found = [int(r[0]) for r in self._select_ids(keys)]
        for start in range(0, len(found), _KEYS_PER_PROBE):
            ids = found[start:start + _KEYS_PER_PROBE]
            self._delete_where(f"id IN ({','.join('?' * len(ids))})", ids)

    def delete(self, where: EntryFilter) -> list[int]:
        """Delete the entries the filter selects; returns their ids."""
        cond, params = compile_filter(where)
        return self._delete_where(
            f"id IN (SELECT e.id FROM entries e JOIN partitions p ON p.id = e.partition_id "
            f"WHERE {cond})", params)

    def _delete_where(self, where: str, params: Sequence[Any] = ()) -> list[int]:
        """Delete entries matching a WHERE clause (fixed SQL from this module, values bound)."""
        ids = [int(r[0]) for r in self._conn.execute(
            f"DELETE FROM entries WHERE {where} RETURNING id", params).fetchall()]
        if ids:
            self._conn.executemany("DELETE FROM entry_codes WHERE entry_id = ?",
                                   [(i,) for i in ids])
            self.changes.removed.extend(ids)
        return ids

    def clear_all(self) -> int:
        n = int(self._conn.execute("SELECT count(*) FROM entries").fetchall()[0][0])
        self._conn.execute("DELETE FROM entries")
        self._conn.execute("DELETE FROM entry_codes")
        self.changes.cleared = True
        return n

    def repair_codes(self) -> tuple[int, int]:
        """Catch entry_codes up, then make it match entries (after hand-made SQL):
        (orphans removed, missing rows added)."""
        ahead = self._conn.execute("SELECT entry_id FROM entry_codes WHERE entry_id > ?",
                                   (self.codes_through(),)).fetchall()
        self._conn.executemany("DELETE FROM entry_codes WHERE entry_id = ?", ahead)
        self.catch_up_codes()
        orphans = self._conn.execute(
            "SELECT entry_id FROM entry_codes WHERE entry_id NOT IN (SELECT id FROM entries)"
        ).fetchall()
        self._conn.executemany("DELETE FROM entry_codes WHERE entry_id = ?", orphans)
        missing = self._conn.execute(
            "SELECT id, partition_id, expires_at, code FROM entries WHERE code IS NOT NULL "
            "AND id NOT IN (SELECT entry_id FROM entry_codes)").fetchall()
        self._conn.executemany(_INSERT_CODE,
                               [(i, p, expires_to_int(e), c) for i, p, e, c in missing])
        return len(orphans) + len(ahead), len(missing)

    def purge_expired(self, now: float) -> int:
        return len(self._delete_where("expires_at IS NOT NULL AND expires_at <= ?", (now,)))

    def evict_lru(self, count: int) -> int:
        """Delete the ``count`` least recently accessed entries."""
        return len(self._delete_where(
            "id IN (SELECT id FROM entries ORDER BY accessed_at, id LIMIT ?)", (count,)))

    def entry_count(self) -> int:
        return self._db.scalar(
            "SELECT value FROM counters WHERE name = 'entries'", "counters.entries")

    def entry_bytes(self) -> int:
        """The triggers' exact total (the write lock serializes every writer)."""
        return self._db.scalar(
            "SELECT value FROM counters WHERE name = 'bytes'", "counters.bytes")

    def evict_bytes(self, amount: int) -> int:
        """Delete the least recently accessed entries until ``amount`` bytes are freed,
        reading the LRU index only as far as needed."""
        ids: list[int] = []
        freed = 0
        rows = self._conn.execute("SELECT id, size FROM entries ORDER BY accessed_at, id")
        try:
            for entry_id, size in rows:
                if freed >= amount:
                    break
                ids.append(int(entry_id))
                freed += int(size)
        finally:
            rows.close()
        for start in range(0, len(ids), _KEYS_PER_PROBE):
            chunk = ids[start:start + _KEYS_PER_PROBE]
            self._delete_where(f"id IN ({','.join('?' * len(chunk))})", chunk)
        return len(ids)

    def apply_access(self, updates: dict[int, AccessUpdate]) -> None:
        """Write batched hits: accessed_at, hit counts and refreshed expiry."""
        self._conn.executemany(
            "UPDATE entries SET accessed_at = max(accessed_at, ?), hits = hits + ? WHERE id = ?",
            [(u.accessed_at, u.hits, i) for i, u in updates.items()])
        moved: list[tuple[int, float]] = []
        for i, u in updates.items():
            if u.expires_at is None:
                continue
            # Only an expiry that really moves out is written, and only that one reaches the
            # code index: another worker may already have flushed a later refresh, and an
            # older batch must not move the index's expiry back (the entry would then be
            # found by exact lookup but missed by semantic lookup before it expires).
            moved += [(int(r[0]), float(r[1])) for r in self._conn.execute(
                "UPDATE entries SET expires_at = ? WHERE id = ? AND expires_at < ? "
                "RETURNING id, expires_at, code IS NOT NULL", (u.expires_at, i, u.expires_at))
                if r[2]]
        if moved:
            self._conn.executemany(
                "UPDATE entry_codes SET expires_at = ? WHERE entry_id = ?",
                [(expires_to_int(e), i) for i, e in moved])
            self.changes.expires.extend(moved)

    def record_verdict(self, v: Verdict) -> None:
        self._conn.execute(
            "INSERT INTO feedback (entry_id, namespace, query_hash, kind, similarity, correct, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (v.entry_id, v.namespace, v.query_hash, v.kind, v.similarity, int(v.correct),
             v.created_at))

    def restore_verdicts(self, verdicts: Sequence[Verdict]) -> None:
        for v in verdicts:
            row = (v.namespace, v.query_hash, v.kind, v.similarity, int(v.correct),
                   v.created_at)
            self._conn.execute(
                "UPDATE feedback SET entry_id = ? WHERE namespace = ? AND query_hash IS ? "
                "AND kind = ? AND similarity = ? AND correct = ? AND created_at = ?",
                (v.entry_id, *row))
            if not self._conn.changes():
                self.record_verdict(v)

    def record_outcomes(self, outcomes: Sequence[Outcome], pool: bool = True) -> None:
        outcome_sql.record_outcomes(self._conn, outcomes, pool)

    def restore_pools(self, namespace: str, pools: Sequence[OutcomePool]) -> None:
        outcome_sql.restore_pools(self._conn, namespace, pools)

    def add_counters(self, deltas: dict[str, int], at: float | None = None) -> None:
        """Add to the shared counters and to the minute ``at`` (epoch seconds; default
        now) of the time series.

        The current minute's counts are kept in ``counters`` itself (rows ``minute`` and
        ``minute:<name>``): that page is written by every transaction anyway, where a row
        of ``counter_minutes`` would add a page to the WAL of every put (~7 us of a
        ~70 us put; this way ~1.5 us). The first write of a new minute moves them to
        ``counter_minutes`` and, at most once an hour per process, deletes minutes past
        the retention."""
        rows = [(k, v) for k, v in deltas.items() if v]
        if not rows:
            return
        minute = int((time.time() if at is None else at) // 60)
        cursor = self._db.counter_cursor  # ours: the transaction holds the mutex
        if minute != self._db.minute_open and not self._open_minute(cursor, minute, rows):
            return
        params: list[Any] = []
        for name, value in rows:
            params += (name, value, _MINUTE_PREFIX + name, value)
        cursor.execute(_add_counters_sql(2 * len(rows)), params)

    def _open_minute(self, cursor: Any, minute: int, rows: list[tuple[str, int]]) -> bool:
        """Make ``minute`` the current minute of the series (unless a later one is: then
        add ``rows`` to the counters and to their own minute's row here, and return
        False). This process skips the check until its clock shows another minute."""
        found = cursor.execute(_CURRENT_MINUTE).fetchall()
        current = int(found[0][0]) if found else None
        if current is not None and minute < current:
            # A clock behind the one that opened the current minute (another host's, a
            # clock set back): straight into its own minute's row.
            cursor.executemany(_ADD_MINUTE, [(minute, k, v) for k, v in rows])
            cursor.execute(_add_counters_sql(len(rows)), [x for row in rows for x in row])
            return False
        if minute != current:
            self._next_minute(cursor, current, minute)
        self._db.minute_open = minute
        return True

    def _next_minute(self, cursor: Any, current: int | None, minute: int) -> None:
        """Move the counts of minute ``current`` to counter_minutes; start ``minute``."""
        if current is not None:
            cursor.execute(_CLOSE_MINUTE, (current,))
            cursor.execute(f"DELETE FROM counters WHERE name GLOB '{_MINUTE_PREFIX}*'")
        cursor.execute("INSERT INTO counters (name, value) VALUES ('minute', ?) "
                       "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (minute,))
        db = self._db
        if minute - db.series_pruned >= 60:
            cursor.execute("DELETE FROM counter_minutes WHERE minute < ?",
                           (minute - SERIES_RETENTION_MINUTES,))
            db.series_pruned = minute


__all__ = ["WriteBlock", "WriteTxn"]
