"""Hamming distance kernels over 256-bit codes: a portable one and a compiled one.

Layout. A code is stored as two row-major halves, each a C-contiguous ``(rows, 16)`` uint8
block: ``lo`` holds bytes 0-15 (code words 0-1), ``hi`` bytes 16-31 (words 2-3). Both kernels
read exactly this layout, so one mirror file serves both:

* :class:`NumpyKernel` (portable, numpy only): per chunk of rows and code word, one xor
  (through a strided view of the half block), one ``np.bitwise_count`` into uint8, one
  uint8 add (a half distance is at most 128: exact). Every buffer is chunk-sized and
  reused: a query allocates nothing proportional to the number of rows.
* :class:`FaissKernel` (compiled): ``faiss.hammings`` over the same bytes, zero-copy, in the
  calling thread, when faiss-cpu is installed (``pip install 'semcache-sqlite[fast]'``).

A kernel only computes exact distances for a range of rows; which rows qualify, the
threshold cut, the top-k selection and its tie rule are shared (:mod:`semcache.kernels.scan`),
so both kernels return identical results.

Which kernel a process uses (``SEMCACHE_KERNEL`` = ``auto`` | ``numpy`` | ``faiss``): with
``auto`` numpy until the process has spent as much time scanning as importing faiss costs
(~35-50 ms), then faiss if installed - a short-lived process or a small cache never pays
the import, a busy one pays it once. A :class:`Workspace` is not thread-safe: one per thread.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import threading
from types import ModuleType
from typing import Protocol

import numpy as np

from semcache.errors import InvalidInputError

__all__ = [
    "FaissKernel",
    "Kernel",
    "NumpyKernel",
    "Workspace",
    "active_kernel",
    "half_distance_cut",
    "hamming_naive",
    "note_scan_time",
    "preload_kernel",
]

log = logging.getLogger("semcache")

HALF_BYTES = 16
# numpy: 16k rows keep a chunk's buffers (~0.6 MiB) in a 2 MiB L2; 8k..32k measure alike.
DEFAULT_CHUNK_ROWS = 16384
# faiss: its loop has no per-chunk buffers of its own; bigger chunks mean fewer Python calls
# (100k rows in one call: 6 us less per search than two 64k chunks, measured; 32k: 6 us more).
FAISS_CHUNK_ROWS = 131072


class Workspace:
    """Reusable chunk-sized scratch buffers of one kernel (create one per thread)."""

    def __init__(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        if chunk_rows < 64:
            raise InvalidInputError(f"chunk_rows must be >= 64, got {chunk_rows}")
        c = self.chunk_rows = int(chunk_rows)
        self.words = np.empty(c, dtype=np.uint64)  # xor of one code word (numpy)
        self.count_a = np.empty(c, dtype=np.uint8)  # popcounts (numpy)
        self.count_b = np.empty(c, dtype=np.uint8)
        self.count_c = np.empty(c, dtype=np.uint8)
        self.dist16 = np.empty(c, dtype=np.uint16)  # full distances (numpy)
        self.dist_a = np.empty(c, dtype=np.int32)  # faiss output
        self.dist_b = np.empty(c, dtype=np.int32)
        self.mask = np.empty(c, dtype=np.bool_)
        self.mask2 = np.empty(c, dtype=np.bool_)
        self.mask3 = np.empty(c, dtype=np.bool_)
        self.query_words: np.ndarray | None = None  # (4,) uint64 (numpy)
        self.query_halves: tuple[np.ndarray, np.ndarray] | None = None  # (faiss)


class Kernel(Protocol):
    """Exact distances of a range of rows; both halves are (rows, 16) uint8 blocks."""

    name: str
    chunk_rows: int

    def prepare(self, ws: Workspace, query: np.ndarray) -> None:
        """Per-query setup (``query``: 32 uint8)."""

    def half(self, ws: Workspace, block: np.ndarray, which: int, start: int,
             end: int, out: np.ndarray | None = None) -> np.ndarray:
        """Exact distances on one half (``which`` 0 = lo, 1 = hi) of rows [start, end),
        in a workspace buffer (``out``: another one)."""

    def full(self, ws: Workspace, lo: np.ndarray, hi: np.ndarray, start: int,
             end: int) -> np.ndarray:
        """Exact full distances of rows [start, end), in a writable workspace buffer."""

    def rows_full(self, ws: Workspace, lo: np.ndarray, hi: np.ndarray,
                  rows: np.ndarray) -> np.ndarray:
        """Exact full distances (int32) of the given rows (a few: the pruned scan's
        survivors), valid until the workspace's next use."""


class NumpyKernel:
    """The portable kernel: ``np.bitwise_count`` over chunk-sized buffers, no allocation.

    A half block viewed as uint64 words interleaves the two words of each row; each word is
    xor-ed through a strided view (stride 16 bytes) into a contiguous buffer - cheaper than
    repeating the query words over a chunk for one contiguous xor.
    """

    name = "numpy"
    chunk_rows = DEFAULT_CHUNK_ROWS

    def prepare(self, ws: Workspace, query: np.ndarray) -> None:
        ws.query_words = np.ascontiguousarray(query, dtype=np.uint8).view(np.uint64).copy()

    def half(self, ws: Workspace, block: np.ndarray, which: int, start: int,
             end: int, out: np.ndarray | None = None) -> np.ndarray:
        n = end - start
        q = ws.query_words
        assert q is not None
        words = block.reshape(-1).view(np.uint64)  # (rows * 2,), no copy
        x, tmp = ws.words[:n], ws.count_b[:n]
        res = (ws.count_a if out is None else out)[:n]
        np.bitwise_xor(words[2 * start : 2 * end : 2], q[2 * which], out=x)
        np.bitwise_count(x, out=res)
        np.bitwise_xor(words[2 * start + 1 : 2 * end : 2], q[2 * which + 1], out=x)
        np.bitwise_count(x, out=tmp)
        np.add(res, tmp, out=res)  # <= 128: exact in uint8
        return res

    def full(self, ws: Workspace, lo: np.ndarray, hi: np.ndarray, start: int,
             end: int) -> np.ndarray:
        a = self.half(ws, lo, 0, start, end)
        b = self.half(ws, hi, 1, start, end, out=ws.count_c)
        res = ws.dist16[: end - start]
        np.add(a, b, out=res, dtype=np.uint16)  # <= 256: exact in uint16
        return res

    def rows_full(self, ws: Workspace, lo: np.ndarray, hi: np.ndarray,
                  rows: np.ndarray) -> np.ndarray:
        q = ws.query_words
        assert q is not None
        x = lo.view(np.uint64).take(rows, axis=0)  # (rows, 2) words: take, in-place xor
        np.bitwise_xor(x, q[:2], out=x)
        y = hi.view(np.uint64).take(rows, axis=0)
        np.bitwise_xor(y, q[2:], out=y)
        counts = np.bitwise_count(x)
        counts += np.bitwise_count(y)  # <= 128 per column: exact in uint8
        return np.add(counts[:, 0], counts[:, 1], dtype=np.int32)


class FaissKernel:
    """The compiled kernel: ``faiss.hammings`` zero-copy over the mirror's bytes."""

    name = "faiss"
    chunk_rows = FAISS_CHUNK_ROWS

    def __init__(self, faiss: ModuleType) -> None:
        # The compiled functions themselves when the wheel exposes them: faiss.hammings and
        # faiss.swig_ptr are Python wrappers that only forward (a frame each, per chunk).
        # Wheels that load another module (faiss-cpu 1.8-1.9: swigfaiss_avx2) keep the
        # wrappers: the same results, a microsecond slower.
        compiled = getattr(faiss, "_swigfaiss", None)
        self._hammings = getattr(compiled, "hammings", faiss.hammings)
        self._ptr = getattr(compiled, "swig_ptr", faiss.swig_ptr)

    def prepare(self, ws: Workspace, query: np.ndarray) -> None:
        q = np.ascontiguousarray(query, dtype=np.uint8).reshape(-1)
        ws.query_halves = (q[:HALF_BYTES], q[HALF_BYTES:])  # slices of it: contiguous too

    def half(self, ws: Workspace, block: np.ndarray, which: int, start: int,
             end: int, out: np.ndarray | None = None) -> np.ndarray:
        assert ws.query_halves is not None
        res = (ws.dist_a if out is None else out)[: end - start]
        ptr = self._ptr
        self._hammings(ptr(ws.query_halves[which]), ptr(block[start:end]), 1, end - start,
                       HALF_BYTES, ptr(res))
        return res

    def full(self, ws: Workspace, lo: np.ndarray, hi: np.ndarray, start: int,
             end: int) -> np.ndarray:
        a = self.half(ws, lo, 0, start, end)
        b = self.half(ws, hi, 1, start, end, out=ws.dist_b)
        np.add(a, b, out=a)
        return a

    def rows_full(self, ws: Workspace, lo: np.ndarray, hi: np.ndarray,
                  rows: np.ndarray) -> np.ndarray:
        # The rows gathered into two small contiguous blocks, then faiss on each: a third of
        # the time of the numpy ops (their broadcast xor costs more than the popcounts).
        m = rows.shape[0]
        big = m > ws.chunk_rows  # more survivors than a chunk: its own buffers
        a = np.empty(m, dtype=np.int32) if big else ws.dist_a[:m]
        b = np.empty(m, dtype=np.int32) if big else ws.dist_b[:m]
        assert ws.query_halves is not None
        ptr, hammings = self._ptr, self._hammings
        # Named: a pointer does not keep its array alive.
        lo_rows, hi_rows = lo.take(rows, axis=0), hi.take(rows, axis=0)
        hammings(ptr(ws.query_halves[0]), ptr(lo_rows), 1, m, HALF_BYTES, ptr(a))
        hammings(ptr(ws.query_halves[1]), ptr(hi_rows), 1, m, HALF_BYTES, ptr(b))
        np.add(a, b, out=a)
        return a


# -- kernel selection ---------------------------------------------------------------------

NUMPY = NumpyKernel()
#: numpy scanning time (s) after which ``auto`` loads faiss (its import costs ~35 ms): a
#: process never pays the import unless its scans would already have cost that much.
IMPORT_AFTER_SCAN_S = 0.05


class _Selection:
    """Which kernel this process uses (``SEMCACHE_KERNEL``: auto, numpy or faiss)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kernel: NumpyKernel | FaissKernel = NUMPY
        self.scanned_s = 0.0
        mode = os.environ.get("SEMCACHE_KERNEL", "auto").strip().lower() or "auto"
        if mode not in ("auto", "numpy", "faiss"):
            log.warning("semcache: SEMCACHE_KERNEL=%r is not auto, numpy or faiss; using auto",
                        mode)
            mode = "auto"
        self.mode = mode
        # Deciding to import faiss must not import it: find_spec only looks for it.
        self.pending = mode != "numpy" and importlib.util.find_spec("faiss") is not None
        if mode == "faiss" and not self.pending:
            log.warning("semcache: SEMCACHE_KERNEL=faiss but faiss is not installed "
                        "(pip install 'semcache-sqlite[fast]'); using numpy")

    def load_faiss(self) -> None:
        with self.lock:
            if not self.pending:
                return
            self.pending = False
            try:
                self.kernel = load_faiss_kernel()
            except Exception as exc:  # noqa: BLE001 - a broken optional wheel: stay on numpy
                log.warning("semcache: faiss could not be loaded (%s); using numpy", exc)


def load_faiss_kernel() -> FaissKernel:
    """Import faiss and wrap it (raises ImportError when it is not installed)."""
    import faiss  # type: ignore[import-not-found,import-untyped,unused-ignore]

    return FaissKernel(faiss)


_SELECTION = _Selection()


def active_kernel() -> NumpyKernel | FaissKernel:
    """The kernel this process scans with now (numpy until faiss is worth loading)."""
    sel = _SELECTION
    if sel.pending and sel.mode == "faiss":
        sel.load_faiss()
    return sel.kernel


def preload_kernel() -> str:
    """Load the compiled kernel now if it is installed (and not disabled by
    ``SEMCACHE_KERNEL=numpy``), e.g. at a server's start-up instead of inside a request;
    returns the name of the kernel in use."""
    if _SELECTION.pending:
        _SELECTION.load_faiss()
    return _SELECTION.kernel.name


def note_scan_time(seconds: float) -> None:
    """Account numpy scanning time; loads faiss once it has paid for its import."""
    sel = _SELECTION
    if sel.pending:
        sel.scanned_s += seconds
        if sel.scanned_s >= IMPORT_AFTER_SCAN_S:
            sel.load_faiss()


def hamming_naive(codes_u8: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Reference Hamming distances of (n, nbytes) uint8 codes to a (nbytes,) code, as int32."""
    codes = np.asarray(codes_u8, dtype=np.uint8)
    query = np.asarray(q, dtype=np.uint8)
    return np.bitwise_count(codes ^ query).sum(axis=-1, dtype=np.int32)


# -- pruning bound -------------------------------------------------------------------------

#: Largest chance that :func:`half_distance_cut` excludes a vector exactly at the threshold
#: cosine (vectors above it are excluded even less often): 1 in a billion.
CUT_MISS_PROBABILITY = 1e-9
#: Above this cut on 128 bits, too many random rows survive for pruning to pay (random
#: codes average 64 differing bits on 128, sd 5.7).
MAX_USEFUL_HALF_CUT = 52


@functools.lru_cache(maxsize=256)
def half_distance_cut(min_cosine: float, bits: int = 128) -> int:
    """Smallest Hamming distance on ``bits`` bits (the first 128 by default) that a vector
    at ``min_cosine`` exceeds with probability at most :data:`CUT_MISS_PROBABILITY`.

    For Gaussian random hyperplanes each bit differs with probability angle / pi
    (Charikar's SimHash), independently per bit, so the distance on ``bits`` bits is
    Binomial(bits, acos(min_cosine) / pi); its exact upper tail gives the cut. Random
    (unrelated) codes average bits / 2, so few of them survive a cut well below it.
    """
    p = math.acos(min(max(min_cosine, -1.0), 1.0)) / math.pi
    if p <= 0.0:
        return 0
    tail = 0.0  # P(distance > cut), summed from the top
    for cut in range(bits, -1, -1):
        term = math.comb(bits, cut) * p**cut * (1.0 - p) ** (bits - cut)
        if tail + term > CUT_MISS_PROBABILITY:
            return cut
        tail += term
    return 0
