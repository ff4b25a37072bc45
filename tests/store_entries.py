"""Entries for the Store tests (the contract suite, PostgreSQL): real codes from the seeded
projection."""

from __future__ import annotations

import numpy as np

from semcache.kernels.projection import BinaryEncoder
from semcache.store.base import NewEntry

DIM = 32
ENCODER = BinaryEncoder(DIM, 256, 0)
T0 = 1_700_000_000.0


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(v: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly ``cosine`` from the unit vector ``v``."""
    r = rng.standard_normal(v.shape[0])
    r -= (r @ v) * v
    r /= np.linalg.norm(r)
    out = cosine * v.astype(np.float64) + np.sqrt(1 - cosine ** 2) * r
    return (out / np.linalg.norm(out)).astype(np.float32)


def code_of(v: np.ndarray) -> bytes:
    return ENCODER.encode_unit(v.astype(np.float32)).tobytes()


def entry(key: int | bytes, vector: np.ndarray | None = None, *, namespace: str = "default",
          scope: str = "", prompt: str | None = "p", response: bytes = b"r" * 20,
          expires_at: float | None = None, created_at: float = T0,
          accessed_at: float | None = None, metadata: str | None = None) -> NewEntry:
    key_hash = key if isinstance(key, bytes) else int(key).to_bytes(32, "big")
    return NewEntry(
        key_hash=key_hash, namespace=namespace, scope=scope, prompt=prompt, response=response,
        metadata=metadata, tokens=7, created_at=created_at, expires_at=expires_at,
        ttl=None if expires_at is None else expires_at - created_at,
        code=None if vector is None else code_of(vector),
        vector=None if vector is None else vector.astype("<f4").tobytes(),
        accessed_at=accessed_at)
