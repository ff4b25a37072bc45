"""The shared counters as a cache reports them (``Cache.stats``): every process's counts,
written by the Writer's transactions (``StoreTxn.add_counters``), read back from the
engine with the cache's sizes."""

from __future__ import annotations

from typing import Any

from semcache.store.base import Store

#: The counters :meth:`semcache.Cache.stats` reports (0 when none happened).
STAT_COUNTERS = ("hits", "exact_hits", "semantic_hits", "misses", "puts", "entries",
                 "evictions", "expirations", "bytes", "tokens_saved", "guard_rejections",
                 "feedback_right", "feedback_wrong", "damaged_vectors")


def current_stats(store: Store, embedder_name: str | None) -> dict[str, Any]:
    """The shared counters, the hit rate, the bytes the cache occupies and its embedder."""
    c = store.counters()
    lookups = c["hits"] + c["misses"]
    out: dict[str, Any] = {name: c.get(name, 0) for name in STAT_COUNTERS}
    out["hit_rate"] = c["hits"] / lookups if lookups else 0.0
    out["file_bytes"] = store.size_bytes()
    out["embedder"] = embedder_name
    return out


__all__ = ["STAT_COUNTERS", "current_stats"]
