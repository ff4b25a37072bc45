"""Exact keys: what the ``entries.key_hash`` column holds.

Every key is SHA-256 over a kind tag, the namespace and the key material, so the same
prompt in two namespaces (tenants) has two keys, and a plain prompt, a vector and a
request can never collide. The formulas are part of the file format: changing them makes
every stored entry unreachable by its exact key.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _digest(kind: bytes, namespace: str, payload: bytes) -> bytes:
    return hashlib.sha256(b"%s\x00%s\x00%s" % (kind, namespace.encode("utf-8"), payload)).digest()


def prompt_key(prompt: str, namespace: str) -> bytes:
    """Exact key of a plain prompt (``get``/``put``): the prompt's bytes, unnormalized."""
    return _digest(b"prompt", namespace, prompt.encode("utf-8"))


def vector_key(vector: np.ndarray, namespace: str) -> bytes:
    """Exact key of an entry put by vector: its float32 bytes as given (not normalized)."""
    return _digest(b"vector", namespace, np.asarray(vector, dtype="<f4").tobytes())


def request_key(material: bytes, namespace: str) -> bytes:
    """Exact key of a request stored through :meth:`~semcache.Cache.store`."""
    return _digest(b"request", namespace, material)


__all__ = ["prompt_key", "request_key", "vector_key"]
