"""CodeMirror: the mmap'd, self-checking column file of binary codes beside the database.

The mirror is derived data: SQLite is the truth, and any doubt about this file (bad magic,
bad CRC, bad checksum, truncation, another database's uid) raises :class:`MirrorInvalid`,
after which the caller rebuilds it from SQLite. It is therefore never fsync'd on ordinary
updates, only when a complete new file is published with :meth:`CodeMirror.create`.

File layout (all little-endian)::

    [0, 4096)       header: the fields of ``_HEADER`` in bytes [0, 124), a CRC-32 of those
                    bytes in [124, 128), zeros up to 4096 (checked on open)
    4096 + 0*8*cap  w0        uint64[cap]   code word 0 (bits 0..63) of each row
    4096 + 1*8*cap  w1        uint64[cap]
    4096 + 2*8*cap  w2        uint64[cap]
    4096 + 3*8*cap  w3        uint64[cap]
    4096 + 32*cap   entry_ids int64[cap]    strictly increasing over [0, count)
    4096 + 40*cap   partitions int32[cap]   namespace partition; -1 = dead row
    4096 + 44*cap   expires   uint32[cap]   ceil(expiry epoch seconds); 0xFFFFFFFF = never

48 bytes per row. Rows [count, cap) are unused (zeros; their blocks are allocated at creation so a full disk fails then, not with SIGBUS later). The data checksum is the
wrapping uint64 sum over rows [0, count) of a mixed 64-bit hash of each row's fields and
row index; every step of the hash is a bijection of each field, so any change to one row
changes the sum. It is verified vectorized on open and kept up to date in O(changed rows).

Concurrency: one writer at a time (the caller holds the cross-process write lock); any
number of readers, in any process, map the file read-only. A writer changes data rows
first and rewrites the 128-byte header last, so a reader that sees a ``count`` also sees
those rows; a torn header read fails its CRC and is simply re-read. Files are never
truncated or rewritten in place: growth and rebuilds publish a new file with
``os.replace``, so a reader still mapping the old inode keeps working (and stale), and it
notices through :meth:`CodeMirror.is_current` (the old header is flagged superseded and the
path names another inode).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import logging
import math
import mmap
import os
import secrets
import struct
import threading
import zlib
from typing import Any

import numpy as np

from semcache.errors import InvalidInputError
from semcache.kernels.hamming import (
    MAX_USEFUL_HALF_CUT,
    Workspace,
    half_distance_cut,
    hamming_topk,
    hamming_topk_pruned,
)

__all__ = ["CodeMirror", "MirrorInvalid", "EXPIRES_NEVER"]

log = logging.getLogger("semcache")

MAGIC = b"SCMIRROR"
FORMAT_VERSION = 1
HEADER_SIZE = 4096
ROW_BYTES = 48
CODE_BYTES = 32
EXPIRES_NEVER = 0xFFFFFFFF
MIN_CAPACITY = 1024
_FLAG_SUPERSEDED = 1

# magic, version, header_size, capacity, count, seq, dead_count, expiring_count, checksum,
# db_uid hash, flags, reserved. The CRC-32 of these 124 bytes follows at offset 124.
_HEADER = struct.Struct("<8sIIQQqQQQ16sI40x")
_CRC = struct.Struct("<I")
_HEADER_USED = _HEADER.size + _CRC.size  # 128
_U64_MASK = (1 << 64) - 1
_CHECK_CHUNK = 65536  # rows hashed per step when verifying: keeps temporaries in L2

# Odd 64-bit multipliers (splitmix64 / murmur3 finalizer constants).
_M = [
    np.uint64(c)
    for c in (
        0x9E3779B97F4A7C15,
        0xBF58476D1CE4E5B9,
        0x94D049BB133111EB,
        0xD6E8FEB86659FD93,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
    )
]


class MirrorInvalid(Exception):
    """The mirror file is missing pieces, corrupt, stale beyond use or of another database.

    Deliberately not a SemcacheError: it never reaches users, the caller rebuilds the mirror.
    """


def _uid_hash(db_uid: str | bytes) -> bytes:
    """16-byte identity stored in the header (any length of uid is accepted)."""
    raw = db_uid.encode("utf-8") if isinstance(db_uid, str) else bytes(db_uid)
    return hashlib.blake2b(raw, digest_size=16).digest()


def _row_hashes(
    words: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ids: np.ndarray,
    parts: np.ndarray,
    expires: np.ndarray,
    rows: np.ndarray,
    row_offset: int = 0,
) -> np.ndarray:
    """uint64 hash of each row (fields gathered for those rows; row index = rows + offset)."""
    h = rows.astype(np.uint64)  # a fresh array: updated in place below
    h += np.uint64(1 + row_offset)
    h *= _M[0]
    for i, w in enumerate(words):
        h ^= w
        h *= _M[i + 1]
    h ^= ids.view(np.uint64)
    h *= _M[5]
    pe = parts.view(np.uint32).astype(np.uint64)
    pe <<= np.uint64(32)
    pe |= expires
    h ^= pe
    h *= _M[0]
    h ^= h >> np.uint64(31)
    return h


def _hash_sum(hashes: np.ndarray) -> int:
    """Wrapping 64-bit sum as a Python int."""
    return int(np.add.reduce(hashes, dtype=np.uint64))


class CodeMirror:
    """A mapped mirror file. Build one with :meth:`create` or :meth:`open`.

    Searching is thread-safe (each thread gets its own scan workspace); writer methods must
    be serialized by the caller (they are meant to run under the database write lock).
    """

    # ------------------------------------------------------------------ construction

    def __init__(self, path: str, fd: int, uid: bytes, writable: bool) -> None:
        """Map an already validated file. Use :meth:`open` or :meth:`create` instead."""
        self._path = path
        self._uid = uid
        self._writable = writable
        st = os.fstat(fd)
        self._inode = (st.st_dev, st.st_ino)
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._mm: mmap.mmap | None = mmap.mmap(fd, st.st_size, access=access)
        fields = self._read_header()
        self._capacity: int = fields[3]
        self._apply_header(fields)
        self._map_columns()
        self._tls = threading.local()
        self._closed = False

    def _map_columns(self) -> None:
        cap = self._capacity
        mm = self._mm

        def col(dtype: Any, offset: int) -> np.ndarray:
            return np.frombuffer(mm, dtype=dtype, count=cap, offset=HEADER_SIZE + offset)

        self._w = tuple(col(np.uint64, i * 8 * cap) for i in range(4))
        self._ids = col(np.int64, 32 * cap)
        self._parts = col(np.int32, 40 * cap)
        self._exp = col(np.uint32, 44 * cap)

    @classmethod
    def open(
        cls, path: str, db_uid: str | bytes, *, writable: bool = False, verify: bool = True
    ) -> CodeMirror:
        """Map an existing mirror; raise MirrorInvalid if it cannot be trusted.

        Raises FileNotFoundError if ``path`` does not exist. With ``verify`` the data
        checksum is recomputed (vectorized, ~O(N)); a mismatch raises MirrorInvalid.
        """
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            _validate_file(fd, _uid_hash(db_uid))
            mirror = cls(path, fd, _uid_hash(db_uid), writable)
        finally:
            os.close(fd)  # the mapping keeps the file alive
        if verify:
            try:
                mirror._verify_checksum()
            except BaseException:
                mirror.close()
                raise
        return mirror

    @classmethod
    def create(
        cls,
        path: str,
        db_uid: str | bytes,
        seq: int,
        entry_ids: np.ndarray,
        partitions: np.ndarray,
        expires: np.ndarray,
        codes_u8: np.ndarray,
        capacity: int | None = None,
    ) -> CodeMirror:
        """Write a complete mirror to a temp file, fsync it, publish it on ``path``; map it.

        ``entry_ids`` must be strictly increasing. ``capacity`` defaults to twice the row
        count (at least MIN_CAPACITY). Returns a writable mirror. Any previous file at
        ``path`` is flagged superseded so its readers know to reopen.
        """
        return cls._create_hashed(
            path, _uid_hash(db_uid), seq, entry_ids, partitions, expires, codes_u8, capacity
        )

    @classmethod
    def _create_hashed(
        cls,
        path: str,
        uid: bytes,
        seq: int,
        entry_ids: np.ndarray,
        partitions: np.ndarray,
        expires: np.ndarray,
        codes_u8: np.ndarray,
        capacity: int | None,
    ) -> CodeMirror:
        """:meth:`create` with the header's uid hash already computed."""
        ids, parts, exp, codes = _check_rows(entry_ids, partitions, expires, codes_u8)
        n = ids.shape[0]
        cap = max(MIN_CAPACITY, 2 * n) if capacity is None else int(capacity)
        if cap < n:
            raise InvalidInputError(f"capacity {cap} is below the {n} rows given")
        directory = os.path.dirname(os.path.abspath(path))
        _remove_stale_temps(path)
        tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, HEADER_SIZE + ROW_BYTES * cap)
            # Reserve every block now: a store into an unallocated page of a map on a full
            # disk is a SIGBUS that kills the process; here it is an OSError (ENOSPC) that
            # the caller handles by searching in SQL.
            _allocate(fd, HEADER_SIZE + ROW_BYTES * cap)
            with mmap.mmap(fd, HEADER_SIZE + ROW_BYTES * cap, access=mmap.ACCESS_WRITE) as mm:
                words = codes.view("<u8")
                cols = tuple(np.ascontiguousarray(words[:, i]) for i in range(4))
                for i, col in enumerate(cols):
                    _put(mm, HEADER_SIZE + i * 8 * cap, col)
                _put(mm, HEADER_SIZE + 32 * cap, ids)
                _put(mm, HEADER_SIZE + 40 * cap, parts)
                _put(mm, HEADER_SIZE + 44 * cap, exp)
                rows = np.arange(n, dtype=np.int64)
                checksum = _hash_sum(_row_hashes(cols, ids, parts, exp, rows))  # type: ignore[arg-type]
                dead = int(np.count_nonzero(parts < 0))
                expiring = int(np.count_nonzero(exp != EXPIRES_NEVER))
                mm[0:_HEADER_USED] = _pack_header(cap, n, seq, dead, expiring, checksum, uid, 0)
                mm.flush()
            os.fsync(fd)
            old_fd = _open_existing(path)
            try:
                os.replace(tmp, path)
                if old_fd is not None:
                    _flag_superseded(old_fd)
            finally:
                if old_fd is not None:
                    os.close(old_fd)
            _fsync_dir(directory)
            return cls(path, fd, uid, writable=True)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ header

    def _read_header(self) -> tuple[Any, ...]:
        """Unpack the header from the map, retrying torn reads; MirrorInvalid if it stays bad."""
        mm = self._require_map()
        for attempt in range(200):
            raw = mm[0:_HEADER_USED]
            fields = _HEADER.unpack_from(raw)
            (crc,) = _CRC.unpack_from(raw, _HEADER.size)
            if crc == zlib.crc32(raw[: _HEADER.size]) and fields[0] == MAGIC:
                return fields
            if attempt > 20:
                threading.Event().wait(0.0005)  # a writer may be mid-header: let it finish
        raise MirrorInvalid(f"{self._path}: header CRC mismatch")

    def _apply_header(self, fields: tuple[Any, ...]) -> None:
        (_, _, _, cap, count, seq, dead, expiring, checksum, uid, flags) = fields
        if cap != self._capacity or count > cap or uid != self._uid:
            raise MirrorInvalid(f"{self._path}: header changed identity under the map")
        self._count: int = count
        self._seq: int = seq
        self._dead: int = dead
        self._expiring: int = expiring
        self._checksum: int = checksum
        self._flags: int = flags

    def _write_header(self) -> None:
        mm = self._require_map()
        mm[0:_HEADER_USED] = _pack_header(
            self._capacity,
            self._count,
            self._seq,
            self._dead,
            self._expiring,
            self._checksum,
            self._uid,
            self._flags,
        )

    def reload_header(self) -> None:
        """Re-read count, seq and counters written by the writer (cheap: one 128-byte read)."""
        self._apply_header(self._read_header())

    def is_current(self) -> bool:
        """False once this map is superseded (grown / rebuilt / deleted): reopen the path."""
        self.reload_header()
        if self._flags & _FLAG_SUPERSEDED:
            return False
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._inode

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> str:
        """Path the mirror was opened from."""
        return self._path

    @property
    def seq(self) -> int:
        """Database change sequence this mirror reflects (as of the last header read)."""
        return self._seq

    @property
    def count(self) -> int:
        """Rows in use, dead ones included."""
        return self._count

    @property
    def capacity(self) -> int:
        """Rows the file can hold before it must be re-created."""
        return self._capacity

    @property
    def dead_count(self) -> int:
        """Rows marked dead (kept until the next growth or compaction)."""
        return self._dead

    @property
    def live_count(self) -> int:
        """Rows not marked dead (expired rows included)."""
        return self._count - self._dead

    @property
    def max_entry_id(self) -> int:
        """Largest entry id in the mirror, or -1 when empty: append ids above it."""
        return int(self._ids[self._count - 1]) if self._count else -1

    @property
    def writable(self) -> bool:
        """Whether this map accepts writer operations."""
        return self._writable

    # ------------------------------------------------------------------ search

    def search(
        self, query_words: np.ndarray, k: int, *, partition: int | None, now: float,
        min_cosine: float | None = None,
    ) -> list[tuple[int, int]]:
        """The k nearest live rows as ``[(entry_id, hamming_distance)]``, nearest first.

        Excludes dead rows, rows of another partition (when ``partition`` is given) and rows
        with ``expires <= floor(now)`` (conservative: a row still valid at ``now`` is kept;
        the caller re-checks the exact expiry). Sees the rows of the last header read: call
        :meth:`reload_header` first to pick up other processes' writes.

        With ``min_cosine`` (the caller's hit threshold), rows that cannot reach it are
        pruned on their first 128 bits (:func:`hamming_topk_pruned`), when that pays.
        """
        self._require_map()
        ws = getattr(self._tls, "ws", None)
        if ws is None:
            ws = self._tls.ws = Workspace()
        n = self._count
        use_parts = partition is not None or self._dead > 0
        use_exp = self._expiring > 0
        now_u32 = min(max(math.floor(now), 0), EXPIRES_NEVER - 1) if use_exp else None
        half_cut = None if min_cosine is None else half_distance_cut(min_cosine)
        if half_cut is not None and half_cut <= MAX_USEFUL_HALF_CUT:
            idx, dist = hamming_topk_pruned(
                *self._w, query_words, k, half_cut,
                full_cut=half_distance_cut(min_cosine, 256), partition=partition,
                partitions=self._parts if use_parts else None,
                expires=self._exp if use_exp else None, now_u32=now_u32, count=n,
                workspace=ws)
            return list(zip(self._ids[idx].tolist(), dist.tolist(), strict=True))
        idx, dist = hamming_topk(
            *self._w,
            query_words,
            k,
            partition=partition,
            partitions=self._parts if use_parts else None,
            expires=self._exp if use_exp else None,
            now_u32=now_u32,
            count=n,
            workspace=ws,
        )
        return list(zip(self._ids[idx].tolist(), dist.tolist(), strict=True))

    def rows_of(self, entry_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, found_ids)``: the row of each given id present in the mirror."""
        ids = np.asarray(entry_ids, dtype=np.int64).reshape(-1)
        col = self._ids[: self._count]
        pos = np.searchsorted(col, ids)
        ok = pos < col.shape[0]
        ok[ok] = col[pos[ok]] == ids[ok]
        return pos[ok], ids[ok]

    def read_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the given rows' fields (``entry_ids``, ``partitions``, ``expires``,
        ``codes`` (n, 32) uint8): for diagnostics, tests and compaction."""
        r = np.asarray(rows, dtype=np.int64)
        words = np.stack([w[r] for w in self._w], axis=1).astype("<u8")
        return {
            "entry_ids": self._ids[r].copy(),
            "partitions": self._parts[r].copy(),
            "expires": self._exp[r].copy(),
            "codes": words.view(np.uint8).reshape(-1, CODE_BYTES),
        }

    # ------------------------------------------------------------------ writer operations

    def append(
        self,
        entry_ids: np.ndarray,
        partitions: np.ndarray,
        expires: np.ndarray,
        codes_u8: np.ndarray,
        seq: int,
    ) -> bool:
        """Append rows whose ids are all above :attr:`max_entry_id`, and set ``seq``.

        Grows internally when capacity is short: publishes a new file (capacity doubled,
        dead rows dropped) through :meth:`create` and remaps this object onto it. Returns
        True when that happened (the old file is flagged superseded for its readers).
        """
        self._require_writable()
        ids, parts, exp, codes = _check_rows(entry_ids, partitions, expires, codes_u8)
        n = ids.shape[0]
        if n and ids[0] <= self.max_entry_id:
            raise InvalidInputError(
                f"appended entry id {int(ids[0])} is not above the last one {self.max_entry_id}"
            )
        if self._count + n > self._capacity:
            self._grow(ids, parts, exp, codes, seq)
            return True
        start, end = self._count, self._count + n
        words = codes.view("<u8")
        for i in range(4):
            self._w[i][start:end] = words[:, i]
        self._ids[start:end] = ids
        self._parts[start:end] = parts
        self._exp[start:end] = exp
        rows = np.arange(start, end, dtype=np.int64)
        added = _hash_sum(self._hashes(rows))
        self._checksum = (self._checksum + added) & _U64_MASK
        self._dead += int(np.count_nonzero(parts < 0))
        self._expiring += int(np.count_nonzero(exp != EXPIRES_NEVER))
        self._count = end
        self._seq = int(seq)
        self._write_header()  # last: readers never see a count covering unwritten rows
        return False

    def mark_dead(self, entry_ids: np.ndarray, seq: int) -> int:
        """Mark the rows of these ids dead (ids not present are ignored); returns how many."""
        self._require_writable()
        rows, _ = self.rows_of(entry_ids)
        rows = np.unique(rows[self._parts[rows] >= 0])
        if rows.shape[0]:
            old = _hash_sum(self._hashes(rows))
            self._parts[rows] = -1
            new = _hash_sum(self._hashes(rows))
            self._checksum = (self._checksum - old + new) & _U64_MASK
            self._dead += int(rows.shape[0])
        self._seq = int(seq)
        self._write_header()
        return int(rows.shape[0])

    def set_expires(self, entry_ids: np.ndarray, expires_u32: np.ndarray | int, seq: int) -> int:
        """Set the expiry (uint32, see :meth:`expires_to_u32`) of these ids; returns how many."""
        self._require_writable()
        ids = np.asarray(entry_ids, dtype=np.int64).reshape(-1)
        values = np.broadcast_to(np.asarray(expires_u32, dtype=np.int64), ids.shape)
        if values.size and (values.min() < 0 or values.max() > EXPIRES_NEVER):
            raise InvalidInputError("expires values must fit in uint32")
        col = self._ids[: self._count]
        pos = np.searchsorted(col, ids)
        ok = pos < col.shape[0]
        ok[ok] = col[pos[ok]] == ids[ok]
        rows, vals = pos[ok], values[ok].astype(np.uint32)
        rows, first = np.unique(rows, return_index=True)
        vals = vals[first]
        if rows.shape[0]:
            old = _hash_sum(self._hashes(rows))
            old_finite = int(np.count_nonzero(self._exp[rows] != EXPIRES_NEVER))
            self._exp[rows] = vals
            new = _hash_sum(self._hashes(rows))
            self._checksum = (self._checksum - old + new) & _U64_MASK
            self._expiring += int(np.count_nonzero(vals != EXPIRES_NEVER)) - old_finite
        self._seq = int(seq)
        self._write_header()
        return int(rows.shape[0])

    def set_seq(self, seq: int) -> None:
        """Record that the mirror reflects database change ``seq`` (nothing else changed)."""
        self._require_writable()
        self._seq = int(seq)
        self._write_header()

    def compact(self, seq: int | None = None) -> None:
        """Publish a new file without the dead rows (same growth policy) and remap onto it."""
        self._require_writable()
        empty = np.empty(0, dtype=np.int64)
        self._grow(
            empty,
            empty.astype(np.int32),
            empty.astype(np.uint32),
            np.empty((0, CODE_BYTES), dtype=np.uint8),
            self._seq if seq is None else seq,
        )

    def _grow(
        self, ids: np.ndarray, parts: np.ndarray, exp: np.ndarray, codes: np.ndarray, seq: int
    ) -> None:
        live = np.flatnonzero(self._parts[: self._count] >= 0)
        old = self.read_rows(live)
        all_ids = np.concatenate((old["entry_ids"], ids))
        cap = max(MIN_CAPACITY, 2 * all_ids.shape[0])
        fresh = CodeMirror._create_hashed(
            self._path,
            self._uid,
            seq,
            all_ids,
            np.concatenate((old["partitions"], parts)),
            np.concatenate((old["expires"], exp)),
            np.concatenate((old["codes"], codes)),
            capacity=cap,
        )
        log.info(
            "semcache: code mirror %s re-created with capacity %d (%d rows, %d dead dropped)",
            self._path,
            cap,
            all_ids.shape[0],
            self._count - live.shape[0],
        )
        self._release_map()
        # Become the new mirror: callers keep holding this same object.
        self.__dict__.update(fresh.__dict__)
        fresh.__dict__.clear()

    def _hashes(self, rows: np.ndarray) -> np.ndarray:
        words = tuple(w[rows] for w in self._w)
        return _row_hashes(words, self._ids[rows], self._parts[rows], self._exp[rows], rows)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ verification

    def _verify_checksum(self) -> None:
        """Recompute the data checksum; tolerate a concurrent writer, fail on real damage."""
        for _attempt in range(3):
            fields = self._read_header()
            self._apply_header(fields)
            count = self._count
            total = 0
            rows = np.arange(min(count, _CHECK_CHUNK), dtype=np.int64)
            for start in range(0, count, _CHECK_CHUNK):
                end = min(count, start + _CHECK_CHUNK)
                words = tuple(w[start:end] for w in self._w)
                h = _row_hashes(
                    words,  # type: ignore[arg-type]
                    self._ids[start:end],
                    self._parts[start:end],
                    self._exp[start:end],
                    rows[: end - start],
                    start,
                )
                total += _hash_sum(h)
            if (total & _U64_MASK) == self._checksum:
                return
            if self._read_header() == fields:
                break  # nothing moved while we read: the data really differs
        raise MirrorInvalid(f"{self._path}: data checksum mismatch")

    # ------------------------------------------------------------------ lifetime

    @staticmethod
    def expires_to_u32(expires_at: float | None) -> int:
        """Expiry epoch seconds -> the uint32 stored: ceil, clamped; None -> never."""
        if expires_at is None:
            return EXPIRES_NEVER
        if math.isnan(expires_at):
            raise InvalidInputError("expires_at is NaN")
        if expires_at >= EXPIRES_NEVER - 1:
            return EXPIRES_NEVER - 1
        return max(0, math.ceil(expires_at))

    def _require_map(self) -> mmap.mmap:
        if self._mm is None:
            raise MirrorInvalid(f"{self._path}: mirror is closed")
        return self._mm

    def _require_writable(self) -> None:
        self._require_map()
        if not self._writable:
            raise InvalidInputError("mirror was opened read-only")

    def _release_map(self) -> None:
        """Drop our views, then unmap (a view still exported elsewhere defers it to GC)."""
        mm = self._mm
        self._w = ()
        self._ids = self._parts = self._exp = np.empty(0)
        self._tls = threading.local()
        self._mm = None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # someone still holds a view: the map goes away with it

    def close(self) -> None:
        """Unmap the file. Idempotent."""
        self._release_map()

    def __enter__(self) -> CodeMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"CodeMirror({self._path!r}, count={self._count}, capacity={self._capacity}, "
            f"seq={self._seq}, dead={self._dead})"
        )


# ---------------------------------------------------------------------- file helpers


def _pack_header(
    cap: int, count: int, seq: int, dead: int, expiring: int, checksum: int, uid: bytes, flags: int
) -> bytes:
    body = _HEADER.pack(
        MAGIC, FORMAT_VERSION, HEADER_SIZE, cap, count, seq, dead, expiring, checksum, uid, flags
    )
    return body + _CRC.pack(zlib.crc32(body))


def _validate_file(fd: int, uid: bytes) -> None:
    """Check size, header CRC, padding, layout and identity before mapping anything."""
    size = os.fstat(fd).st_size
    if size < HEADER_SIZE:
        raise MirrorInvalid(f"mirror truncated to {size} bytes")
    head = os.pread(fd, HEADER_SIZE, 0)
    if len(head) != HEADER_SIZE or head[:8] != MAGIC:
        raise MirrorInvalid("not a semcache code mirror (bad magic)")
    fields = _HEADER.unpack_from(head)
    (crc,) = _CRC.unpack_from(head, _HEADER.size)
    if crc != zlib.crc32(head[: _HEADER.size]):
        raise MirrorInvalid("mirror header CRC mismatch")
    if head.count(0, _HEADER_USED) != HEADER_SIZE - _HEADER_USED:
        raise MirrorInvalid("mirror header padding is not zero")
    _, version, header_size, cap, count, _, dead, expiring, _, file_uid, _ = fields
    if version != FORMAT_VERSION or header_size != HEADER_SIZE:
        raise MirrorInvalid(f"mirror format version {version} is not {FORMAT_VERSION}")
    if size != HEADER_SIZE + ROW_BYTES * cap:
        raise MirrorInvalid(f"mirror size {size} does not match its capacity {cap}")
    if count > cap or dead > count or expiring > count:
        raise MirrorInvalid(f"mirror counters out of range (count {count}, capacity {cap})")
    if file_uid != uid:
        raise MirrorInvalid("mirror belongs to another database (db_uid mismatch)")


def _check_rows(
    entry_ids: np.ndarray, partitions: np.ndarray, expires: np.ndarray, codes_u8: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert a batch of rows to the column dtypes."""
    ids = np.ascontiguousarray(entry_ids, dtype=np.int64).reshape(-1)
    n = ids.shape[0]
    parts = np.asarray(partitions).reshape(-1)
    exp = np.asarray(expires).reshape(-1)
    codes = np.ascontiguousarray(codes_u8, dtype=np.uint8).reshape(-1, CODE_BYTES)
    if parts.shape[0] != n or exp.shape[0] != n or codes.shape[0] != n:
        raise InvalidInputError(
            f"row arrays disagree: {n} ids, {parts.shape[0]} partitions, "
            f"{exp.shape[0]} expires, {codes.shape[0]} codes"
        )
    if n > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise InvalidInputError("entry ids must be strictly increasing")
    if n and (parts.min() < np.iinfo(np.int32).min or parts.max() > np.iinfo(np.int32).max):
        raise InvalidInputError("partitions must fit in int32")
    if n and (exp.min() < 0 or exp.max() > EXPIRES_NEVER):
        raise InvalidInputError("expires must fit in uint32")
    return (
        ids,
        np.ascontiguousarray(parts, dtype=np.int32),
        np.ascontiguousarray(exp, dtype=np.uint32),
        codes,
    )


def _put(mm: mmap.mmap, offset: int, arr: np.ndarray) -> None:
    """Copy a contiguous array into the map at ``offset`` (no exported view left behind)."""
    if arr.nbytes:
        mm[offset : offset + arr.nbytes] = memoryview(np.ascontiguousarray(arr)).cast("B")


def _allocate(fd: int, size: int) -> None:
    """Allocate the file's blocks (ENOSPC raises OSError); a no-op where unsupported."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:
        return
    try:
        fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return
        raise


def _open_existing(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDWR)
    except OSError:
        return None


def _flag_superseded(fd: int) -> None:
    """Best effort: set the superseded flag in a replaced file's header for its readers."""
    try:
        head = os.pread(fd, _HEADER_USED, 0)
        if len(head) != _HEADER_USED or head[:8] != MAGIC:
            return
        (crc,) = _CRC.unpack_from(head, _HEADER.size)
        if crc != zlib.crc32(head[: _HEADER.size]):
            return
        f = list(_HEADER.unpack_from(head))
        f[10] |= _FLAG_SUPERSEDED
        body = _HEADER.pack(*f)
        os.pwrite(fd, body + _CRC.pack(zlib.crc32(body)), 0)
    except OSError as exc:
        log.debug("semcache: could not flag replaced mirror: %s", exc)


def _fsync_dir(directory: str) -> None:
    """Make the rename durable (not possible on every platform / filesystem)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _remove_stale_temps(path: str) -> None:
    """Delete temp files left by writers that died mid-create (their pid is gone)."""
    for tmp in glob.glob(glob.escape(path) + ".tmp-*"):
        try:
            pid = int(tmp.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
                log.debug("semcache: removed stale mirror temp file %s", tmp)
        except PermissionError:
            pass  # alive, owned by someone else
