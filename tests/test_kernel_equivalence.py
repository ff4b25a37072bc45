"""The compiled (faiss) and portable (numpy) Hamming kernels return identical results.

A hypothesis property over random codes (with planted duplicates, near neighbours, exact
matches and complements), partitions (dead rows included), expiries, the clock, k, the
threshold-pruning cut and chunk sizes: both kernels must return exactly the reference
``(rows, distances)`` list - same rows, same distances, same order, ties by ascending row.
The mirror is checked the same way, through :meth:`CodeMirror.search` with each kernel.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semcache.kernels import hamming
from semcache.kernels.hamming import NUMPY, Workspace, half_distance_cut, hamming_naive
from semcache.kernels.scan import topk
from semcache.store.sqlite.mirror import EXPIRES_NEVER, CodeMirror

faiss_kernel = pytest.importorskip("faiss") and hamming.load_faiss_kernel()


@st.composite
def scans(draw: st.DrawFn) -> dict:
    n = draw(st.integers(0, 2500))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, 32, dtype=np.uint8)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    if n:
        for row in rng.integers(0, n, draw(st.integers(0, 40))):  # near neighbours
            codes[row] = q
            flips = rng.integers(0, 256, int(rng.integers(0, 90)))
            codes[row, flips // 8] ^= (1 << (flips % 8)).astype(np.uint8)
        codes[rng.integers(0, n, 4)] = codes[rng.integers(0, n)]  # duplicates: ties
        if draw(st.booleans()):
            codes[rng.integers(0, n)] = q
            codes[rng.integers(0, n)] = ~q
    parts = rng.integers(-1, 4, n).astype(np.int32)
    expires = np.where(rng.random(n) < 0.2, EXPIRES_NEVER,
                       rng.integers(0, 20, n)).astype(np.uint32)
    threshold = draw(st.one_of(st.none(), st.floats(0.5, 0.999)))
    return {
        "codes": codes, "q": q, "parts": parts, "expires": expires,
        "k": draw(st.integers(1, 40)),
        "partition": draw(st.one_of(st.none(), st.integers(0, 3))),
        "use_parts": draw(st.booleans()),
        "now": draw(st.one_of(st.none(), st.integers(0, 25))),
        "cut": None if threshold is None else (half_distance_cut(threshold),
                                               half_distance_cut(threshold, 256)),
        "chunk": draw(st.sampled_from([64, 100, 256, 1024, 16384])),
    }


def _reference(s: dict) -> tuple[list[int], list[int]]:
    codes, q = s["codes"], s["q"]
    d = hamming_naive(codes, q)
    ok = np.ones(d.shape[0], dtype=bool)
    if s["partition"] is not None or s["use_parts"]:
        ok &= (s["parts"] == s["partition"]) if s["partition"] is not None else s["parts"] >= 0
    if s["now"] is not None:
        ok &= s["expires"] > s["now"]
    if s["cut"] is not None:
        half = hamming_naive(codes[:, :16], q[:16])
        ok &= (half <= s["cut"][0]) & (d <= s["cut"][1])
    idx = np.flatnonzero(ok)
    order = np.lexsort((idx, d[idx]))[: s["k"]]
    return idx[order].tolist(), d[idx][order].tolist()


def _scan(s: dict, kernel: object) -> tuple[list[int], list[int]]:
    codes = s["codes"]
    cut = s["cut"]
    idx, dist = topk(
        np.ascontiguousarray(codes[:, :16]), np.ascontiguousarray(codes[:, 16:]), s["q"],
        s["k"], half_cut=None if cut is None else cut[0], full_cut=256 if cut is None else cut[1],
        partition=s["partition"],
        partitions=s["parts"] if s["partition"] is not None or s["use_parts"] else None,
        expires=s["expires"] if s["now"] is not None else None, now_u32=s["now"],
        kernel=kernel, workspace=Workspace(s["chunk"]))  # type: ignore[arg-type]
    return idx.tolist(), dist.tolist()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scans())
def test_numpy_and_faiss_kernels_return_identical_lists(s: dict) -> None:
    expected = _reference(s)
    assert _scan(s, NUMPY) == expected
    assert _scan(s, faiss_kernel) == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scans(), st.integers(1, 5))
def test_mirror_search_is_the_same_with_either_kernel(s: dict, id_step: int) -> None:
    n = s["codes"].shape[0]
    ids = np.arange(1, 1 + id_step * n, id_step, dtype=np.int64)  # runs of ids, or one run
    parts = np.where(s["parts"] < 0, 0, s["parts"]).astype(np.int32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m-codes")
        mirror = CodeMirror.create(path, "db", (1, 1), ids, parts, s["expires"], s["codes"])
        dead = ids[s["parts"] < 0]
        mirror.mark_dead(dead)  # dead rows as the writer leaves them
        threshold = None if s["cut"] is None else _threshold_for(s["cut"][0])
        now = 0.0 if s["now"] is None else float(s["now"])
        results = []
        for kernel in (NUMPY, faiss_kernel):
            hamming._SELECTION.kernel = kernel  # type: ignore[assignment]
            try:
                results.append(mirror.search(s["q"], s["k"], partition=s["partition"],
                                             now=now, min_cosine=threshold))
            finally:
                hamming._SELECTION.kernel = NUMPY
        mirror.close()
    assert results[0] == results[1]
    d = hamming_naive(s["codes"], s["q"])
    for entry_id, dist in results[0]:
        row = (entry_id - 1) // id_step
        assert d[row] == dist and s["parts"][row] >= 0 and s["expires"][row] > math.floor(now)


def _threshold_for(half_cut: int) -> float:
    """A cosine whose half cut is ``half_cut`` (searching downwards)."""
    t = 0.999
    while half_distance_cut(t) < half_cut and t > 0.5:
        t -= 0.001
    return t
