"""``Cache.get`` of a numpy vector takes its own lean path (``LookupPipeline.run_vector``);
a list of the same numbers takes the general one (``run_one``). Both must behave alike:
the same hit, the same errors in the same order, the same counters."""

from __future__ import annotations

import numpy as np
import pytest

import semcache
from semcache.errors import (
    CacheClosedError,
    ConfigurationError,
    InvalidVectorError,
    SemcacheError,
)

DIM = 32


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _near(base: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(DIM)
    noise -= noise.dot(base) * base
    noise /= np.linalg.norm(noise)
    return cos * base.astype(np.float64) + np.sqrt(1 - cos * cos) * noise


def _outcome(cache: semcache.Cache, query: object, namespace: object,
             exact_only: bool) -> object:
    try:
        hit = cache.get(query, namespace=namespace, exact_only=exact_only)  # type: ignore[arg-type]
    except SemcacheError as exc:
        return type(exc).__name__, str(exc)
    if hit is None:
        return None
    # (not expires_at: a hit slides the entry's expiry to its own time)
    return (hit.kind, hit.entry_id, hit.similarity, hit.response, hit.namespace,
            hit.decision, hit.p_wrong, hit.expires_at is None)


def test_numpy_and_list_vectors_answer_alike(db_path: str) -> None:
    rng = np.random.default_rng(7)
    base = _unit(rng)
    with semcache.open(db_path, dim=DIM, similarity_threshold=0.9) as cache:
        cache.put(base, "answer", namespace="team", ttl=3600)
        cache.put(_unit(rng), "other")
        queries = [_near(base, 0.95, rng), _near(base, 0.85, rng), _unit(rng),
                   np.zeros(DIM), np.full(DIM, np.nan), np.ones(DIM + 1)]
        for q in queries:
            for namespace in (None, "team", "", 7):
                for exact_only in (False, True):
                    fast = _outcome(cache, q, namespace, exact_only)
                    general = _outcome(cache, q.tolist(), namespace, exact_only)
                    assert fast == general, (q[:3], namespace, exact_only)
        with pytest.raises(InvalidVectorError, match="1-D"):  # a list of lists is no vector
            cache.get(np.ones((2, DIM)))
        hits = cache.stats()
    # every lookup above counted once, by either path: pairs of equal outcomes
    assert hits["misses"] % 2 == 0 and hits["semantic_hits"] % 2 == 0
    assert hits["semantic_hits"] > 0


def test_numpy_vector_on_a_closed_or_hash_only_cache(db_path: str) -> None:
    rng = np.random.default_rng(8)
    v = _unit(rng)
    cache = semcache.open(db_path, dim=DIM, similarity_threshold=0.9)
    cache.put(v, "answer")
    assert cache.get(v).response == "answer"
    cache.close()
    with pytest.raises(CacheClosedError):
        cache.get(v)
    with pytest.raises(CacheClosedError):  # the gate before the namespace check
        cache.get(v, namespace=7)  # type: ignore[arg-type]
    with semcache.open(db_path + "-exact", hash_only=True) as exact:
        with pytest.raises(ConfigurationError, match="no pinned vector dimension"):
            exact.get(v)
        with pytest.raises(ConfigurationError, match="no pinned vector dimension"):
            exact.get(v.tolist())
