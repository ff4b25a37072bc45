"""Preparing entries for the store and writing them, with the size limit enforced.

Everything that can fail on bad input (validation, JSON encoding, embedding) happens
before the write transaction starts, so a refused put writes nothing and never holds the
cross-process write lock while a model runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from semcache.cache._batcher import BatchedWrite, HitBatcher
from semcache.kernels.projection import BinaryEncoder
from semcache.settings import Tunables
from semcache.store.base import NewEntry, StoreTxn
from semcache.store.codecs import encode_metadata, encode_response, encode_vector
from semcache.validation import UNSET, check_tokens, check_ttl


class EntryFactory:
    """Turns validated put arguments into :class:`NewEntry` records."""

    def __init__(self, tunables: Callable[[], Tunables], encoder: BinaryEncoder | None) -> None:
        self._tunables = tunables
        self._encoder = encoder

    def ttl_seconds(self, ttl: Any) -> float | None:
        return self._tunables().ttl if ttl is UNSET else check_ttl(ttl)

    def new_entry(self, *, key: bytes, namespace: str, scope: str, prompt: str | None,
                  response: Any, vector: np.ndarray | None, ttl: Any, metadata: Any,
                  tokens: int, now: float) -> NewEntry:
        """``vector`` is a validated unit vector (or None: the entry gets no code yet)."""
        ttl_s = self.ttl_seconds(ttl)
        entry = NewEntry(
            key_hash=key, namespace=namespace, scope=scope,
            prompt=prompt if self._tunables().store_prompts else None,
            response=encode_response(response), metadata=encode_metadata(metadata),
            tokens=check_tokens(tokens), created_at=now,
            expires_at=None if ttl_s is None else now + ttl_s, ttl=ttl_s)
        if vector is not None:
            self.attach(entry, vector)
        return entry

    def attach(self, entry: NewEntry, vector: np.ndarray) -> None:
        """Give an entry its code and stored vector (no-op without vectors in the file)."""
        if self._encoder is None:
            return
        entry.code = self._encoder.encode_unit(vector).tobytes()
        entry.vector = encode_vector(vector)

    def attach_all(self, entries: Sequence[NewEntry], vectors: np.ndarray) -> None:
        if self._encoder is None or not len(entries):
            return
        codes = self._encoder.encode_unit(vectors.reshape(len(entries), -1), single=False)
        for entry, vector, code in zip(entries, vectors, codes, strict=True):
            entry.code = code.tobytes()
            entry.vector = encode_vector(vector)


def write_entries(batcher: HitBatcher, entries: Sequence[NewEntry],
                  max_entries: int | None, now: float) -> list[int]:
    """Insert ``entries`` in one transaction, then evict down to ``max_entries``."""
    if not entries:
        return []
    with batcher.write() as w:
        ids = insert_all(w.txn, entries)
        w.count(puts=len(entries))
        enforce_limit(w, max_entries, now)
    return ids


def insert_all(txn: StoreTxn, entries: Sequence[NewEntry]) -> list[int]:
    """Insert entries in order; an engine with a bulk path for several (PostgreSQL's
    ``insert_many``: the batch in one round trip) uses it."""
    many = getattr(txn, "insert_many", None)
    if many is not None and len(entries) > 1:
        return list(many(entries))
    return [txn.insert(e) for e in entries]


def enforce_limit(w: BatchedWrite, max_entries: int | None, now: float) -> None:
    """Expired entries go first, then the least recently used."""
    if max_entries is None:
        return
    excess = w.txn.entry_count() - max_entries
    if excess <= 0:
        return
    expired = w.txn.purge_expired(now)
    w.count(expirations=expired)
    if excess - expired > 0:
        w.count(evictions=w.txn.evict_lru(excess - expired))


__all__ = ["EntryFactory", "enforce_limit", "insert_all", "write_entries"]
