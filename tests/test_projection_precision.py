"""Codes are projected in float32 (they were float64): no hit decision changes.

Two caches hold the same entries, one encoding with float32 products (the default), the
other with float64 products (the former encoder, reproduced here); every lookup must return
the same decision - the same entry and the same exact-cosine similarity, or a miss in both.
Checked on the paraphrase pairs of benchmarks/data/paraphrase_pairs.json (hashing embedder;
MiniLM too where installed) and on random vectors at cosines around the threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import semcache
from semcache.kernels.projection import BinaryEncoder
from tests.conftest import sql_rows

PAIRS = json.loads((Path(__file__).resolve().parent.parent / "benchmarks" / "data"
                    / "paraphrase_pairs.json").read_text())


class Float64Encoder(BinaryEncoder):
    """The former encoder: the float32 matrix, products accumulated in float64."""

    def encode_unit(self, unit: np.ndarray, *, single: bool | None = None) -> np.ndarray:
        if single is None:
            single = unit.ndim == 1
        w = self.projection.astype(np.float64)
        bits = (np.asarray(unit, dtype=np.float64).reshape(-1, self.embedding_dim) @ w) > 0.0
        out = np.packbits(bits, axis=-1, bitorder="little")
        return out[0] if single else out




def make_dim(make: dict) -> int:
    """The vector dimension of the cache ``make`` opens."""
    if "dim" in make:
        return int(make["dim"])
    from semcache.embedders import get_embedder

    return int(get_embedder(make["embedder"]).dim)


def _decisions(cache: semcache.Cache, queries: list) -> list[tuple[int, float] | None]:
    out = []
    for q in queries:
        hit = cache.get(q)
        out.append(None if hit is None else (hit.entry_id, round(hit.similarity, 6)))
    return out


def _both(tmp_path: Path, make: dict, items: list, queries: list) -> tuple[list, list, int]:
    results = []
    for precision in ("float32", "float64"):
        path = str(tmp_path / f"{precision}.db")
        # The float64 cache is given the former encoder: open(encoder=) uses that very object.
        encoder = {"encoder": Float64Encoder(make_dim(make), 256, 0)} \
            if precision == "float64" else {}
        with semcache.open(path, max_entries=None, ttl=None, **make, **encoder) as cache:
            cache.put_many(items)
            differing = 0
            if precision == "float64":  # how many stored codes differ between the two
                # the codes really differ somewhere (else this test would prove nothing)
                sql = "SELECT code FROM entries ORDER BY id"
                differing = sum(a != b for (a,), (b,) in zip(
                    sql_rows(path, sql), sql_rows(str(tmp_path / "float32.db"), sql),
                    strict=True))
            results.append(_decisions(cache, queries))
    return results[0], results[1], differing


def test_paraphrase_pair_decisions_are_unchanged(tmp_path):
    origins = list(dict.fromkeys(p["origin"] for p in PAIRS))
    similar = [p["similar"] for p in PAIRS if p["similar"] != p["origin"]]
    f32, f64, _ = _both(tmp_path, {"embedder": "hashing", "similarity_threshold": 0.8},
                        [(o, {"answer": o}) for o in origins], similar)
    assert sum(d is not None for d in f32) > 100  # the pairs do produce semantic hits
    assert f32 == f64


@pytest.mark.minilm
def test_paraphrase_pair_decisions_are_unchanged_minilm(tmp_path):
    from semcache.embedders import minilm_available

    if not minilm_available():
        pytest.skip("MiniLM not installed")
    origins = list(dict.fromkeys(p["origin"] for p in PAIRS))[:300]
    similar = [p["similar"] for p in PAIRS if p["origin"] in set(origins)]
    f32, f64, _ = _both(tmp_path, {"embedder": "minilm"},
                        [(o, {"answer": o}) for o in origins], similar)
    assert sum(d is not None for d in f32) > 50
    assert f32 == f64


def test_random_vector_decisions_are_unchanged(tmp_path):
    rng = np.random.default_rng(11)
    dim = 384
    base = rng.standard_normal((3000, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = []
    for i in range(600):  # cosines spread around the threshold, plus unrelated vectors
        v = base[i].astype(np.float64)
        noise = rng.standard_normal(dim)
        noise -= noise.dot(v) * v
        noise /= np.linalg.norm(noise)
        cos = rng.uniform(0.85, 0.999)
        queries.append(cos * v + np.sqrt(1 - cos * cos) * noise)
    queries += list(rng.standard_normal((100, dim)))
    f32, f64, differing = _both(tmp_path, {"dim": dim, "similarity_threshold": 0.9},
                                [(v, i) for i, v in enumerate(base)], queries)
    assert 200 < sum(d is not None for d in f32) < len(queries)
    assert f32 == f64
    assert differing <= 3  # a flipped sign needs a product within float32 rounding of 0


def test_float32_codes_differ_from_float64_only_in_rare_bits():
    from semcache.kernels.projection import validate_matrix

    x = validate_matrix(np.random.default_rng(5).standard_normal((20000, 384)), 384)
    a = BinaryEncoder(384, 256, 0).encode_unit(x)
    b = Float64Encoder(384, 256, 0).encode_unit(x)
    flipped = int(np.unpackbits(a ^ b).sum())
    assert flipped <= 20  # of 5,120,000 bits (measured: 1): Hamming distances move by <= 1
    single = np.stack([BinaryEncoder(384, 256, 0).encode_unit(v) for v in x[:500]])
    assert np.array_equal(single, a[:500])  # one vector (gemv) == its row in a batch (gemm)
