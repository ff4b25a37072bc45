"""The numeric kernels of the numpy BERT forward pass: dense layers, GELU, layer norm.

Everything here works in place on float32 arrays the caller allocated once per forward
pass, with as few numpy calls as the arithmetic allows: a one-question embedding is ~300
calls, and at ~1-2 us of call overhead each, the count matters next to ~3 ms of matrix
products.

Dense layers (:class:`Dense`) are where the time goes. OpenBLAS multiplies a small matrix
by a big one in one of two ways: its regular sgemm copies ("packs") both operands into
aligned buffers first, which for the few token rows of a query costs more than the
arithmetic; on AVX-512 cores it also has "small matrix" kernels that read the operands in
place, chosen when ``M * N * K <= 1e6``. A query's products (11-30 tokens times 384x1536
weights) are far above that bound, so by default every one of them pays the packing. Stored
as contiguous blocks of 64 output columns (and, for long inputs, 384-row slices whose
partial products are summed), each weight matrix becomes a stack of products under the
bound, which one ``np.matmul`` call runs as a loop of BLAS calls in C: measured on this
AMD EPYC (Zen 4, OpenBLAS core "SkylakeX"), 2.2x faster for an 11-token query and 1.4x for
a batch of 640 tokens (run in row groups that stay under the bound). On other cores (or
with ``OPENBLAS_CORETYPE=Haswell``, AVX2 kernels only) there is no small kernel, the blocks
would each be packed, and the plain ``(in, out)`` layout is used instead: see
:func:`semcache.embedders._threads.small_gemm_kernels`.
"""

from __future__ import annotations

import math

import numpy as np

# Coefficients of a rational approximation of erf on [-4, 4] (beyond it erf is +-1 in
# float32): erf(x) = x * P(x^2) / Q(x^2). The same one Eigen and XLA use for float32.
_ERF_NUM = (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
    -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_DEN = (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
    -7.37332916720468e-03, -1.42647390514189e-02,
)
_SQRT_HALF = np.float32(1.0 / math.sqrt(2.0))
# P and Q evaluated together by Horner's rule on a (2, ...) stack: one numpy call per step
# for both. Q has two degrees less, so it starts with two zero coefficients (0 * s + 0 is
# exactly 0: the same bits as starting at its first real coefficient). P is halved, which
# is exact in binary, so the stack gives 0.5 * erf directly (what GELU needs).
_HORNER = np.array(
    [[0.5 * p, q] for p, q in zip(_ERF_NUM, (0.0, 0.0, *_ERF_DEN), strict=True)],
    dtype=np.float32,
)  # (steps, 2)
_HALF = np.float32(0.5)

#: OpenBLAS multiplies with its small-matrix kernels when M * N * K is at most this.
SMALL_GEMM_LIMIT = 1_000_000
#: Output columns per weight block: 64 ran 5-10% faster than 32 or 16 for 11-40 rows.
BLOCK = 64
#: Longest input slice of a blocked product; longer inputs (the 1536 of the FFN output) are
#: cut into slices whose partial products are summed. A 384 x 64 block times 40 rows stays
#: under the small-kernel bound: the products of more rows run 40 rows at a time.
K_SLICE = 384
#: Rows per product in the plain layout (callers slice long inputs into this many).
PLAIN_ROWS = 256


def erf(x: np.ndarray) -> np.ndarray:
    """float32 erf of a float32 array (max abs error ~4e-7 against ``math.erf``)."""
    t = np.clip(x, -4.0, 4.0).astype(np.float32, copy=False)
    half_erf = _half_erf(t, np.empty((2, *t.shape), dtype=np.float32))
    half_erf *= np.float32(2.0)
    return half_erf


def _half_erf(t: np.ndarray, stack: np.ndarray) -> np.ndarray:
    """``0.5 * erf(t)`` of ``t`` already clipped to [-4, 4]; ``stack`` is (2, *t.shape)
    scratch, whose first row holds the result."""
    coefs = _HORNER.reshape(_HORNER.shape + (1,) * t.ndim)  # broadcast over t's axes
    s = np.multiply(t, t)
    np.multiply(s, coefs[0], out=stack)
    stack += coefs[1]
    for coef in coefs[2:]:
        stack *= s
        stack += coef
    num = stack[0]
    num *= t
    num /= stack[1]
    return num


def gelu_(x: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """Exact (erf) GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``, computed in place on ``x``.

    ``scratch``: optional float32 array of shape ``(2, *x.shape)`` reused between calls.
    """
    if scratch is None:
        scratch = np.empty((2, *x.shape), dtype=np.float32)
    t = np.multiply(x, _SQRT_HALF)
    np.clip(t, -4.0, 4.0, out=t)
    e = _half_erf(t, scratch)
    e += _HALF
    x *= e
    return x


class LayerNorm:
    """Layer norm over the last axis of 2-D float32 rows (biased variance, as torch), in place.

    ``(x - mean) / sqrt(var + eps) * weight + bias`` computed as
    ``(x - mean) / sqrt(sum((x - mean)^2) + width * eps) * (weight * sqrt(width)) + bias``:
    the same value (within float32 rounding) in 8 numpy calls instead of 10; the mean is a
    product with a ``1 / width`` vector.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, eps: float) -> None:
        width = weight.shape[-1]
        self.scaled_weight = (weight * np.float32(math.sqrt(width))).astype(np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.width_eps = np.float32(width * eps)
        self.inverse_width = np.full(width, 1.0 / width, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mean = np.matmul(x, self.inverse_width)
        x -= mean[:, None]
        norm = np.einsum("ij,ij->i", x, x)
        norm += self.width_eps
        np.sqrt(norm, out=norm)
        x /= norm[:, None]
        x *= self.scaled_weight
        x += self.bias
        return x


class Dense:
    """``out = x @ W + b`` of packed token rows, in the layout that multiplies fastest here.

    ``weight`` is ``(in, out)``. ``blocked=True`` stores it as contiguous ``(in_slice, 64)``
    column blocks (see the module docstring); the result is the same product, summed in
    another order only when the input is sliced (differences ~1e-7).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, *, blocked: bool) -> None:
        k, n = weight.shape
        self.in_features, self.out_features = k, n
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.blocked = blocked and n % BLOCK == 0 and k % _k_slice(k) == 0
        #: Input rows per product: blocked, what keeps each block product under the
        #: small-kernel bound; plain, enough for the packed product to pay its packing.
        self.rows = PLAIN_ROWS
        if not self.blocked:
            self.weight = np.ascontiguousarray(weight, dtype=np.float32)
            return
        self.k_slice = _k_slice(k)
        self.slices = k // self.k_slice
        self.blocks = n // BLOCK
        # (slices, blocks, k_slice, BLOCK), each block contiguous.
        self.weight = np.ascontiguousarray(
            weight.reshape(self.slices, self.k_slice, self.blocks, BLOCK).transpose(0, 2, 1, 3),
            dtype=np.float32,
        )
        self.rows = max(1, SMALL_GEMM_LIMIT // (self.k_slice * BLOCK))

    def __call__(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write ``x @ W + b`` into ``out`` (``(rows, out_features)``, C-contiguous)."""
        self.product(x, out)
        out += self.bias
        return out

    def product(self, x: np.ndarray, out: np.ndarray) -> None:
        """Write ``x @ W`` (no bias) into ``out``."""
        if self.blocked:
            self._blocked(x, out)
        else:
            np.matmul(x, self.weight, out=out)

    def plain_weight(self) -> np.ndarray:
        """The ``(in, out)`` weight matrix (a copy when blocked)."""
        if not self.blocked:
            return self.weight
        k, n = self.in_features, self.out_features
        return np.ascontiguousarray(self.weight.transpose(0, 2, 1, 3).reshape(k, n))

    def _blocked(self, x: np.ndarray, out: np.ndarray) -> None:
        t = x.shape[0]
        # out seen as (blocks, rows, BLOCK): each block product writes its columns in place.
        view = out.reshape(t, self.blocks, BLOCK).transpose(1, 0, 2)
        if self.slices == 1:
            w = self.weight[0]
            for r in range(0, t, self.rows):
                np.matmul(x[r : r + self.rows], w, out=view[:, r : r + self.rows])
            return
        # x seen as (slices, 1, rows, k_slice): every slice against its row of blocks.
        xs = x.reshape(t, self.slices, self.k_slice).transpose(1, 0, 2)[:, None]
        for r in range(0, t, self.rows):
            partial = np.matmul(xs[:, :, r : r + self.rows], self.weight)
            np.add.reduce(partial, axis=0, out=view[:, r : r + self.rows])


def _k_slice(k: int) -> int:
    """The input slice of a blocked weight: all of it up to :data:`K_SLICE` rows, else
    :data:`K_SLICE` (a width that does not divide it leaves the layer unblocked)."""
    return k if k <= K_SLICE else K_SLICE
