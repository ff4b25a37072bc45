"""The hot scan: exact top-k Hamming search over 256-bit codes stored as 4 uint64 columns.

Design (numpy only, measured on a 2-core VM):

* The rows are scanned in chunks of ``Workspace.chunk_rows`` rows. Every intermediate lives
  in a chunk-sized buffer of the :class:`Workspace` and every ufunc writes with ``out=``, so
  a query allocates nothing proportional to the number of rows and the working set stays in
  L2 cache.
* Per chunk: 4 xors, 4 ``np.bitwise_count`` into uint8, 3 uint8 adds. Two words give at most
  128 so the pair sums are exact in uint8; their sum only wraps for a distance of exactly 256
  (the bitwise complement of the query), which maps to 0. A chunk whose minimum is 0 is
  therefore recomputed exactly in uint16 (it only happens for an exact duplicate or an exact
  complement of the query, so it costs nothing in practice).
* Once k valid rows are held, a chunk whose minimum is not below the current k-th distance
  is skipped with a single ``min()``; otherwise only rows strictly below the k-th distance
  become candidates (rows of later chunks lose ties to the earlier rows already held).
* Filters (partition, expiry): before k valid rows are held, the chunk's validity mask is
  computed in full; afterwards the few candidates below the k-th distance are parked and
  filtered + merged in batches (a k-th distance a few chunks old is still a valid bound).
  Either way a filtered row never takes a slot, so it can never hide a valid one.

A :class:`Workspace` is not thread-safe: use one per thread (and per mirror if convenient).
"""

from __future__ import annotations

import math

import numpy as np

from semcache.errors import InvalidInputError

__all__ = ["DEFAULT_CHUNK_ROWS", "Workspace", "hamming_naive", "hamming_topk"]

# 16k rows: the chunk's column slices (4 x 128 KiB) plus buffers stay well inside a 2 MiB L2;
# measured 8k..32k within noise of each other, 4k pays too much per-call overhead.
DEFAULT_CHUNK_ROWS = 16384

_U8_MAX = 255
_NO_THRESHOLD = 1 << 30  # "fewer than k rows held yet"
_SENTINEL = 0xFFFF  # uint16 distance given to filtered rows; real ones are <= 256
_MAX_DIST = 256
_min = np.minimum.reduce  # skips the ndarray.min() Python wrapper (called once per chunk)
# Cut-offs tried above a chunk's minimum by _lowest_rows (random 256-bit codes have a
# standard deviation of 8 bits, so k <= ~100 is usually reached within the first three).
_CUT_WIDTHS = (3, 6, 10, 16, 32, 64, _MAX_DIST)


class Workspace:
    """Reusable chunk-sized scratch buffers for :func:`hamming_topk`.

    Create one per thread (the buffers are overwritten by every call); it costs about
    ``16 * chunk_rows`` bytes.
    """

    def __init__(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        if chunk_rows < 64:
            raise InvalidInputError(f"chunk_rows must be >= 64, got {chunk_rows}")
        self.chunk_rows = int(chunk_rows)
        c = self.chunk_rows
        self.xor = np.empty(c, dtype=np.uint64)
        self.pc_a = np.empty(c, dtype=np.uint8)
        self.pc_b = np.empty(c, dtype=np.uint8)
        self.dist8 = np.empty(c, dtype=np.uint8)
        self.dist16 = np.empty(c, dtype=np.uint16)
        self.mask = np.empty(c, dtype=np.bool_)
        self.mask2 = np.empty(c, dtype=np.bool_)
        self.mask3 = np.empty(c, dtype=np.bool_)


def hamming_naive(codes_u8: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Reference Hamming distances of (n, nbytes) uint8 codes to a (nbytes,) code, as int32."""
    codes = np.asarray(codes_u8, dtype=np.uint8)
    query = np.asarray(q, dtype=np.uint8)
    return np.bitwise_count(codes ^ query).sum(axis=-1, dtype=np.int32)


# Candidates are merged as int keys ``distance << 40 | row``: sorting them orders by distance
# then row (the tie rule), and they are unique. Rows must be < 2**40.
_KEY_SHIFT = 40
_ROW_MASK = (1 << _KEY_SHIFT) - 1
# Up to this many candidates, merging in plain Python beats a dozen small numpy calls.
_PY_MERGE_MAX = 64


def _merge(best: list[int], rows: np.ndarray, dist: np.ndarray, k: int) -> list[int]:
    """Merge candidates (global ``rows`` with their ``dist``) into the held, sorted keys."""
    if rows.shape[0] <= _PY_MERGE_MAX:
        shift = _KEY_SHIFT
        new = [(d << shift) | r for d, r in zip(dist.tolist(), rows.tolist(), strict=True)]
        return sorted(best + new)[:k]
    keys = dist.astype(np.int64)
    np.left_shift(keys, _KEY_SHIFT, out=keys)
    np.bitwise_or(keys, rows, out=keys)
    if best:
        keys = np.concatenate((np.array(best, dtype=np.int64), keys))
    if keys.shape[0] > k:
        keys = np.partition(keys, k - 1)[:k]
    keys.sort()
    return keys.tolist()


class _Filter:
    """Partition / liveness / expiry predicate, evaluated on a chunk or on a few rows."""

    def __init__(
        self,
        partition: int | None,
        partitions: np.ndarray | None,
        expires: np.ndarray | None,
        now_u32: int | None,
    ) -> None:
        self.partitions = partitions
        self.part_val = np.int32(partition) if partition is not None else None
        self.expires = expires if now_u32 is not None else None
        self.now_val = np.uint32(now_u32) if now_u32 is not None else None
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
            np.greater(self.expires[start:end], self.now_val, out=out)

    def keep(self, rows: np.ndarray) -> np.ndarray:
        """Boolean mask: which of these (global) rows are valid."""
        ok: np.ndarray | None = None
        if self.partitions is not None:
            pc = self.partitions[rows]
            ok = (pc == self.part_val) if self.part_val is not None else (pc >= 0)
        if self.expires is not None:
            ok_exp = self.expires[rows] > self.now_val
            ok = ok_exp if ok is None else (ok & ok_exp)
        assert ok is not None  # only called when a filter is active
        return ok


def _flush(
    best: list[int],
    pend_rows: list[np.ndarray],
    pend_dist: list[np.ndarray],
    filt: _Filter,
    k: int,
) -> list[int]:
    """Filter the parked candidates, merge them into ``best``; empties the parking lists."""
    rows = np.concatenate(pend_rows) if len(pend_rows) > 1 else pend_rows[0]
    dist = np.concatenate(pend_dist) if len(pend_dist) > 1 else pend_dist[0]
    pend_rows.clear()
    pend_dist.clear()
    if filt.active:
        ok = filt.keep(rows)
        rows, dist = rows[ok], dist[ok]
    return _merge(best, rows, dist, k) if rows.shape[0] else best


def _lowest_rows(dist: np.ndarray, low: int, k: int, mask: np.ndarray) -> np.ndarray:
    """Positions of at least k rows with the lowest distances (all rows <= some cut-off).

    Widens the cut-off from the chunk minimum until it holds k rows: a few cheap passes over
    the chunk instead of a full ``np.partition``, and few surplus candidates to merge.
    """
    for width in _CUT_WIDTHS:
        cut = min(low + width, _MAX_DIST)
        np.less_equal(dist, cut, out=mask)
        if cut >= _MAX_DIST or np.count_nonzero(mask) >= k:
            break
    return mask.nonzero()[0]


def _pair_distance(wa: np.ndarray, wb: np.ndarray, qa: np.uint64, qb: np.uint64,
                   x: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """Hamming distance on two code words into ``out`` (uint8: <= 128, exact)."""
    np.bitwise_xor(wa, qa, out=x)
    np.bitwise_count(x, out=out)
    np.bitwise_xor(wb, qb, out=x)
    np.bitwise_count(x, out=tmp)
    np.add(out, tmp, out=out)


def _check_column(name: str, arr: np.ndarray, count: int, dtype: type) -> None:
    if arr.dtype != dtype or arr.ndim != 1 or arr.shape[0] < count:
        raise InvalidInputError(
            f"{name} must be a 1-D {np.dtype(dtype).name} array of at least {count} rows, "
            f"got {arr.dtype} {arr.shape}"
        )


def hamming_topk(
    w0: np.ndarray,
    w1: np.ndarray,
    w2: np.ndarray,
    w3: np.ndarray,
    query_words: np.ndarray,
    k: int,
    *,
    partition: int | None = None,
    partitions: np.ndarray | None = None,
    expires: np.ndarray | None = None,
    now_u32: int | None = None,
    count: int | None = None,
    workspace: Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by Hamming distance to ``query_words`` among rows ``[0, count)``.

    Args:
        w0..w3: uint64 columns holding word 0..3 of each row's code (same length).
        query_words: (4,) uint64 query code words.
        k: number of rows wanted (fewer are returned if fewer rows are valid).
        partition: when given (>= 0), only rows with ``partitions[row] == partition``.
        partitions: int32 column; rows with a negative value are dead and are always
            excluded when this column is given (also with ``partition=None``).
        expires: uint32 column; when given with ``now_u32``, only rows with
            ``expires[row] > now_u32``.
        count: number of rows to scan (default: ``len(w0)``).
        workspace: reusable scratch buffers (one per thread); a fresh one if omitted.

    Returns:
        ``(idx int64, dist int32)`` sorted by ascending distance, ties by ascending index.
    """
    n_rows = w0.shape[0] if count is None else int(count)
    for name, col in (("w0", w0), ("w1", w1), ("w2", w2), ("w3", w3)):
        _check_column(name, col, n_rows, np.uint64)
    qw = np.asarray(query_words, dtype=np.uint64).reshape(-1)
    if qw.shape[0] != 4:
        raise InvalidInputError(f"query_words must hold 4 uint64 words, got shape {qw.shape}")
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
    else:
        now_u32 = None
    if k <= 0 or n_rows <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
    best: list[int] = []  # held keys, sorted

    ws = workspace if workspace is not None else Workspace()
    q0, q1, q2, q3 = (np.uint64(x) for x in qw)
    filt = _Filter(partition, partitions, expires, now_u32)
    threshold = _NO_THRESHOLD  # k-th best distance once k valid rows are held
    step = ws.chunk_rows
    pend_rows: list[np.ndarray] = []  # parked candidates (global rows), not yet filtered
    pend_dist: list[np.ndarray] = []
    pend_count = 0
    flush_at = 4 * k + 64

    for start in range(0, n_rows, step):
        end = min(n_rows, start + step)
        n = end - start
        x, pa, pb, d8 = ws.xor[:n], ws.pc_a[:n], ws.pc_b[:n], ws.dist8[:n]
        _pair_distance(w0[start:end], w1[start:end], q0, q1, x, pa, pb)
        np.bitwise_xor(w2[start:end], q2, out=x)
        np.bitwise_count(x, out=pb)
        np.bitwise_xor(w3[start:end], q3, out=x)
        np.bitwise_count(x, out=d8)
        np.add(pb, d8, out=pb)  # <= 128: exact in uint8
        np.add(pa, pb, out=d8)  # wraps only for distance 256 -> 0
        low = int(_min(d8))
        if low >= threshold:
            continue  # nothing in this chunk beats the k-th best (the common case)
        dist: np.ndarray = d8
        if low == 0 or (filt.active and threshold == _NO_THRESHOLD):
            # Exact uint16 distances: a 0 may be a wrapped 256, and the sentinel for
            # filtered rows must lie above every real distance.
            dist = ws.dist16[:n]
            np.add(pa, pb, out=dist, dtype=np.uint16)
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
                threshold = best[-1] >> _KEY_SHIFT
            continue

        # k valid rows held: candidates are the rows strictly below the k-th distance
        # (usually a handful). They are parked and filtered + merged in batches, which saves
        # a dozen small numpy calls per chunk; a k-th distance a few chunks old is still a
        # valid bound, it just lets a few more candidates through.
        if dist is d8 and threshold > _U8_MAX:
            mask.fill(True)
        else:
            np.less(dist, threshold, out=mask)
        cand = mask.nonzero()[0]
        if cand.shape[0] == 0:
            continue
        if filt.active and cand.shape[0] > (n >> 5):
            # Many rows below the k-th: filtering the whole chunk is cheaper.
            filt.valid(ws.mask2[:n], ws.mask3[:n], start, end)
            np.logical_and(mask, ws.mask2[:n], out=mask)
            cand = mask.nonzero()[0]
        pend_rows.append(cand + start)
        pend_dist.append(dist[cand])
        pend_count += cand.shape[0]
        if pend_count >= flush_at:
            best = _flush(best, pend_rows, pend_dist, filt, k)
            pend_count = 0
            if len(best) == k:
                threshold = best[-1] >> _KEY_SHIFT
    if pend_rows:
        best = _flush(best, pend_rows, pend_dist, filt, k)
    keys = np.array(best, dtype=np.int64)
    return keys & _ROW_MASK, (keys >> _KEY_SHIFT).astype(np.int32)


# -- pruned scan: only rows that can still reach a cosine threshold ---------------------

#: Standard deviations of margin in :func:`half_distance_cut` (the chance that a code of a
#: vector at the threshold cosine exceeds the cut on 128 bits is below ~1e-10).
_CUT_SIGMAS = 7.5
#: Above this cut on 128 bits, too many random rows survive for pruning to pay (random
#: codes average 64 differing bits on 128, sd 5.7).
MAX_USEFUL_HALF_CUT = 52


def half_distance_cut(min_cosine: float, bits: int = 128) -> int:
    """Largest Hamming distance on ``bits`` bits (the first 128 by default) that a vector
    at ``min_cosine`` (or closer) can be expected to show, with a 7.5-sigma margin.

    For Gaussian random hyperplanes each bit differs with probability angle / pi
    (Charikar's SimHash), independently per bit, so the distance on 128 bits is
    Binomial(128, acos(min_cosine) / pi).
    """
    p = math.acos(min(max(min_cosine, -1.0), 1.0)) / math.pi
    mean, sd = bits * p, math.sqrt(bits * p * (1 - p))
    return min(bits, math.ceil(mean + _CUT_SIGMAS * sd))


def hamming_topk_pruned(
    w0: np.ndarray,
    w1: np.ndarray,
    w2: np.ndarray,
    w3: np.ndarray,
    query_words: np.ndarray,
    k: int,
    half_cut: int,
    *,
    full_cut: int = 256,
    partition: int | None = None,
    partitions: np.ndarray | None = None,
    expires: np.ndarray | None = None,
    now_u32: int | None = None,
    count: int | None = None,
    workspace: Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`hamming_topk`, restricted to rows whose distance on words 0-1 is at most
    ``half_cut`` and whose full distance is at most ``full_cut`` (see
    :func:`half_distance_cut`).

    Half the popcounts of the full scan: words 2-3 are only read for the few rows that
    pass words 0-1. Rows that cannot reach the caller's cosine threshold are never
    candidates anyway, so the top-k of what can still be a hit is unchanged (up to the
    cut's ~1e-10 tail).
    """
    n_rows = w0.shape[0] if count is None else int(count)
    qw = np.asarray(query_words, dtype=np.uint64).reshape(-1)
    if qw.shape[0] != 4:
        raise InvalidInputError(f"query_words must hold 4 uint64 words, got shape {qw.shape}")
    if k <= 0 or n_rows <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
    ws = workspace if workspace is not None else Workspace()
    q0, q1, q2, q3 = (np.uint64(x) for x in qw)
    filt = _Filter(partition, partitions, expires, now_u32)
    cut = np.uint8(min(max(half_cut, 0), 128))
    found_rows: list[np.ndarray] = []
    found_dist: list[np.ndarray] = []
    step = ws.chunk_rows
    for start in range(0, n_rows, step):
        end = min(n_rows, start + step)
        n = end - start
        x, pa, pb, mask = ws.xor[:n], ws.pc_a[:n], ws.pc_b[:n], ws.mask[:n]
        _pair_distance(w0[start:end], w1[start:end], q0, q1, x, pa, pb)
        np.less_equal(pa, cut, out=mask)
        local = mask.nonzero()[0]
        if local.shape[0] == 0:
            continue
        rows = local + start
        if filt.active:
            ok = filt.keep(rows)
            rows, local = rows[ok], local[ok]
            if rows.shape[0] == 0:
                continue
        dist = pa[local].astype(np.int32)
        dist += np.bitwise_count(w2[rows] ^ q2)
        dist += np.bitwise_count(w3[rows] ^ q3)
        if full_cut < 256:
            near = dist <= full_cut
            rows, dist = rows[near], dist[near]
        found_rows.append(rows)
        found_dist.append(dist)
    if not found_rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
    rows = np.concatenate(found_rows)
    dist = np.concatenate(found_dist)
    keys = (dist.astype(np.int64) << _KEY_SHIFT) | rows
    if keys.shape[0] > k:
        keys = np.partition(keys, k - 1)[:k]
    keys.sort()
    return keys & ((1 << _KEY_SHIFT) - 1), (keys >> _KEY_SHIFT).astype(np.int32)
