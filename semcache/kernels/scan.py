"""The shared part of every Hamming scan: which rows qualify, top-k selection, tie rule.

A kernel (:mod:`semcache.kernels.hamming`) only computes exact distances for a range of
rows; everything here is common to both kernels, so they return identical results:

* :func:`topk` with ``half_cut`` (the hot path, the caller knows its cosine threshold): rows
  whose distance on the first 128 bits exceeds ``half_cut`` (or whose full distance exceeds
  ``full_cut``) cannot reach the threshold and are skipped; only the few survivors are
  filtered and read in full.
* :func:`topk` without it: exact top-k over every valid row. Chunks whose minimum distance
  is not below the current k-th are skipped with one ``min``; a filtered row never takes a
  slot, so it can never hide a valid one.

Ties are broken by ascending row (rows are in entry id order: the older entry first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from semcache.errors import InvalidInputError
from semcache.kernels.hamming import HALF_BYTES, Kernel, Workspace, active_kernel

__all__ = ["KEY_SHIFT", "ROW_MASK", "Filter", "topk", "topk_keys"]

_NO_THRESHOLD = 1 << 30  # "fewer than k rows held yet"
_SENTINEL = 0xFFFF  # distance given to filtered rows; real ones are <= 256
_MAX_DIST = 256
_min = np.minimum.reduce  # skips the ndarray.min() Python wrapper (called once per chunk)
# Cut-offs tried above a chunk's minimum by _lowest_rows (random 256-bit codes have a
# standard deviation of 8 bits, so k <= ~100 is usually reached within the first three).
_CUT_WIDTHS = (3, 6, 10, 16, 32, 64, _MAX_DIST)
# Candidates are merged as int keys ``distance << 40 | row``: sorting them orders by distance
# then row (the tie rule), and they are unique. Rows must be < 2**40.
KEY_SHIFT = 40
ROW_MASK = (1 << KEY_SHIFT) - 1
# Up to this many candidates, merging in plain Python beats a dozen small numpy calls.
_PY_MERGE_MAX = 64


def _merge(best: list[int], rows: np.ndarray, dist: np.ndarray, k: int) -> list[int]:
    """Merge candidates (global ``rows`` with their ``dist``) into the held, sorted keys."""
    if rows.shape[0] <= _PY_MERGE_MAX:
        shift = KEY_SHIFT
        new = [(d << shift) | r for d, r in zip(dist.tolist(), rows.tolist(), strict=True)]
        return sorted(best + new)[:k]
    keys = dist.astype(np.int64)
    np.left_shift(keys, KEY_SHIFT, out=keys)
    np.bitwise_or(keys, rows, out=keys)
    if best:
        keys = np.concatenate((np.array(best, dtype=np.int64), keys))
    if keys.shape[0] > k:
        keys = np.partition(keys, k - 1)[:k]
    keys.sort()
    return keys.tolist()


class Filter:
    """Partition / liveness / expiry predicate, evaluated on a chunk or on a few rows.

    ``partitions`` (int32): a negative value is a dead row, excluded whenever the column is
    given; with ``partition`` only rows of that partition. ``expires`` (uint32) with
    ``now_u32``: only rows with ``expires > now_u32``.
    """

    def __init__(self, partition: int | None, partitions: np.ndarray | None,
                 expires: np.ndarray | None, now_u32: int | None) -> None:
        # Plain ints: numpy compares them with the int32 / uint32 columns as those types
        # (a partition id outside int32 matches no row; the mirror clamps now_u32); no
        # numpy scalars built per search.
        self.partitions = partitions
        self.part_val = int(partition) if partition is not None else None
        self.expires = expires if now_u32 is not None else None
        self.now_val = int(now_u32) if now_u32 is not None else 0
        self.active = self.partitions is not None or self.expires is not None

    def valid(self, out: np.ndarray, tmp: np.ndarray, start: int, end: int) -> None:
        """Write the validity of rows [start, end) into ``out`` (``tmp``: same-size scratch)."""
        if self.partitions is not None:
            if self.part_val is not None:
                np.equal(self.partitions[start:end], self.part_val, out=out)
            else:
                np.greater_equal(self.partitions[start:end], 0, out=out)
            if self.expires is not None:
                np.greater(self.expires[start:end], self.now_val, out=tmp)
                np.logical_and(out, tmp, out=out)
        else:
            assert self.expires is not None  # active without partitions: expiry only
            np.greater(self.expires[start:end], self.now_val, out=out)

    def row_ok(self, row: int) -> bool:
        """:meth:`keep` of one row, in Python (for a handful of rows: no array calls)."""
        parts = self.partitions
        if parts is not None:
            p = int(parts[row])
            if (p != self.part_val) if self.part_val is not None else (p < 0):
                return False
        return self.expires is None or int(self.expires[row]) > self.now_val

    def keep(self, rows: np.ndarray) -> np.ndarray:
        """Boolean mask: which of these (global) rows are valid."""
        ok: np.ndarray | None = None
        if self.partitions is not None:
            pc = self.partitions.take(rows)
            ok = (pc == self.part_val) if self.part_val is not None else (pc >= 0)
        if self.expires is not None:
            ok_exp = self.expires.take(rows) > self.now_val
            ok = ok_exp if ok is None else (ok & ok_exp)
        assert ok is not None  # only called when a filter is active
        return ok


def _lowest_rows(dist: np.ndarray, low: int, k: int, mask: np.ndarray) -> np.ndarray:
    """Positions of at least k rows with the lowest distances (all rows <= some cut-off)."""
    for width in _CUT_WIDTHS:
        cut = min(low + width, _MAX_DIST)
        np.less_equal(dist, cut, out=mask)
        if cut >= _MAX_DIST or np.count_nonzero(mask) >= k:
            break
    return mask.nonzero()[0]


def _flush(best: list[int], pend_rows: list[np.ndarray], pend_dist: list[np.ndarray],
           filt: Filter, k: int) -> list[int]:
    """Filter the parked candidates, merge them into ``best``; empties the parking lists."""
    rows = np.concatenate(pend_rows) if len(pend_rows) > 1 else pend_rows[0]
    dist = np.concatenate(pend_dist) if len(pend_dist) > 1 else pend_dist[0]
    pend_rows.clear()
    pend_dist.clear()
    if filt.active:
        ok = filt.keep(rows)
        rows, dist = rows[ok], dist[ok]
    return _merge(best, rows, dist, k) if rows.shape[0] else best


def _scan_all(kernel: Kernel, ws: Workspace, lo: np.ndarray, hi: np.ndarray, k: int,
              filt: Filter, n_rows: int) -> list[int]:
    """Keys of the exact top-k over every valid row of [0, n_rows), sorted."""
    best: list[int] = []  # held keys, sorted
    threshold = _NO_THRESHOLD  # k-th best distance once k valid rows are held
    pend_rows: list[np.ndarray] = []  # parked candidates (global rows), not yet filtered
    pend_dist: list[np.ndarray] = []
    pend_count = 0
    flush_at = 4 * k + 64
    step = ws.chunk_rows
    for start in range(0, n_rows, step):
        end = min(n_rows, start + step)
        n = end - start
        dist = kernel.full(ws, lo, hi, start, end)
        low = int(_min(dist))
        if low >= threshold:
            continue  # nothing in this chunk beats the k-th best (the common case)
        mask = ws.mask[:n]
        if threshold == _NO_THRESHOLD:
            # Fewer than k valid rows held yet (first chunk(s) only): select now.
            if filt.active:
                filt.valid(mask, ws.mask2[:n], start, end)
                np.logical_not(mask, out=mask)
                np.copyto(dist, _SENTINEL, where=mask)
                low = int(_min(dist))
                if low >= _SENTINEL:
                    continue
            cand = _lowest_rows(dist, low, k, mask)
            best = _merge(best, cand + start, dist[cand], k)
            if len(best) == k:
                threshold = best[-1] >> KEY_SHIFT
            continue
        # k valid rows held: candidates are the rows strictly below the k-th distance (rows
        # of later chunks lose ties to the earlier rows already held). They are parked and
        # filtered + merged in batches; a k-th distance a few chunks old is still a bound.
        np.less(dist, threshold, out=mask)
        cand = mask.nonzero()[0]
        if cand.shape[0] == 0:
            continue
        if filt.active and cand.shape[0] > (n >> 5):
            filt.valid(ws.mask2[:n], ws.mask3[:n], start, end)  # cheaper for many rows
            np.logical_and(mask, ws.mask2[:n], out=mask)
            cand = mask.nonzero()[0]
        pend_rows.append(cand + start)
        pend_dist.append(dist[cand].astype(np.int32))
        pend_count += cand.shape[0]
        if pend_count >= flush_at:
            best = _flush(best, pend_rows, pend_dist, filt, k)
            pend_count = 0
            if len(best) == k:
                threshold = best[-1] >> KEY_SHIFT
    if pend_rows:
        best = _flush(best, pend_rows, pend_dist, filt, k)
    return best


def _scan_pruned(kernel: Kernel, ws: Workspace, lo: np.ndarray, hi: np.ndarray, k: int,
                 half_cut: int, full_cut: int, filt: Filter, n_rows: int) -> list[int]:
    """Keys (see ``KEY_SHIFT``) of the top-k among valid rows with half distance <= half_cut
    and full <= full_cut, sorted.

    Per chunk only the half distances and the rows within the cut; the survivors of all
    chunks (a few per 10k rows) get their full distance once, after the scan
    (``Kernel.rows_full``), and those within ``full_cut`` (usually one or two) are filtered
    and ordered in Python.
    """
    step = ws.chunk_rows
    if n_rows <= step:  # one chunk (up to 128k rows with faiss): no list, no concatenation
        mask = ws.mask[:n_rows]
        np.less_equal(kernel.half(ws, lo, 0, 0, n_rows), half_cut, out=mask)
        rows = mask.nonzero()[0]
    else:
        found: list[np.ndarray] = []
        for start in range(0, n_rows, step):
            end = min(n_rows, start + step)
            mask = ws.mask[: end - start]
            np.less_equal(kernel.half(ws, lo, 0, start, end), half_cut, out=mask)
            local = mask.nonzero()[0]
            if local.shape[0]:
                local += start
                found.append(local)
        if not found:
            return []
        rows = np.concatenate(found) if len(found) > 1 else found[0]
    if not rows.shape[0]:
        return []
    # Full distances of the survivors, from both halves (the half one is recomputed: two
    # popcounts per row are cheaper than carrying it through the chunks).
    dist = kernel.rows_full(ws, lo, hi, rows)
    if full_cut < _MAX_DIST:
        near = (dist <= full_cut).nonzero()[0]
        if near.shape[0] < rows.shape[0]:
            rows, dist = rows.take(near), dist.take(near)
    # The filter last: it then reads only the rows within both cuts (usually one or two).
    if rows.shape[0] <= _PY_MERGE_MAX:
        shift = KEY_SHIFT
        pairs = zip(dist.tolist(), rows.tolist(), strict=True)
        if filt.active:
            ok = filt.row_ok
            return sorted([(d << shift) | r for d, r in pairs if ok(r)])[:k]
        return sorted([(d << shift) | r for d, r in pairs])[:k]
    if filt.active:
        keep = filt.keep(rows)
        rows, dist = rows[keep], dist[keep]
    keys = (dist.astype(np.int64) << KEY_SHIFT) | rows
    if keys.shape[0] > k:
        keys = np.partition(keys, k - 1)[:k]
    keys.sort()
    return keys.tolist()


def _check_block(name: str, arr: np.ndarray, count: int) -> None:
    if (arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != HALF_BYTES
            or arr.shape[0] < count or not arr.flags.c_contiguous):
        raise InvalidInputError(
            f"{name} must be a C-contiguous (rows, 16) uint8 array of at least {count} rows, "
            f"got {arr.dtype} {arr.shape}")


def _check_column(name: str, arr: np.ndarray, count: int, dtype: type) -> None:
    if arr.dtype != dtype or arr.ndim != 1 or arr.shape[0] < count:
        raise InvalidInputError(
            f"{name} must be a 1-D {np.dtype(dtype).name} array of at least {count} rows, "
            f"got {arr.dtype} {arr.shape}")


def _check_args(lo: np.ndarray, hi: np.ndarray, n_rows: int, partition: int | None,
                partitions: np.ndarray | None, expires: np.ndarray | None,
                now_u32: int | None) -> None:
    _check_block("lo", lo, n_rows)
    _check_block("hi", hi, n_rows)
    if partition is not None:
        if partitions is None:
            raise InvalidInputError("partition given without the partitions column")
        if not 0 <= partition <= np.iinfo(np.int32).max:
            raise InvalidInputError(f"partition must be an int32 >= 0, got {partition}")
    if partitions is not None:
        _check_column("partitions", partitions, n_rows, np.int32)
    if expires is not None:
        _check_column("expires", expires, n_rows, np.uint32)
        if now_u32 is None or not 0 <= now_u32 <= 0xFFFFFFFF:
            raise InvalidInputError(f"now_u32 must be a uint32 with expires, got {now_u32}")


def topk(lo: np.ndarray, hi: np.ndarray, query: np.ndarray, k: int,
         **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk_keys` as arrays: ``(rows int64, distances int32)`` by ascending
    distance, ties by ascending row (``options``: those of :func:`topk_keys`)."""
    keys = np.array(topk_keys(lo, hi, query, k, **options), dtype=np.int64)
    return keys & ROW_MASK, (keys >> KEY_SHIFT).astype(np.int32)


def topk_keys(
    lo: np.ndarray,
    hi: np.ndarray,
    query: np.ndarray,
    k: int,
    *,
    half_cut: int | None = None,
    full_cut: int = _MAX_DIST,
    partition: int | None = None,
    partitions: np.ndarray | None = None,
    expires: np.ndarray | None = None,
    now_u32: int | None = None,
    count: int | None = None,
    kernel: Kernel | None = None,
    workspace: Workspace | None = None,
    check: bool = True,
) -> list[int]:
    """Top-k rows of ``[0, count)`` by Hamming distance to ``query`` (32 uint8), as a
    sorted list of int keys ``distance << KEY_SHIFT | row`` (row = ``key & ROW_MASK``):
    what the mirror's search reads, without building arrays for the handful of rows it
    returns (:func:`topk` gives arrays).

    Args:
        lo, hi: the two (rows, 16) uint8 halves of the codes (see the module docstring).
        k: rows wanted (fewer when fewer rows qualify).
        half_cut: when given, only rows whose distance on bytes 0-15 is <= half_cut and
            whose full distance is <= ``full_cut`` (see :func:`half_distance_cut`).
        partition, partitions, expires, now_u32: the row filter (see :class:`Filter`).
        count: rows to scan (default: all rows of ``lo``).
        kernel: the distance kernel (default: :func:`active_kernel`).
        workspace: scratch buffers of this kernel's chunk size (one per thread).
        check: validate the arguments (the mirror, which built them, skips it).

    Ties are ordered by ascending row.
    """
    n_rows = lo.shape[0] if count is None else int(count)
    q = np.ascontiguousarray(query, dtype=np.uint8).reshape(-1)
    if check:
        if q.shape[0] != 2 * HALF_BYTES:
            raise InvalidInputError(f"query must hold 32 bytes, got shape {q.shape}")
        _check_args(lo, hi, n_rows, partition, partitions, expires, now_u32)
    if expires is None:
        now_u32 = None
    if k <= 0 or n_rows <= 0:
        return []
    kern: Kernel = kernel if kernel is not None else active_kernel()
    ws = workspace if workspace is not None else Workspace(kern.chunk_rows)
    kern.prepare(ws, q)
    filt = Filter(partition, partitions, expires, now_u32)
    if half_cut is None:
        return _scan_all(kern, ws, lo, hi, k, filt, n_rows)
    return _scan_pruned(kern, ws, lo, hi, k, min(max(int(half_cut), 0), 128), int(full_cut),
                        filt, n_rows)
