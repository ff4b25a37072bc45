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
import logging
import mmap
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from semcache.errors import InvalidInputError
from semcache.store.sqlite.mirror_format import (
    CODE_BYTES,
    EXPIRES_NEVER,
    HALF,
    HEADER_SIZE,
    HEADER_USED,
    MIN_CAPACITY,
    MIN_RUN_CAPACITY,
    OPEN_FLAGS,
    ROW_BYTES,
    Layout,
    MirrorInvalid,
    allocate,
    check_rows,
    pack_header,
    publish,
    put,
    remove_stale_temps,
    row_hashes,
    runs_of,
    uid_hash,
    validate_file,
)
from semcache.store.sqlite.mirror_map import MirrorMap

__all__ = ["CodeMirror", "MirrorInvalid", "EXPIRES_NEVER", "HEADER_SIZE", "ROW_BYTES"]

log = logging.getLogger("semcache")


class CodeMirror(MirrorMap):
    """A mapped mirror file. Build one with :meth:`create` or :meth:`open`.

    Searching is thread-safe (each thread gets its own scan workspace); writer methods must
    be serialized by the caller (they run under the database write lock).
    """

    @classmethod
    def open(cls, path: str, db_uid: str | bytes, *, writable: bool = False) -> CodeMirror:
        """Map an existing mirror after checking its header (O(1): the data is verified
        block by block later, see :meth:`verify_step`). Raises FileNotFoundError when
        ``path`` does not exist and MirrorInvalid when the header cannot be trusted."""
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | OPEN_FLAGS)
        try:
            validate_file(fd, uid_hash(db_uid))
            return cls(path, fd, uid_hash(db_uid), writable)
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
        return cls._create_hashed(path, uid_hash(db_uid), state, 0, entry_ids, partitions,
                                  expires, codes_u8, capacity)

    @classmethod
    def _create_hashed(cls, path: str, uid: bytes, state: tuple[int, int], gen: int,
                       entry_ids: np.ndarray, partitions: np.ndarray, expires: np.ndarray,
                       codes_u8: np.ndarray, capacity: int | None) -> CodeMirror:
        """:meth:`create` with the header's uid hash already computed."""
        ids, parts, exp, codes = check_rows(entry_ids, partitions, expires, codes_u8)
        n = ids.shape[0]
        cap = max(MIN_CAPACITY, 2 * n) if capacity is None else int(capacity)
        if cap < n:
            raise InvalidInputError(f"capacity {cap} is below the {n} rows given")
        run_rows, run_ids = runs_of(ids, 0, None)
        lay = Layout(cap, max(MIN_RUN_CAPACITY, 2 * run_rows.shape[0]))
        lo, hi = np.ascontiguousarray(codes[:, :HALF]), np.ascontiguousarray(codes[:, HALF:])
        rows = np.arange(n, dtype=np.int64)
        blocks = np.zeros(lay.nblocks, dtype=np.uint64)
        np.add.at(blocks, rows // lay.block_rows, row_hashes(lo, hi, ids, parts, exp, rows))
        header = pack_header(lay, n, run_rows.shape[0], state, gen,
                              int(np.count_nonzero(parts < 0)),
                              int(np.count_nonzero(exp != EXPIRES_NEVER)), uid, 0)
        remove_stale_temps(path)
        tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"  # not `secrets`: ~3 ms to import
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, 0o644)
        try:
            os.ftruncate(fd, lay.size)
            # Reserve every block now: a store into an unallocated page of a map on a full
            # disk is a SIGBUS that kills the process; here it is an OSError (ENOSPC) that
            # the caller handles by searching in SQL.
            allocate(fd, lay.size)
            with mmap.mmap(fd, lay.size, access=mmap.ACCESS_WRITE) as mm:
                for offset, arr in ((lay.lo, lo), (lay.hi, hi), (lay.parts, parts),
                                    (lay.exp, exp), (lay.run_rows, run_rows),
                                    (lay.run_ids, run_ids), (lay.blocks, blocks)):
                    put(mm, offset, arr)
                mm[0:HEADER_USED] = header
                mm.flush()
            os.fsync(fd)
            publish(tmp, path)
            return cls(path, fd, uid, writable=True, verified=True)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            os.close(fd)
            raise

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
        ids, parts, exp, codes = check_rows(entry_ids, partitions, expires, codes_u8)
        n = ids.shape[0]
        last = self.max_entry_id
        if n and ids[0] <= last:
            raise InvalidInputError(
                f"appended entry id {int(ids[0])} is not above the last one {last}")
        with self.update():
            start = self._count
            run_rows, run_ids = runs_of(ids, start, last if start else None)
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
            self._add_to_blocks(rows, row_hashes(lo, hi, ids, parts, exp, rows))
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
        return row_hashes(self._lo[rows], self._hi[rows], self._ids_of(rows),
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

    def _require_writable(self) -> None:
        self._require_map()
        if not self._writable:
            raise InvalidInputError("mirror was opened read-only")

