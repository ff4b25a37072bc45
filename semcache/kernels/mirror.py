"""CodeMirror: the mmap'd code index beside the database, shared by every process.

The mirror is derived data: SQLite is the truth, and any doubt about this file (bad magic,
bad CRC, a block checksum that does not add up, truncation, another database's uid) raises
:class:`MirrorInvalid`, after which the caller rebuilds it from SQLite. It is therefore never
fsync'd on ordinary updates, only when a complete new file is published.

File layout, format 2 (all little-endian; ``cap`` rows, ``rcap`` runs)::

    [0, 4096)              header: the fields of ``_HEADER`` in bytes [0, 124), their CRC-32
                           in [124, 128), zeros up to 4096
    lo         uint8[cap, 16]   code bytes 0-15 of each row (row-major: the kernels' layout)
    hi         uint8[cap, 16]   code bytes 16-31
    partitions int32[cap]       namespace partition; -1 = dead row
    expires    uint32[cap]      ceil(expiry epoch seconds); 0xFFFFFFFF = never
    run_rows   int64[rcap]      first row of each run of consecutive entry ids
    run_ids    int64[rcap]      the entry id of that row
    block_sums uint64[ceil(cap / block_rows)]   checksum of each block of rows

40 bytes per row: the entry id is not stored per row but implied by position within its run
(rows are appended in id order, and ids are handed out consecutively, so a file usually has
one run per batch of deletions compacted away; 16 bytes per run).

Checksums: each row hashes to a 64-bit value (a mix of its code words, entry id, partition,
expiry and row index in which every step is a bijection of each field); a block's sum is the
wrapping sum of its rows' hashes, kept up to date in O(changed rows) by writers. Opening a
file checks only its header: the data is verified one block at a time by :meth:`verify_step`
(the index runs one step per search until every block was checked once), so opening a large
file costs O(1) and a damaged one is still found early.

Concurrency: one writer at a time (the caller holds the cross-process write lock); any number
of readers, in any process. A writer bumps the header's ``gen`` to an odd value before it
touches rows and back to even when done (a seqlock: a block checked while ``gen`` moved is
simply checked again later), writes rows before the header that makes them visible, and
never truncates or rewrites a file in place: growth and rebuilds publish a new file with
``os.replace``, flag the old one superseded, and a reader still mapping the old inode keeps
working (and stale) until it reopens.
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
import stat
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from semcache.errors import InvalidInputError
from semcache.kernels.hamming import (
    MAX_USEFUL_HALF_CUT,
    NUMPY,
    Workspace,
    active_kernel,
    half_distance_cut,
    note_scan_time,
    topk,
)

__all__ = ["CodeMirror", "MirrorInvalid", "EXPIRES_NEVER", "ROW_BYTES"]

log = logging.getLogger("semcache")

MAGIC = b"SCMIRROR"
FORMAT_VERSION = 2
HEADER_SIZE = 4096
ROW_BYTES = 40
RUN_BYTES = 16
CODE_BYTES = 32
HALF = 16
EXPIRES_NEVER = 0xFFFFFFFF
MIN_CAPACITY = 1024
MIN_RUN_CAPACITY = 64
BLOCK_ROWS = 32768
_FLAG_SUPERSEDED = 1

# magic, version, header_size, capacity, count, run_capacity, run_count, seq, token, gen,
# dead_count, expiring_count, db_uid hash, flags, block_rows. CRC-32 of these at 124.
_HEADER = struct.Struct("<8sIIQQQQqqQQQ16sII12x")
_CRC = struct.Struct("<I")
_HEADER_USED = _HEADER.size + _CRC.size  # 128
_OPEN_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)

# Odd 64-bit multipliers (splitmix64 / murmur3 finalizer constants).
_M = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB,
                             0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)]


class MirrorInvalid(Exception):
    """The mirror file is missing pieces, corrupt, stale beyond use or of another database.

    Deliberately not a SemcacheError: it never reaches users, the index rebuilds the mirror.
    """


def _uid_hash(db_uid: str | bytes) -> bytes:
    """16-byte identity stored in the header (any length of uid is accepted)."""
    raw = db_uid.encode("utf-8") if isinstance(db_uid, str) else bytes(db_uid)
    return hashlib.blake2b(raw, digest_size=16).digest()


def _row_hashes(lo: np.ndarray, hi: np.ndarray, ids: np.ndarray, parts: np.ndarray,
                expires: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """uint64 hash of each row from its fields (``lo``/``hi``: (n, 16) uint8 of those rows)."""
    h = rows.astype(np.uint64)  # a fresh array: updated in place below
    h += np.uint64(1)
    h *= _M[0]
    words = (lo.reshape(-1).view(np.uint64).reshape(-1, 2),
             hi.reshape(-1).view(np.uint64).reshape(-1, 2))
    for i in range(4):
        h ^= words[i // 2][:, i % 2]
        h *= _M[i + 1]
    h ^= ids.astype(np.int64).view(np.uint64)
    h *= _M[5]
    pe = parts.astype(np.int32).view(np.uint32).astype(np.uint64)
    pe <<= np.uint64(32)
    pe |= expires.astype(np.uint64)
    h ^= pe
    h *= _M[0]
    h ^= h >> np.uint64(31)
    return h


def _runs_of(ids: np.ndarray, first_row: int, prev_id: int | None) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """(run start rows, run first ids) of ids appended at ``first_row`` after ``prev_id``."""
    if ids.shape[0] == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.diff(ids) != 1) + 1
    if prev_id is None or int(ids[0]) != prev_id + 1:
        starts = np.concatenate(([0], starts))
    return (starts + first_row).astype(np.int64), ids[starts].astype(np.int64)


class _Layout:
    """Byte offsets of the regions of a file of ``cap`` rows and ``rcap`` runs."""

    def __init__(self, cap: int, rcap: int, block_rows: int = BLOCK_ROWS) -> None:
        self.cap, self.rcap, self.block_rows = cap, rcap, block_rows
        self.lo = HEADER_SIZE
        self.hi = self.lo + HALF * cap
        self.parts = self.hi + HALF * cap
        self.exp = self.parts + 4 * cap
        self.run_rows = self.exp + 4 * cap
        self.run_ids = self.run_rows + 8 * rcap
        self.blocks = self.run_ids + 8 * rcap
        self.nblocks = -(-cap // block_rows)
        self.size = self.blocks + 8 * self.nblocks


class CodeMirror:
    """A mapped mirror file. Build one with :meth:`create` or :meth:`open`.

    Searching is thread-safe (each thread gets its own scan workspace); writer methods must
    be serialized by the caller (they run under the database write lock).
    """

    # ------------------------------------------------------------------ construction

    def __init__(self, path: str, fd: int, uid: bytes, writable: bool,
                 verified: bool = False) -> None:
        """Map an already validated file and own ``fd``. Use :meth:`open` / :meth:`create`."""
        self._path = path
        self._uid = uid
        self._writable = writable
        self._raw_header = b""
        self._fd: int | None = fd
        st = os.fstat(fd)
        self._inode = (st.st_dev, st.st_ino)
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._mm: mmap.mmap | None = mmap.mmap(fd, st.st_size, access=access)
        fields = self._read_header()
        self._layout = _Layout(fields[3], fields[5], fields[14])
        self._apply_header(fields)
        self._map_columns()
        self._tls = threading.local()
        self._depth = 0  # nesting of writer updates (see :meth:`update`)
        self._next_block = self._layout.nblocks if verified else 0

    def _map_columns(self) -> None:
        lay, mm = self._layout, self._mm

        def col(dtype: Any, offset: int, count: int) -> np.ndarray:
            return np.frombuffer(mm, dtype=dtype, count=count, offset=offset)  # type: ignore[arg-type]

        self._lo = col(np.uint8, lay.lo, HALF * lay.cap).reshape(lay.cap, HALF)
        self._hi = col(np.uint8, lay.hi, HALF * lay.cap).reshape(lay.cap, HALF)
        self._parts = col(np.int32, lay.parts, lay.cap)
        self._exp = col(np.uint32, lay.exp, lay.cap)
        self._run_rows = col(np.int64, lay.run_rows, lay.rcap)
        self._run_ids = col(np.int64, lay.run_ids, lay.rcap)
        self._blocks = col(np.uint64, lay.blocks, lay.nblocks)

    @classmethod
    def open(cls, path: str, db_uid: str | bytes, *, writable: bool = False) -> CodeMirror:
        """Map an existing mirror after checking its header (O(1): the data is verified
        block by block later, see :meth:`verify_step`). Raises FileNotFoundError when
        ``path`` does not exist and MirrorInvalid when the header cannot be trusted."""
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | _OPEN_FLAGS)
        try:
            _validate_file(fd, _uid_hash(db_uid))
            return cls(path, fd, _uid_hash(db_uid), writable)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def create(cls, path: str, db_uid: str | bytes, state: tuple[int, int],
               entry_ids: np.ndarray, partitions: np.ndarray, expires: np.ndarray,
               codes_u8: np.ndarray, capacity: int | None = None) -> CodeMirror:
        """Write a complete mirror to a temp file, fsync it, publish it on ``path``; map it.

        ``state`` is the database's ``(change_seq, state_token)`` the rows reflect;
        ``entry_ids`` must be strictly increasing. ``capacity`` defaults to twice the row
        count (at least MIN_CAPACITY). Returns a writable mirror. Any previous file at
        ``path`` is flagged superseded so its readers know to reopen.
        """
        return cls._create_hashed(path, _uid_hash(db_uid), state, 0, entry_ids, partitions,
                                  expires, codes_u8, capacity)

    @classmethod
    def _create_hashed(cls, path: str, uid: bytes, state: tuple[int, int], gen: int,
                       entry_ids: np.ndarray, partitions: np.ndarray, expires: np.ndarray,
                       codes_u8: np.ndarray, capacity: int | None) -> CodeMirror:
        """:meth:`create` with the header's uid hash already computed."""
        ids, parts, exp, codes = _check_rows(entry_ids, partitions, expires, codes_u8)
        n = ids.shape[0]
        cap = max(MIN_CAPACITY, 2 * n) if capacity is None else int(capacity)
        if cap < n:
            raise InvalidInputError(f"capacity {cap} is below the {n} rows given")
        run_rows, run_ids = _runs_of(ids, 0, None)
        lay = _Layout(cap, max(MIN_RUN_CAPACITY, 2 * run_rows.shape[0]))
        lo, hi = np.ascontiguousarray(codes[:, :HALF]), np.ascontiguousarray(codes[:, HALF:])
        rows = np.arange(n, dtype=np.int64)
        blocks = np.zeros(lay.nblocks, dtype=np.uint64)
        np.add.at(blocks, rows // lay.block_rows, _row_hashes(lo, hi, ids, parts, exp, rows))
        header = _pack_header(lay, n, run_rows.shape[0], state, gen,
                              int(np.count_nonzero(parts < 0)),
                              int(np.count_nonzero(exp != EXPIRES_NEVER)), uid, 0)
        _remove_stale_temps(path)
        tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o644)
        try:
            os.ftruncate(fd, lay.size)
            # Reserve every block now: a store into an unallocated page of a map on a full
            # disk is a SIGBUS that kills the process; here it is an OSError (ENOSPC) that
            # the caller handles by searching in SQL.
            _allocate(fd, lay.size)
            with mmap.mmap(fd, lay.size, access=mmap.ACCESS_WRITE) as mm:
                for offset, arr in ((lay.lo, lo), (lay.hi, hi), (lay.parts, parts),
                                    (lay.exp, exp), (lay.run_rows, run_rows),
                                    (lay.run_ids, run_ids), (lay.blocks, blocks)):
                    _put(mm, offset, arr)
                mm[0:_HEADER_USED] = header
                mm.flush()
            os.fsync(fd)
            _publish(tmp, path)
            return cls(path, fd, uid, writable=True, verified=True)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            os.close(fd)
            raise

    # ------------------------------------------------------------------ header

    def _read_header(self) -> tuple[Any, ...]:
        """Unpack the header from the map, retrying torn reads; MirrorInvalid if it stays bad."""
        mm = self._require_map()
        for attempt in range(200):
            raw = mm[0:_HEADER_USED]
            fields = _HEADER.unpack_from(raw)
            (crc,) = _CRC.unpack_from(raw, _HEADER.size)
            if crc == zlib.crc32(raw[: _HEADER.size]) and fields[0] == MAGIC:
                self._raw_header = raw
                return fields
            if attempt > 20:
                time.sleep(0.0005)  # a writer may be mid-header: let it finish
        raise MirrorInvalid(f"{self._path}: header CRC mismatch")

    def _apply_header(self, fields: tuple[Any, ...]) -> None:
        (_, _, _, cap, count, rcap, runs, seq, token, gen, dead, expiring, uid, flags, _) = fields
        lay = self._layout
        if (cap != lay.cap or rcap != lay.rcap or uid != self._uid or count > cap
                or runs > rcap or (count > 0) != (runs > 0)):
            raise MirrorInvalid(f"{self._path}: header changed identity under the map")
        self._count: int = count
        self._run_count: int = runs
        self._seq: int = seq
        self._token: int = token
        self._gen: int = gen
        self._dead: int = dead
        self._expiring: int = expiring
        self._flags: int = flags

    def _write_header(self) -> None:
        mm = self._require_map()
        raw = _pack_header(
            self._layout, self._count, self._run_count, (self._seq, self._token), self._gen,
            self._dead, self._expiring, self._uid, self._flags)
        mm[0:_HEADER_USED] = raw
        self._raw_header = raw

    def header_unchanged(self) -> bool:
        """The header bytes are those this object last read or wrote (~0.3 us): nobody
        flagged, replaced, damaged or wrote the file since."""
        mm = self._mm
        return mm is not None and mm[0:_HEADER_USED] == self._raw_header

    def reload_header(self) -> None:
        """Re-read the counters other processes' writers changed (one 128-byte read)."""
        self._apply_header(self._read_header())

    def is_current(self) -> bool:
        """False once this map is superseded (grown, rebuilt, replaced or deleted)."""
        self.reload_header()
        if self._flags & _FLAG_SUPERSEDED:
            return False
        try:
            st = os.stat(self._path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._inode

    def size_ok(self) -> bool:
        """The mapped file still has its full size (a truncated map is a SIGBUS to touch)."""
        fd = self._fd
        if fd is None:
            return False
        try:
            return os.fstat(fd).st_size >= self._layout.size
        except OSError:
            return False

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
    def state(self) -> tuple[int, int]:
        """``(change_seq, state_token)`` of the database state this mirror reflects."""
        return self._seq, self._token

    @property
    def count(self) -> int:
        """Rows in use, dead ones included."""
        return self._count

    @property
    def capacity(self) -> int:
        """Rows the file can hold before it must be re-created."""
        return self._layout.cap

    @property
    def run_count(self) -> int:
        """Runs of consecutive entry ids (16 bytes each)."""
        return self._run_count

    @property
    def file_size(self) -> int:
        """Bytes of the file."""
        return self._layout.size

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
        if not self._count:
            return -1
        last = self._run_count - 1
        return int(self._run_ids[last] + (self._count - 1 - self._run_rows[last]))

    @property
    def writable(self) -> bool:
        """Whether this map accepts writer operations."""
        return self._writable

    @property
    def verified(self) -> bool:
        """Every block was checked since this file was mapped (or this process wrote it)."""
        return self._next_block >= self._layout.nblocks

    # ------------------------------------------------------------------ ids <-> rows

    def _ids_of(self, rows: np.ndarray) -> np.ndarray:
        rc = self._run_count
        j = np.searchsorted(self._run_rows[:rc], rows, side="right") - 1
        return self._run_ids[j] + (rows - self._run_rows[j])

    def rows_of(self, entry_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, found_ids)``: the row of each given id present in the mirror."""
        ids = np.asarray(entry_ids, dtype=np.int64).reshape(-1)
        rows, ok = self._locate(ids)
        return rows[ok], ids[ok]

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row of each id, whether that id is in the mirror at all)."""
        rc = self._run_count
        if rc == 0 or ids.shape[0] == 0:
            return np.zeros(ids.shape[0], dtype=np.int64), np.zeros(ids.shape[0], dtype=bool)
        starts = self._run_rows[:rc]
        j = np.searchsorted(self._run_ids[:rc], ids, side="right") - 1
        jj = np.maximum(j, 0)
        ends = np.append(starts[1:], self._count)[jj]
        off = ids - self._run_ids[jj]
        ok = (j >= 0) & (off >= 0) & (off < ends - starts[jj])
        return starts[jj] + np.where(ok, off, 0), ok

    # ------------------------------------------------------------------ search

    def search(self, query: np.ndarray, k: int, *, partition: int | None, now: float,
               min_cosine: float | None = None) -> list[tuple[int, int]]:
        """The k nearest live rows as ``[(entry_id, hamming_distance)]``, nearest first.

        ``query``: the 32-byte code (uint8, or its four uint64 words). Excludes dead rows,
        rows of another partition (when ``partition`` is given) and rows with
        ``expires <= floor(now)`` (conservative: a row still valid at ``now`` is kept; the
        caller re-checks the exact expiry). Sees the rows of the last header read.

        With ``min_cosine`` (the caller's hit threshold), rows that cannot reach it are
        pruned on their first 128 bits when that pays (see :func:`half_distance_cut`).
        """
        self._require_map()
        n = self._count
        if n == 0 or k <= 0:
            return []
        kernel = active_kernel()
        spaces = getattr(self._tls, "spaces", None)
        if spaces is None:
            spaces = self._tls.spaces = {}
        ws = spaces.get(kernel.name)
        if ws is None:
            ws = spaces[kernel.name] = Workspace(kernel.chunk_rows)
        use_exp = self._expiring > 0
        half_cut, full_cut = None, 256
        if min_cosine is not None and half_distance_cut(min_cosine) <= MAX_USEFUL_HALF_CUT:
            half_cut = half_distance_cut(min_cosine)
            full_cut = half_distance_cut(min_cosine, 256)
        q = np.ascontiguousarray(query).view(np.uint8).reshape(-1)
        if q.shape[0] != CODE_BYTES:
            raise InvalidInputError(f"query must be a 32-byte code, got {q.shape[0]} bytes")
        t0 = time.perf_counter()
        rows, dist = topk(
            self._lo, self._hi, q, k, half_cut=half_cut, full_cut=full_cut,
            partition=partition,
            partitions=self._parts if partition is not None or self._dead > 0 else None,
            expires=self._exp if use_exp else None,
            now_u32=min(max(math.floor(now), 0), EXPIRES_NEVER - 1) if use_exp else None,
            count=n, kernel=kernel, workspace=ws, check=False)
        if kernel is NUMPY:
            note_scan_time(time.perf_counter() - t0)
        return list(zip(self._ids_of(rows).tolist(), dist.tolist(), strict=True))

    def read_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the given rows' fields (``entry_ids``, ``partitions``, ``expires``,
        ``codes`` (n, 32) uint8): for diagnostics, tests and compaction."""
        r = np.asarray(rows, dtype=np.int64)
        return {
            "entry_ids": self._ids_of(r) if r.shape[0] else np.empty(0, dtype=np.int64),
            "partitions": self._parts[r].copy(),
            "expires": self._exp[r].copy(),
            "codes": np.concatenate((self._lo[r], self._hi[r]), axis=1),
        }

    # ------------------------------------------------------------------ verification

    def verify_step(self, max_blocks: int = 1) -> bool:
        """Check up to ``max_blocks`` more blocks against their checksums.

        Returns True once every block was checked since mapping. A block read while a writer
        was active is simply checked again at a later step. Raises MirrorInvalid on a
        mismatch (damaged data: rebuild).
        """
        lay = self._layout
        for _ in range(max_blocks):
            if self._next_block >= lay.nblocks:
                return True
            fields = self._read_header()
            gen, count, runs = fields[9], fields[4], fields[6]
            if gen & 1 or fields[13] & _FLAG_SUPERSEDED:
                return False  # a writer is at work (or moved on): look again later
            b = self._next_block
            start, end = b * lay.block_rows, min((b + 1) * lay.block_rows, count)
            if start >= count:  # no rows left: the remaining sums must be zero
                ok = not np.any(self._blocks[b:])
                b = lay.nblocks - 1
            else:
                ok = self._block_sum(start, end, runs) == int(self._blocks[b])
            if self._read_header()[9] != gen:
                return False  # moved while we read: check again later
            if not ok:
                raise MirrorInvalid(f"{self._path}: checksum of block {b} does not match")
            self._next_block = b + 1
        return self._next_block >= lay.nblocks

    def verify_all(self) -> None:
        """Check every block now (tolerating a concurrent writer); MirrorInvalid if damaged."""
        self._next_block = 0
        deadline = time.monotonic() + 10.0
        while not self.verify_step(max_blocks=self._layout.nblocks):
            if time.monotonic() > deadline:
                raise MirrorInvalid(f"{self._path}: a writer kept it busy; not verified")
            time.sleep(0.001)

    def _block_sum(self, start: int, end: int, runs: int) -> int:
        if runs < 1 or self._run_rows[0] != 0 or runs > self._layout.rcap:
            raise MirrorInvalid(f"{self._path}: run table damaged")
        rows = np.arange(start, end, dtype=np.int64)
        j = np.searchsorted(self._run_rows[:runs], rows, side="right") - 1
        ids = self._run_ids[j] + (rows - self._run_rows[j])
        h = _row_hashes(self._lo[start:end], self._hi[start:end], ids,
                        self._parts[start:end], self._exp[start:end], rows)
        return int(np.add.reduce(h, dtype=np.uint64))

    # ------------------------------------------------------------------ writer operations

    @contextlib.contextmanager
    def update(self, state: tuple[int, int] | None = None) -> Iterator[CodeMirror]:
        """Group writer operations; on success the header gets ``state`` (when given).

        ``gen`` is odd for the duration, so readers do not verify blocks mid-change. If the
        body raises, the file is left marked busy: the caller drops it.
        """
        self._require_writable()
        if self._depth == 0:
            self._gen |= 1
            self._write_header()
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1  # on an exception ``gen`` stays odd: the file is abandoned
        if state is not None:
            self._seq, self._token = int(state[0]), int(state[1])
        if self._depth == 0:
            self._gen += 1
            self._write_header()

    def append(self, entry_ids: np.ndarray, partitions: np.ndarray, expires: np.ndarray,
               codes_u8: np.ndarray) -> bool:
        """Append rows whose ids are all above :attr:`max_entry_id`.

        Grows when the rows or runs are short: publishes a new file (capacity doubled, dead
        rows dropped) and remaps this object onto it; returns True when that happened.
        """
        ids, parts, exp, codes = _check_rows(entry_ids, partitions, expires, codes_u8)
        n = ids.shape[0]
        last = self.max_entry_id
        if n and ids[0] <= last:
            raise InvalidInputError(
                f"appended entry id {int(ids[0])} is not above the last one {last}")
        with self.update():
            start = self._count
            run_rows, run_ids = _runs_of(ids, start, last if start else None)
            nr = run_rows.shape[0]
            if start + n > self._layout.cap or self._run_count + nr > self._layout.rcap:
                self._grow(ids, parts, exp, codes)
                return True
            end = start + n
            lo, hi = codes[:, :HALF], codes[:, HALF:]
            self._lo[start:end] = lo
            self._hi[start:end] = hi
            self._parts[start:end] = parts
            self._exp[start:end] = exp
            self._run_rows[self._run_count : self._run_count + nr] = run_rows
            self._run_ids[self._run_count : self._run_count + nr] = run_ids
            rows = np.arange(start, end, dtype=np.int64)
            self._add_to_blocks(rows, _row_hashes(lo, hi, ids, parts, exp, rows))
            self._dead += int(np.count_nonzero(parts < 0))
            self._expiring += int(np.count_nonzero(exp != EXPIRES_NEVER))
            self._count, self._run_count = end, self._run_count + nr
            self._write_header()  # last: readers never see a count covering unwritten rows
        return False

    def mark_dead(self, entry_ids: np.ndarray) -> int:
        """Mark the rows of these ids dead (ids not present are ignored); returns how many."""
        with self.update():
            rows, _ = self.rows_of(entry_ids)
            rows = np.unique(rows[self._parts[rows] >= 0])
            if rows.shape[0]:
                self._rewrite(rows, lambda r: self._parts.__setitem__(r, -1))
                self._dead += int(rows.shape[0])
        return int(rows.shape[0])

    def set_expires(self, entry_ids: np.ndarray, expires_u32: np.ndarray | int) -> int:
        """Set the expiry (uint32, see :meth:`expires_to_u32`) of these ids; returns how many."""
        ids = np.asarray(entry_ids, dtype=np.int64).reshape(-1)
        values = np.broadcast_to(np.asarray(expires_u32, dtype=np.int64), ids.shape)
        if values.size and (values.min() < 0 or values.max() > EXPIRES_NEVER):
            raise InvalidInputError("expires values must fit in uint32")
        with self.update():
            rows, ok = self._locate(ids)
            rows, vals = rows[ok], values[ok].astype(np.uint32)
            rows, first = np.unique(rows, return_index=True)
            vals = vals[first]
            if rows.shape[0]:
                old_finite = int(np.count_nonzero(self._exp[rows] != EXPIRES_NEVER))
                self._rewrite(rows, lambda r: self._exp.__setitem__(r, vals))
                self._expiring += int(np.count_nonzero(vals != EXPIRES_NEVER)) - old_finite
        return int(rows.shape[0])

    def set_state(self, state: tuple[int, int]) -> None:
        """Record that the mirror reflects database state ``(seq, token)``."""
        with self.update(state):
            pass

    def compact(self) -> None:
        """Publish a new file without the dead rows (same growth policy) and remap onto it."""
        empty = np.empty(0, dtype=np.int64)
        with self.update():
            self._grow(empty, empty.astype(np.int32), empty.astype(np.uint32),
                       np.empty((0, CODE_BYTES), dtype=np.uint8))

    def _rewrite(self, rows: np.ndarray, change: Any) -> None:
        """Apply ``change(rows)`` to some rows, keeping their blocks' checksums."""
        before = self._hashes(rows)
        change(rows)
        self._add_to_blocks(rows, self._hashes(rows) - before)  # wraps modulo 2**64

    def _add_to_blocks(self, rows: np.ndarray, hashes: np.ndarray) -> None:
        np.add.at(self._blocks, rows // self._layout.block_rows, hashes)

    def _hashes(self, rows: np.ndarray) -> np.ndarray:
        return _row_hashes(self._lo[rows], self._hi[rows], self._ids_of(rows),
                           self._parts[rows], self._exp[rows], rows)

    def _grow(self, ids: np.ndarray, parts: np.ndarray, exp: np.ndarray,
              codes: np.ndarray) -> None:
        live = np.flatnonzero(self._parts[: self._count] >= 0)
        old = self.read_rows(live)
        all_ids = np.concatenate((old["entry_ids"], ids))
        cap = max(MIN_CAPACITY, 2 * all_ids.shape[0])
        fresh = CodeMirror._create_hashed(
            self._path, self._uid, self.state, self._gen, all_ids,
            np.concatenate((old["partitions"], parts)), np.concatenate((old["expires"], exp)),
            np.concatenate((old["codes"], codes)), capacity=cap)
        log.info("semcache: code mirror %s re-created with capacity %d (%d rows, %d dead "
                 "dropped)", self._path, cap, all_ids.shape[0], self._count - live.shape[0])
        depth = self._depth
        self._release_map()
        # Become the new mirror: callers keep holding this same object.
        self.__dict__.update(fresh.__dict__)
        fresh.__dict__.clear()
        self._depth = depth

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
        mm, fd = self._mm, self._fd
        empty = np.empty(0)
        self._lo = self._hi = np.empty((0, HALF), dtype=np.uint8)
        self._parts = self._exp = self._run_rows = self._run_ids = self._blocks = empty
        self._tls = threading.local()
        self._mm = None
        self._fd = None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # someone still holds a view: the map goes away with it
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Unmap the file. Idempotent."""
        self._release_map()

    def __enter__(self) -> CodeMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"CodeMirror({self._path!r}, count={self._count}, "
                f"capacity={self._layout.cap}, runs={self._run_count}, seq={self._seq}, "
                f"dead={self._dead})")


# ---------------------------------------------------------------------- file helpers


def _pack_header(lay: _Layout, count: int, runs: int, state: tuple[int, int], gen: int,
                 dead: int, expiring: int, uid: bytes, flags: int) -> bytes:
    body = _HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, lay.cap, count, lay.rcap, runs,
                        int(state[0]), int(state[1]), gen, dead, expiring, uid, flags,
                        lay.block_rows)
    return body + _CRC.pack(zlib.crc32(body))


def _validate_file(fd: int, uid: bytes) -> None:
    """Check type, size, header CRC, padding, layout and identity before mapping anything."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise MirrorInvalid("mirror path is not a regular file")
    if st.st_size < HEADER_SIZE:
        raise MirrorInvalid(f"mirror truncated to {st.st_size} bytes")
    head = os.pread(fd, HEADER_SIZE, 0)
    if len(head) != HEADER_SIZE or head[:8] != MAGIC:
        raise MirrorInvalid("not a semcache code mirror (bad magic)")
    fields = _HEADER.unpack_from(head)
    (crc,) = _CRC.unpack_from(head, _HEADER.size)
    if crc != zlib.crc32(head[: _HEADER.size]):
        raise MirrorInvalid("mirror header CRC mismatch")
    if head.count(0, _HEADER_USED) != HEADER_SIZE - _HEADER_USED:
        raise MirrorInvalid("mirror header padding is not zero")
    (_, version, header_size, cap, count, rcap, runs, _, _, _, dead, expiring, file_uid, _,
     block_rows) = fields
    if version != FORMAT_VERSION or header_size != HEADER_SIZE:
        raise MirrorInvalid(f"mirror format version {version} is not {FORMAT_VERSION}")
    if block_rows < 1 or st.st_size != _Layout(cap, rcap, block_rows).size:
        raise MirrorInvalid(f"mirror size {st.st_size} does not match its layout")
    if count > cap or runs > rcap or dead > count or expiring > count \
            or (count > 0) != (runs > 0):
        raise MirrorInvalid(f"mirror counters out of range (count {count}, capacity {cap})")
    if file_uid != uid:
        raise MirrorInvalid("mirror belongs to another database (db_uid mismatch)")


def _check_rows(entry_ids: np.ndarray, partitions: np.ndarray, expires: np.ndarray,
                codes_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert a batch of rows to the column dtypes."""
    ids = np.ascontiguousarray(entry_ids, dtype=np.int64).reshape(-1)
    n = ids.shape[0]
    parts = np.asarray(partitions).reshape(-1)
    exp = np.asarray(expires).reshape(-1)
    codes = np.ascontiguousarray(codes_u8, dtype=np.uint8).reshape(-1, CODE_BYTES)
    if parts.shape[0] != n or exp.shape[0] != n or codes.shape[0] != n:
        raise InvalidInputError(
            f"row arrays disagree: {n} ids, {parts.shape[0]} partitions, "
            f"{exp.shape[0]} expires, {codes.shape[0]} codes")
    if n > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise InvalidInputError("entry ids must be strictly increasing")
    if n and (parts.min() < np.iinfo(np.int32).min or parts.max() > np.iinfo(np.int32).max):
        raise InvalidInputError("partitions must fit in int32")
    if n and (exp.min() < 0 or exp.max() > EXPIRES_NEVER):
        raise InvalidInputError("expires must fit in uint32")
    return (ids, np.ascontiguousarray(parts, dtype=np.int32),
            np.ascontiguousarray(exp, dtype=np.uint32), codes)


def _put(mm: mmap.mmap, offset: int, arr: np.ndarray) -> None:
    """Copy a contiguous array into the map at ``offset`` (no exported view left behind)."""
    if arr.nbytes:
        mm[offset : offset + arr.nbytes] = np.ascontiguousarray(arr).data.cast("B")


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


def _publish(tmp: str, path: str) -> None:
    """Rename the finished temp file onto ``path``, flag the file it replaces superseded."""
    try:
        old_fd: int | None = os.open(path, os.O_RDWR | _OPEN_FLAGS)
    except OSError:
        old_fd = None
    try:
        os.replace(tmp, path)
        if old_fd is not None:
            _flag_superseded(old_fd)
    finally:
        if old_fd is not None:
            os.close(old_fd)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _flag_superseded(fd: int) -> None:
    """Best effort: set the superseded flag in a replaced file's header for its readers."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        head = os.pread(fd, _HEADER_USED, 0)
        if len(head) != _HEADER_USED or head[:8] != MAGIC:
            return
        (crc,) = _CRC.unpack_from(head, _HEADER.size)
        if crc != zlib.crc32(head[: _HEADER.size]):
            return
        f = list(_HEADER.unpack_from(head))
        f[13] |= _FLAG_SUPERSEDED
        body = _HEADER.pack(*f)
        os.pwrite(fd, body + _CRC.pack(zlib.crc32(body)), 0)
    except (OSError, struct.error) as exc:
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
