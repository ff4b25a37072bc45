"""The pruned Hamming scan used when the hit threshold is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semcache.kernels.hamming import NUMPY, Workspace, half_distance_cut, hamming_naive
from semcache.kernels.projection import BinaryEncoder
from semcache.kernels.scan import topk


@pytest.mark.parametrize("n", [1, 63, 16384, 16385, 40_000])
def test_pruned_equals_exact_topk_among_rows_within_the_cut(n):
    rng = np.random.default_rng(n)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    # plant near neighbours of the query at known distances
    q = rng.integers(0, 256, 32, dtype=np.uint8)
    for j, row in enumerate(rng.choice(n, size=min(n, 20), replace=False)):
        codes[row] = q
        codes[row, : j % 6] ^= 0xFF
    parts = rng.integers(0, 3, n, dtype=np.int32)
    expires = rng.integers(100, 300, n, dtype=np.uint32)
    cut = 50
    idx, dist = topk(np.ascontiguousarray(codes[:, :16]), np.ascontiguousarray(codes[:, 16:]),
                     q, 16, half_cut=cut, full_cut=90, partition=1, partitions=parts,
                     expires=expires, now_u32=200, kernel=NUMPY, workspace=Workspace(16384))
    full = hamming_naive(codes, q)
    half = hamming_naive(np.ascontiguousarray(codes[:, :16]), q[:16])
    ok = (half <= cut) & (full <= 90) & (parts == 1) & (expires > 200)
    rows = np.flatnonzero(ok)
    order = np.lexsort((rows, full[rows]))[:16]
    assert idx.tolist() == rows[order].tolist()
    assert dist.tolist() == full[rows][order].tolist()


def test_cut_grows_as_the_threshold_falls():
    cuts = [half_distance_cut(t) for t in (0.99, 0.95, 0.92, 0.9, 0.8, 0.5)]
    assert cuts == sorted(cuts) and cuts[2] == 43


@pytest.mark.parametrize("t", [0.99, 0.95, 0.92, 0.9, 0.85, 0.7])
@pytest.mark.parametrize("bits", [128, 256])
def test_cut_is_the_exact_binomial_tail_bound(t, bits):
    """The chance that a vector exactly at the threshold lies beyond the cut is at most
    1e-9, and the cut is the smallest with that property."""
    p = math.acos(t) / math.pi
    cut = half_distance_cut(t, bits)

    def beyond(c: int) -> float:
        return sum(math.comb(bits, j) * p**j * (1 - p) ** (bits - j) for j in range(c + 1, bits + 1))

    assert beyond(cut) <= 1e-9 < beyond(cut - 1)


def test_vectors_at_the_threshold_pass_the_cut():
    """Empirically: codes of vectors at exactly the threshold cosine stay within the cut
    (the cut is a 7.5-sigma bound of the binomial distance on 128 bits)."""
    rng = np.random.default_rng(3)
    dim, t = 384, 0.9
    enc = BinaryEncoder(dim, 256, seed=0)
    base = rng.standard_normal((2000, dim))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    noise = rng.standard_normal((2000, dim))
    noise -= (noise * base).sum(1, keepdims=True) * base
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    near = t * base + math.sqrt(1 - t * t) * noise
    a, b = enc.encode(base), enc.encode(near)
    half = np.bitwise_count(a[:, :16] ^ b[:, :16]).sum(1)
    assert half.max() <= half_distance_cut(t)
    assert np.bitwise_count(a ^ b).sum(1).max() <= half_distance_cut(t, 256)
    expected = 128 * math.acos(t) / math.pi
    assert abs(half.mean() - expected) < 1.0  # the SimHash law the cut relies on
