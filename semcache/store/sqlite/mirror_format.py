"""The code mirror's file format: layout, header, checksums, and publishing a file.

See :mod:`semcache.store.sqlite.mirror` for what the file is and how it is used; this module
holds what is pure format (no mapping): the region offsets of a file of a given capacity,
the header's fields, the per-row hash behind the block checksums, the runs of consecutive
entry ids that replace a per-row id column, and the helpers that write a complete file to a
temp name and publish it with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import logging
import mmap
import os
import stat
import struct
import zlib

import numpy as np

from semcache.errors import InvalidInputError

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
FLAG_SUPERSEDED = 1

#: magic, version, header_size, capacity, count, run_capacity, run_count, seq, token, gen,
# dead_count, expiring_count, db_uid hash, flags, block_rows. CRC-32 of these at 124.
HEADER = struct.Struct("<8sIIQQQQqqQQQ16sII12x")
CRC = struct.Struct("<I")
HEADER_USED = HEADER.size + CRC.size  # 128
OPEN_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)

# Odd 64-bit multipliers (splitmix64 / murmur3 finalizer constants).
_M = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB,
                             0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)]


class MirrorInvalid(Exception):
    """The mirror file is missing pieces, corrupt, stale beyond use or of another database.

    Deliberately not a SemcacheError: it never reaches users, the index rebuilds the mirror.
    """


def uid_hash(db_uid: str | bytes) -> bytes:
    """16-byte identity stored in the header (any length of uid is accepted)."""
    raw = db_uid.encode("utf-8") if isinstance(db_uid, str) else bytes(db_uid)
    return hashlib.blake2b(raw, digest_size=16).digest()


def row_hashes(lo: np.ndarray, hi: np.ndarray, ids: np.ndarray, parts: np.ndarray,
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


def runs_of(ids: np.ndarray, first_row: int, prev_id: int | None) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """(run start rows, run first ids) of ids appended at ``first_row`` after ``prev_id``."""
    if ids.shape[0] == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.diff(ids) != 1) + 1
    if prev_id is None or int(ids[0]) != prev_id + 1:
        starts = np.concatenate(([0], starts))
    return (starts + first_row).astype(np.int64), ids[starts].astype(np.int64)


class Layout:
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


# ---------------------------------------------------------------------- file helpers


def pack_header(lay: Layout, count: int, runs: int, state: tuple[int, int], gen: int,
                 dead: int, expiring: int, uid: bytes, flags: int) -> bytes:
    body = HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, lay.cap, count, lay.rcap, runs,
                        int(state[0]), int(state[1]), gen, dead, expiring, uid, flags,
                        lay.block_rows)
    return body + CRC.pack(zlib.crc32(body))


def validate_file(fd: int, uid: bytes) -> None:
    """Check type, size, header CRC, padding, layout and identity before mapping anything."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise MirrorInvalid("mirror path is not a regular file")
    if st.st_size < HEADER_SIZE:
        raise MirrorInvalid(f"mirror truncated to {st.st_size} bytes")
    head = os.pread(fd, HEADER_SIZE, 0)
    if len(head) != HEADER_SIZE or head[:8] != MAGIC:
        raise MirrorInvalid("not a semcache code mirror (bad magic)")
    fields = HEADER.unpack_from(head)
    (crc,) = CRC.unpack_from(head, HEADER.size)
    if crc != zlib.crc32(head[: HEADER.size]):
        raise MirrorInvalid("mirror header CRC mismatch")
    if head.count(0, HEADER_USED) != HEADER_SIZE - HEADER_USED:
        raise MirrorInvalid("mirror header padding is not zero")
    (_, version, header_size, cap, count, rcap, runs, _, _, _, dead, expiring, file_uid, _,
     block_rows) = fields
    if version != FORMAT_VERSION or header_size != HEADER_SIZE:
        raise MirrorInvalid(f"mirror format version {version} is not {FORMAT_VERSION}")
    if block_rows < 1 or st.st_size != Layout(cap, rcap, block_rows).size:
        raise MirrorInvalid(f"mirror size {st.st_size} does not match its layout")
    if count > cap or runs > rcap or dead > count or expiring > count \
            or (count > 0) != (runs > 0):
        raise MirrorInvalid(f"mirror counters out of range (count {count}, capacity {cap})")
    if file_uid != uid:
        raise MirrorInvalid("mirror belongs to another database (db_uid mismatch)")


def check_rows(entry_ids: np.ndarray, partitions: np.ndarray, expires: np.ndarray,
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


def put(mm: mmap.mmap, offset: int, arr: np.ndarray) -> None:
    """Copy a contiguous array into the map at ``offset`` (no exported view left behind)."""
    if arr.nbytes:
        mm[offset : offset + arr.nbytes] = np.ascontiguousarray(arr).data.cast("B")


def allocate(fd: int, size: int) -> None:
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


def publish(tmp: str, path: str) -> None:
    """Rename the finished temp file onto ``path``, flag the file it replaces superseded."""
    try:
        old_fd: int | None = os.open(path, os.O_RDWR | OPEN_FLAGS)
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
        head = os.pread(fd, HEADER_USED, 0)
        if len(head) != HEADER_USED or head[:8] != MAGIC:
            return
        (crc,) = CRC.unpack_from(head, HEADER.size)
        if crc != zlib.crc32(head[: HEADER.size]):
            return
        f = list(HEADER.unpack_from(head))
        f[13] |= FLAG_SUPERSEDED
        body = HEADER.pack(*f)
        os.pwrite(fd, body + CRC.pack(zlib.crc32(body)), 0)
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


def remove_stale_temps(path: str) -> None:
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
