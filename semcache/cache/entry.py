"""What operators and transfers see of an entry (``Cache.entries``, ``Cache.restore``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from semcache.store.base import Verdict


@dataclass(slots=True)
class Entry:
    """One cache entry, decoded.

    ``key`` is the exact-key material of an entry stored by request (``Cache.store``),
    from which its key is derived again on import (never trusted as a finished hash);
    None for plain prompts (the key is derived from ``prompt``) and for vectors.
    ``vector`` is the stored unit vector (float32), present when asked for.
    ``verdicts``: the entry's trust state to restore with it (an export's ``feedback``
    verdicts on it; their entry id and namespace are the restored entry's).
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


__all__ = ["Entry"]
