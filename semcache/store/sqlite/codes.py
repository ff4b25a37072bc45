"""The code side of the SQLite engine, read in SQL: entries by id (the candidates to
rescore), every code in one snapshot (what the code mirror is built from), and sqlite-vec's
k-nearest search with the entries it does not index yet.

Codes are 256-bit (32-byte) blobs: ``entries.code``, and ``entry_codes`` (sqlite-vec's
``vec0`` table with a ``bit[256]`` column and the partition as partition key), which is
caught up with ``entries`` in batches (``write.py``); ``sync_state.codes_through`` is the id
up to which it is complete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import apsw
import numpy as np

from semcache.errors import CorruptCacheError
from semcache.store.base import EntryRow
from semcache.store.sqlite.connection import Database, translate, translated

#: Bytes of a code (BIT[256] in migration 0001).
CODE_BYTES = 32
#: Expiry value in integer columns for "never expires" (fits SQLite and uint64 math).
NEVER = 1 << 62
#: Columns of :class:`EntryRow`, in order.
ROW_COLUMNS = ("id, namespace, partition_id, prompt, response, metadata, tokens, created_at, "
               "accessed_at, expires_at, ttl, hits")
CODES_THROUGH = "SELECT codes_through FROM sync_state WHERE id = 1"


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


def expires_to_int(expires_at: float | None) -> int:
    """Whole epoch seconds, rounded up, for integer expiry columns. Rounding up means a
    filter ``expires > floor(now)`` never drops an entry that is still valid."""
    return NEVER if expires_at is None else math.ceil(expires_at)


#: The statement of read_rows per (number of ids, with vectors), built once (k <= 16 on
#: the lookup path).
_READ_SQL: dict[tuple[int, bool], str] = {}
_READ_SQL_MAX = 64


def read_rows(db: Database, ids: Sequence[int], with_vector: bool) -> list[EntryRow]:
    """The entries with these ids (those that exist), with their vectors if asked."""
    if not ids:
        return []
    sql = _READ_SQL.get((len(ids), with_vector))
    if sql is None:
        cols = ROW_COLUMNS + (", vector" if with_vector else "")
        sql = f"SELECT {cols} FROM entries WHERE id IN ({','.join('?' * len(ids))})"
        if len(ids) <= _READ_SQL_MAX:
            _READ_SQL[(len(ids), with_vector)] = sql
    with db.mutex:  # every semantic lookup's rows: the fork flag, no contextlib helper
        if db.forked:
            db.check_fork()
        try:
            return [EntryRow(*r) for r in db.conn.execute(sql, tuple(ids))]
        except (apsw.Error, UnicodeDecodeError) as exc:  # what translated() catches
            raise translate(exc, db.path) from None


def sync_state(db: Database) -> tuple[int, int]:
    """``(change_seq, state_token)``: the exact database state the code mirror must match
    (a restored backup has another token even at the same change_seq)."""
    with db.mutex, translated(db.path):
        db.check_fork()
        return db.state()


def code_rows(db: Database) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Everything the code mirror needs, in id order, read in one snapshot.

    Returns (ids int64, partition ids int32, expires float64 with NaN for never, codes
    (n, 32) uint8, change_seq, state_token)."""
    with db.mutex, translated(db.path):
        db.check_fork()
        with db.conn:  # one read transaction: rows and state from the same snapshot
            seq, token = db.state()
            rows = db.conn.execute(
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
        raise CorruptCacheError(f"cache file {db.path!r} is corrupt (entries.code or "
                                f"partition_id damaged: {exc}); delete it to start a new "
                                "cache") from None
    return ids, parts, expires, codes, seq, token


def knn(db: Database, code: bytes, partition_id: int, now: float,
        k: int) -> list[tuple[int, int]]:
    """(entry id, Hamming distance) of the k nearest codes in one partition, unexpired:
    sqlite-vec's search of ``entry_codes``, merged with a direct scan of the entries it does
    not hold yet (above ``codes_through``, at most ~CODES_LAG_MAX), from one snapshot."""
    with db.mutex, translated(db.path):
        db.check_fork()
        with db.conn:  # one read transaction: the mark and both searches agree
            through = db.scalar(CODES_THROUGH, "sync_state.codes_through")
            found = [(int(i), int(d)) for i, d in db.conn.execute(
                "SELECT entry_id, distance FROM entry_codes WHERE code MATCH vec_bit(?) "
                "AND k = ? AND partition_id = ? AND expires_at > ?",
                (code, k, partition_id, int(now)))]
            # expires_at > floor(now) is the vec0 filter's ceil(expires_at) > floor(now)
            tail = db.conn.execute(
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


__all__ = ["CODES_THROUGH", "Changes", "CODE_BYTES", "NEVER", "ROW_COLUMNS", "code_rows",
           "expires_to_int", "knn", "read_rows", "sync_state"]
