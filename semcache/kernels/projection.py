"""Binary codes: sign bits of a seeded Gaussian random projection (SimHash).

The projection matrix is part of the file format. It is always produced by::

    np.random.default_rng(seed).standard_normal((embedding_dim, code_bits)).astype(np.float32)

so every process (and every future version of semcache) that knows ``seed`` and
``embedding_dim`` rebuilds the very same matrix and encodes a vector to the very same bits.
Do not change how it is generated: codes already stored in files would stop matching the
queries. numpy guarantees that ``default_rng`` (PCG64) streams are stable across versions.

Bit ``j`` of a code is ``1`` when ``dot(normalized_vector, W[:, j]) > 0``, computed in
float32 (the matrix's own precision; float64 cost three times as much per query for no
decision: a projection within rounding error of 0 may flip between machines, BLAS builds or
batch sizes either way, which moves the Hamming distance by one and never the final cosine
decision - tests/test_projection_precision.py checks the decisions on the paraphrase pairs
and on random data).
Bits are packed with ``np.packbits(bits, axis=-1, bitorder="little")``: bit ``j`` is bit
``j % 8`` of byte ``j // 8``, hence bit ``j % 64`` of little-endian word ``j // 64``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from semcache.errors import DimensionError, InvalidInputError, InvalidVectorError

try:  # the C function np.einsum hands its operands to (optimize=False, the default)
    from numpy._core.multiarray import c_einsum
except ImportError:  # another numpy layout: the public wrapper, same arithmetic
    c_einsum = np.einsum

__all__ = ["BinaryEncoder", "projection_matrix", "validate_vector", "validate_matrix"]

# Rows encoded per matmul: bounds the temporary to ~8 MiB for 256-bit codes.
_ENCODE_BATCH = 8192
#: Rows validated per block by validate_vectors (its float64 temporaries stay in cache).
_VALIDATE_BATCH = 256
_max_reduce = np.maximum.reduce  # NaN propagates, as with max()


#: The matrix of the default shape (MiniLM's 384 dimensions, 256 bits, seed 0), exactly as
#: ``default_rng`` generates it, shipped as raw little-endian float32 (tests check it
#: against the generator): opening a file then skips importing ``numpy.random`` (5-8 ms of
#: a cold open).
_SHIPPED = {(384, 256, 0): Path(__file__).with_name("projection_384x256_seed0.f32")}


@functools.lru_cache(maxsize=8)
def projection_matrix(embedding_dim: int, code_bits: int, seed: int) -> np.ndarray:
    """The (embedding_dim, code_bits) float32 projection of the file format, read-only.

    Built once per process and shared by every encoder of the same file: read from the
    shipped copy for the default shape, else generated (about a millisecond at 384 x 256,
    plus importing ``numpy.random`` the first time).
    """
    w32 = _shipped(embedding_dim, code_bits, seed)
    if w32 is None:
        w = np.random.default_rng(seed).standard_normal((embedding_dim, code_bits))
        w32 = np.ascontiguousarray(w, dtype=np.float32)
    w32.flags.writeable = False
    return w32


def _shipped(embedding_dim: int, code_bits: int, seed: int) -> np.ndarray | None:
    path = _SHIPPED.get((embedding_dim, code_bits, seed))
    if path is None:
        return None
    try:
        raw = np.fromfile(path, dtype="<f4")
    except OSError:  # not installed with its data: generate it
        return None
    if raw.size != embedding_dim * code_bits:
        return None
    return np.ascontiguousarray(raw.reshape(embedding_dim, code_bits), dtype=np.float32)


def _as_float_array(v: ArrayLike) -> np.ndarray:
    """Convert to a float64 array, mapping conversion failures to InvalidVectorError."""
    if isinstance(v, np.ndarray) and v.dtype.kind == "c":  # numpy would drop the imaginary part
        raise InvalidVectorError(f"vector must hold real numbers, got a {v.dtype} array")
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"vector must be numeric, got {type(v).__name__}: {exc}") from exc
    return arr


def _normalize_rows(arr: np.ndarray) -> np.ndarray:
    """L2-normalize the rows of a finite, non-zero float64 2-D array; returns float32.

    Rows are first divided by their max-abs value so that neither huge (1e200) nor tiny
    (subnormal) vectors overflow or underflow while squaring.
    """
    scale = np.max(np.abs(arr), axis=1, keepdims=True)
    scaled = arr / scale
    norms = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))[:, None]
    return (scaled / norms).astype(np.float32)


def validate_matrix(vectors: ArrayLike, dim: int) -> np.ndarray:
    """Validate a batch of vectors and return it L2-normalized as a (n, dim) float32 array.

    Accepts a single vector ``(dim,)`` (returned as ``(1, dim)``) or a batch ``(n, dim)``.
    Raises InvalidVectorError (wrong rank, NaN/inf, all-zero row) or DimensionError.
    """
    arr = _as_float_array(vectors)
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim != 2:
        raise InvalidVectorError(
            f"vectors must be 1-D (dim,) or 2-D (n, dim), got shape {arr.shape}"
        )
    if arr.shape[1] != dim:
        raise DimensionError(f"vector has dimension {arr.shape[1]}, expected {dim}")
    if arr.shape[0] == 0:
        return np.empty((0, dim), dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InvalidVectorError(f"vector {bad} contains NaN or infinite values")
    nonzero = (arr != 0).any(axis=1)
    if not nonzero.all():
        bad = int(np.flatnonzero(~nonzero)[0])
        raise InvalidVectorError(f"vector {bad} is all zeros and has no direction")
    return _normalize_rows(arr)


def validate_vector(v: ArrayLike, dim: int) -> np.ndarray:
    """Validate one embedding and return it L2-normalized as a (dim,) float32 array.

    Raises InvalidVectorError when ``v`` is not 1-D, holds NaN/inf or is all zeros, and
    DimensionError (a subclass) when its length is not ``dim``.
    """
    # A float array (an embedder's output, a query vector): asarray's float64 conversion
    # without the helper's checks, which only other inputs need.
    arr = v.astype(np.float64, copy=False) if type(v) is np.ndarray and v.dtype.kind == "f" \
        else _as_float_array(v)
    if arr.ndim != 1:
        raise InvalidVectorError(f"vector must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != dim:
        raise DimensionError(f"vector has dimension {arr.shape[0]}, expected {dim}")
    # One vector: the checks of validate_matrix in four numpy calls (a NaN or inf makes the
    # max-abs scale non-finite, an all-zero vector makes it 0).
    # The ufunc's reduce: np.max and the method both pass through a Python layer (~1 us).
    scale = float(_max_reduce(np.abs(arr)))
    if not math.isfinite(scale):
        raise InvalidVectorError("vector 0 contains NaN or infinite values")
    if scale == 0.0:
        raise InvalidVectorError("vector 0 is all zeros and has no direction")
    scaled = arr / scale
    # einsum, not ``scaled @ scaled``: it sums in the same order as the batched
    # ``einsum("ij,ij->i")`` of validate_matrix / validate_vectors, so a vector gets the
    # same float32 bits whether it is put alone or in a batch (BLAS dot differs in the
    # last bits for most vectors).
    # (c_einsum: np.einsum without its Python dispatch layer, the same C routine.)
    return (scaled / math.sqrt(float(c_einsum("i,i->", scaled, scaled)))).astype(np.float32)


def validate_vectors(vectors: Sequence[ArrayLike], dim: int) -> np.ndarray:
    """:func:`validate_vector` of each vector, batched (``put_many`` of vectors): rows
    bit-identical to what it returns one at a time, as a (n, dim) float32 array, and the
    same error for the first vector it refuses.

    The squared norms are ``einsum`` sums, which add each row in the same order as the
    single path's ``einsum``.
    """
    if not vectors:
        return np.empty((0, dim), dtype=np.float32)
    if len(vectors) == 1:  # a single put: fewer numpy calls
        return validate_vector(vectors[0], dim)[None, :]
    arr = None
    if not any(isinstance(v, np.ndarray) and v.dtype.kind == "c" for v in vectors):
        try:
            arr = np.asarray(vectors, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None  # ragged or not numeric: the single path names the culprit
    if arr is None or arr.ndim != 2 or arr.shape[1] != dim:
        return np.stack([validate_vector(v, dim) for v in vectors])  # raises
    out = np.empty(arr.shape, dtype=np.float32)
    # Blocks of rows: the float64 temporaries stay in cache instead of a fresh,
    # page-faulting allocation per step over the whole batch (~3x faster at 5,000 x 384).
    for start in range(0, arr.shape[0], _VALIDATE_BATCH):
        block = arr[start:start + _VALIDATE_BATCH]
        scale = np.max(np.abs(block), axis=1)
        if not (np.isfinite(scale).all() and scale.all()):
            return np.stack([validate_vector(v, dim) for v in vectors])  # raises
        scaled = block / scale[:, None]
        scaled /= np.sqrt(np.einsum("ij,ij->i", scaled, scaled))[:, None]
        out[start:start + _VALIDATE_BATCH] = scaled
    return out


class BinaryEncoder:
    """Encode embeddings to packed ``code_bits``-bit sign codes.

    Attributes:
        embedding_dim: length of the input vectors.
        code_bits: number of bits per code (a positive multiple of 64; 256 in semcache).
        seed: seed of the projection matrix (stored in the cache file).
        code_bytes: ``code_bits // 8``.
    """

    def __init__(self, embedding_dim: int, code_bits: int = 256, seed: int = 0) -> None:
        if (
            not isinstance(embedding_dim, int)
            or isinstance(embedding_dim, bool)
            or embedding_dim < 1
        ):
            raise InvalidInputError(f"embedding_dim must be a positive int, got {embedding_dim!r}")
        if (
            not isinstance(code_bits, int)
            or isinstance(code_bits, bool)
            or code_bits < 64
            or code_bits % 64
        ):
            raise InvalidInputError(
                f"code_bits must be a positive multiple of 64 (256 in semcache), got {code_bits!r}"
            )
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise InvalidInputError(f"seed must be a non-negative int, got {seed!r}")
        self.embedding_dim = embedding_dim
        self.code_bits = code_bits
        self.seed = seed
        self.code_bytes = code_bits // 8
        self._w = projection_matrix(embedding_dim, code_bits, seed)
        # The query's gemv reads the matrix row by row from its transpose: a lookup finds
        # the matrix evicted by the previous lookup's scan (megabytes of codes streamed),
        # and this layout reads it back ~10 us faster than ``v @ W`` (27 -> 17 us cold on
        # this machine; 5 -> 6 us warm). The products may differ from ``block @ W`` in the
        # last float32 bits, so a code bit may flip where a product is within rounding of 0
        # (none of 5.12M bits over 20k random unit vectors, measured 12-08; one vector
        # against its row in a batch: tests/test_projection_precision.py, 128k bits).
        # Codes only choose the candidates; exact cosine on stored vectors decides.
        self._wt = np.ascontiguousarray(self._w.T)

    @property
    def projection(self) -> np.ndarray:
        """The (embedding_dim, code_bits) float32 projection matrix (a copy)."""
        return self._w.copy()

    def encode(self, vectors: ArrayLike) -> np.ndarray:
        """Encode ``(d,)`` -> ``(code_bytes,)`` or ``(n, d)`` -> ``(n, code_bytes)`` uint8 codes."""
        arr = _as_float_array(vectors)
        return self.encode_unit(validate_matrix(arr, self.embedding_dim), single=arr.ndim == 1)

    def encode_unit(self, unit: np.ndarray, *, single: bool | None = None) -> np.ndarray:
        """:meth:`encode` for vectors already checked and L2-normalized (by
        :func:`validate_vector` / :func:`validate_matrix`): skips checking them again."""
        if single is None:
            single = unit.ndim == 1
        if single and unit.ndim == 1:  # the query path: one gemv, no batching
            v = unit if unit.dtype == np.float32 else unit.astype(np.float32)
            # ndarray.dot: the sgemv of ``@`` without the matmul ufunc's dispatch
            return np.packbits(self._wt.dot(v) > 0.0, bitorder="little")
        unit = unit.reshape(-1, self.embedding_dim)
        out = np.empty((unit.shape[0], self.code_bytes), dtype=np.uint8)
        for start in range(0, unit.shape[0], _ENCODE_BATCH):
            block = unit[start : start + _ENCODE_BATCH].astype(np.float32, copy=False)
            bits = (block @ self._w) > 0.0
            out[start : start + _ENCODE_BATCH] = np.packbits(bits, axis=-1, bitorder="little")
        return out[0] if single else out

    def to_words(self, codes: np.ndarray) -> np.ndarray:
        """View packed codes ``(..., code_bytes)`` uint8 as ``(..., code_bits // 64)`` ``<u8``."""
        arr = np.ascontiguousarray(codes, dtype=np.uint8)
        if arr.shape[-1:] != (self.code_bytes,):
            raise InvalidInputError(
                f"codes must end with a dimension of {self.code_bytes} bytes, got shape {arr.shape}"
            )
        return arr.view("<u8")

    def __repr__(self) -> str:
        return (
            f"BinaryEncoder(embedding_dim={self.embedding_dim}, code_bits={self.code_bits}, "
            f"seed={self.seed})"
        )
