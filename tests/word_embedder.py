"""A tiny deterministic embedder, and cache fixtures on it, for integration tests."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import semcache

STOPWORDS = {"what", "s", "is", "the", "a", "an", "of", "please", "tell", "me", "which"}


class WordEmbedder:
    """Deterministic bag-of-content-words embedder: paraphrases that only differ in
    stopwords get cosine 1.0, unrelated questions ~0."""

    name = "test-words:v1"
    dim = 64

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS]
            for word in words or ["<empty>"]:
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
                out[row, h % self.dim] += 1.0
            out[row] /= np.linalg.norm(out[row])
        return out


@pytest.fixture
def make_cache(make_location: Callable[..., str],
               clock: list[float]) -> Iterator[Callable[..., semcache.Cache]]:
    """Factory of caches on WordEmbedder at threshold 0.9, on the test module's ``clock``
    (a one-element list the test moves); all are closed after the test. The cache is a
    file, or a PostgreSQL schema for tests marked to run on both engines
    (tests/engines.py): ``name`` picks one of several caches of the test."""
    opened: list[semcache.Cache] = []

    def make(name: str = "llm.db", **settings: Any) -> semcache.Cache:
        settings.setdefault("embedder", WordEmbedder())
        settings.setdefault("similarity_threshold", 0.9)
        settings.setdefault("clock", lambda: clock[0])
        cache = semcache.open(make_location(name), **settings)
        opened.append(cache)
        return cache

    yield make
    for cache in opened:
        cache.close()


@pytest.fixture
def cache(make_cache: Callable[..., semcache.Cache]) -> semcache.Cache:
    return make_cache()
