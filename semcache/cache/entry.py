"""What operators and transfers see of an entry (``Cache.entries``, ``Cache.restore``),
and how their arguments select entries."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from semcache.errors import InvalidInputError
from semcache.store.base import EntryFilter, EntryRecord, Outcome, Verdict
from semcache.store.codecs import decode_metadata, decode_response, decode_vector
from semcache.validation import check_namespace


@dataclass(slots=True)
class Entry:
    """One cache entry, decoded.

    ``key`` is the exact-key material of an entry stored by request (``Cache.store``),
    from which its key is derived again on import (never trusted as a finished hash);
    None for plain prompts (the key is derived from ``prompt``) and for vectors.
    ``vector`` is the stored unit vector (float32), present when asked for.
    ``verdicts``: the entry's trust state to restore with it (an export's ``feedback``
    verdicts on it; their entry id and namespace are the restored entry's), and
    ``outcomes``: the error bound's outcomes kept for it (likewise).
    """

    namespace: str
    response: Any
    scope: str = ""
    prompt: str | None = None
    metadata: dict[str, Any] | None = None
    tokens: int = 0
    created_at: float = 0.0
    accessed_at: float | None = None
    expires_at: float | None = None
    ttl: float | None = None
    hits: int = 0
    vector: np.ndarray | None = None
    key: bytes | None = None
    id: int | None = None
    key_hash: bytes | None = None
    size: int = 0
    has_code: bool = False
    verdicts: tuple[Verdict, ...] = ()
    outcomes: tuple[Outcome, ...] = ()


def decode_record(rec: EntryRecord) -> Entry:
    """The :class:`Entry` of a stored record."""
    return Entry(
        namespace=rec.namespace, response=decode_response(rec.response), scope=rec.scope,
        prompt=rec.prompt, metadata=decode_metadata(rec.metadata), tokens=rec.tokens,
        created_at=rec.created_at, accessed_at=rec.accessed_at, expires_at=rec.expires_at,
        ttl=rec.ttl, hits=rec.hits,
        vector=None if rec.vector is None else decode_vector(rec.vector).copy(),
        key=rec.key_material, id=rec.id, key_hash=rec.key_hash, size=rec.size,
        has_code=rec.has_code)


def selection(namespace: str | None, expired: bool | None, older_than: float | None,
              now: float) -> EntryFilter:
    """The entries ``Cache.entries`` / ``count`` / ``purge`` select (arguments checked)."""
    if older_than is not None and (not math.isfinite(older_than) or older_than < 0):
        raise InvalidInputError(f"older_than must be a number of seconds >= 0; got {older_than!r}")
    return EntryFilter(
        namespace=None if namespace is None else check_namespace(namespace),
        expired_at=now if expired is True else None,
        live_at=now if expired is False else None,
        created_before=None if older_than is None else now - older_than)


def purge_selection(namespace: str | None, expired: bool | None, older_than: float | None,
                    everything: bool, now: float) -> EntryFilter | None:
    """What ``Cache.purge`` deletes: the entries of :func:`selection`, or None for every
    entry (``everything=True``, which takes no filter); no filter at all is refused."""
    if everything and (namespace is not None or expired or older_than is not None):
        raise InvalidInputError("everything=True deletes every entry; it cannot be "
                                "combined with filters")
    where = selection(namespace, expired, older_than, now)
    if everything:
        return None
    if where.empty:
        raise InvalidInputError("say what to purge: namespace=, expired=True, "
                                "older_than= or everything=True")
    return where


__all__ = ["Entry", "decode_record", "purge_selection", "selection"]
