"""The read side of a code mirror: mapping the file, its header, search and verification.

:class:`MirrorMap` maps a file of :mod:`semcache.store.sqlite.mirror_format` and answers
searches; :class:`semcache.store.sqlite.mirror.CodeMirror` adds creating files and the writer
operations. See :mod:`semcache.store.sqlite.mirror` for the design.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
import threading
import time
import zlib
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
)
from semcache.kernels.scan import KEY_SHIFT, ROW_MASK, topk_keys
from semcache.store.sqlite.mirror_format import (
    CODE_BYTES,
    CRC,
    EXPIRES_NEVER,
    FLAG_SUPERSEDED,
    HALF,
    HEADER,
    HEADER_USED,
    MAGIC,
    Layout,
    MirrorInvalid,
    pack_header,
    row_hashes,
)

log = logging.getLogger("semcache")


class MirrorMap:
    """A mapped mirror file, read side. Searching is thread-safe (a scan workspace per
    thread)."""

    # Header fields as last read or written (see _apply_header).
    _count: int
    _run_count: int
    _seq: int
    _token: int
    _gen: int
    _dead: int
    _expiring: int
    _flags: int
    _depth: int  # nesting of writer updates (CodeMirror.update)

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
        self._layout = Layout(fields[3], fields[5], fields[14])
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

    # ------------------------------------------------------------------ header

    def _read_header(self) -> tuple[Any, ...]:
        """Unpack the header from the map, retrying torn reads; MirrorInvalid if it stays bad."""
        mm = self._require_map()
        for attempt in range(200):
            raw = mm[0:HEADER_USED]
            fields = HEADER.unpack_from(raw)
            (crc,) = CRC.unpack_from(raw, HEADER.size)
            if crc == zlib.crc32(raw[: HEADER.size]) and fields[0] == MAGIC:
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
        self._count = count
        self._run_count = runs
        self._seq = seq
        self._token = token
        self._gen = gen
        self._dead = dead
        self._expiring = expiring
        self._flags = flags

    def _write_header(self) -> None:
        mm = self._require_map()
        raw = pack_header(
            self._layout, self._count, self._run_count, (self._seq, self._token), self._gen,
            self._dead, self._expiring, self._uid, self._flags)
        mm[0:HEADER_USED] = raw
        self._raw_header = raw

    def header_unchanged(self) -> bool:
        """The header bytes are those this object last read or wrote (~0.3 us): nobody
        flagged, replaced, damaged or wrote the file since."""
        mm = self._mm
        return mm is not None and mm[0:HEADER_USED] == self._raw_header

    def reload_header(self) -> None:
        """Re-read the counters other processes' writers changed (one 128-byte read)."""
        self._apply_header(self._read_header())

    def is_current(self) -> bool:
        """False once this map is superseded (grown, rebuilt, replaced or deleted)."""
        self.reload_header()
        if self._flags & FLAG_SUPERSEDED:
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
        try:  # the end offset is the size: lseek builds no stat result (0.4 us, not 1.1);
            # the fd's offset is used by nothing else (the map, pwrite)
            return os.lseek(fd, 0, os.SEEK_END) >= self._layout.size
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
        if rc == 1:  # the usual case: one run of consecutive ids
            return rows + int(self._run_ids[0])
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
        if self._mm is None:
            self._require_map()  # raises
        n = self._count
        if n == 0 or k <= 0:
            return []
        kernel = active_kernel()
        ws = self._workspace(kernel)
        use_exp = self._expiring > 0
        half_cut, full_cut = None, 256
        if min_cosine is not None:
            half_cut = half_distance_cut(min_cosine)
            if half_cut <= MAX_USEFUL_HALF_CUT:
                full_cut = half_distance_cut(min_cosine, 256)
            else:
                half_cut = None
        q = query if query.dtype == np.uint8 and query.flags.c_contiguous else \
            np.ascontiguousarray(query).view(np.uint8)
        q = q.reshape(-1)
        if q.shape[0] != CODE_BYTES:
            raise InvalidInputError(f"query must be a 32-byte code, got {q.shape[0]} bytes")
        numpy = kernel is NUMPY
        t0 = time.perf_counter() if numpy else 0.0
        keys = topk_keys(
            self._lo, self._hi, q, k, half_cut=half_cut, full_cut=full_cut,
            partition=partition,
            partitions=self._parts if partition is not None or self._dead > 0 else None,
            expires=self._exp if use_exp else None,
            now_u32=min(max(math.floor(now), 0), EXPIRES_NEVER - 1) if use_exp else None,
            count=n, kernel=kernel, workspace=ws, check=False)
        if numpy:
            note_scan_time(time.perf_counter() - t0)
        if not keys:
            return []
        if self._run_count == 1:  # the usual case: one run of consecutive ids
            base = int(self._run_ids[0])
            return [((key & ROW_MASK) + base, key >> KEY_SHIFT) for key in keys]
        rows = np.array(keys, dtype=np.int64)
        ids = self._ids_of(rows & ROW_MASK).tolist()
        return list(zip(ids, (rows >> KEY_SHIFT).tolist(), strict=True))

    def _workspace(self, kernel: Any) -> Workspace:
        """This thread's scan buffers for ``kernel`` (made on first use)."""
        spaces = getattr(self._tls, "spaces", None)
        if spaces is None:
            spaces = self._tls.spaces = {}
        ws = spaces.get(kernel.name)
        if ws is None:
            ws = spaces[kernel.name] = Workspace(kernel.chunk_rows)
        return ws

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
            if gen & 1 or fields[13] & FLAG_SUPERSEDED:
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
        h = row_hashes(self._lo[start:end], self._hi[start:end], ids,
                        self._parts[start:end], self._exp[start:end], rows)
        return int(np.add.reduce(h, dtype=np.uint64))

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

    def __repr__(self) -> str:
        return (f"CodeMirror({self._path!r}, count={self._count}, "
                f"capacity={self._layout.cap}, runs={self._run_count}, seq={self._seq}, "
                f"dead={self._dead})")

