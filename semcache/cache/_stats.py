"""The shared counters as a cache reports them: now (``Cache.stats``) and over time
(``Cache.stats_history``). Every process's counts are written by the Writer's transactions
(``StoreTxn.add_counters``, which also adds them to the minute's bucket of the time series)
and read back from the engine."""

from __future__ import annotations

from typing import Any

from semcache.errors import InvalidInputError
from semcache.store.base import SERIES_RETENTION_MINUTES, Store

#: The counters :meth:`semcache.Cache.stats` reports (0 when none happened).
STAT_COUNTERS = ("hits", "exact_hits", "semantic_hits", "misses", "puts", "entries",
                 "evictions", "expirations", "bytes", "tokens_saved", "guard_rejections",
                 "feedback_right", "feedback_wrong", "damaged_vectors", "explorations",
                 "outcomes_right", "outcomes_wrong")


def current_stats(store: Store, embedder_name: str | None) -> dict[str, Any]:
    """The shared counters, the hit rate, the bytes the cache occupies and its embedder."""
    c = store.counters()
    lookups = c["hits"] + c["misses"]
    out: dict[str, Any] = {name: c.get(name, 0) for name in STAT_COUNTERS}
    out["hit_rate"] = c["hits"] / lookups if lookups else 0.0
    out["file_bytes"] = store.size_bytes()
    out["embedder"] = embedder_name
    return out


#: Counters every bucket of :func:`history` has (0 when none happened).
HISTORY_COUNTERS = ("hits", "exact_hits", "semantic_hits", "misses", "puts", "evictions",
                    "expirations", "tokens_saved", "guard_rejections", "feedback_right",
                    "feedback_wrong", "damaged_vectors", "explorations", "outcomes_right",
                    "outcomes_wrong")


def check_history_span(minutes: Any, days: Any) -> None:
    """``minutes`` and ``days`` of ``Cache.stats_history``: ints within the retention."""
    for name, value in (("minutes", minutes), ("days", days)):
        limit = SERIES_RETENTION_MINUTES // (1 if name == "minutes" else 1440)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise InvalidInputError(f"{name} must be an int in [0, {limit}]; got {value!r}")


def history(store: Store, now: float, minutes: int, days: int) -> dict[str, list[dict[str, int]]]:
    """The last ``minutes`` minutes and the last ``days`` UTC days of the counters at
    ``now`` (epoch seconds), oldest first, the current one last."""
    minute = int(now // 60)
    first_day = (minute // 1440 - days + 1) * 1440
    return {"minutes": _buckets(store, minute - minutes + 1, 1, minutes),
            "days": _buckets(store, first_day, 1440, days)}


def _buckets(store: Store, first: int, step: int, count: int) -> list[dict[str, int]]:
    """``count`` buckets of ``step`` minutes from minute ``first``, zero-filled."""
    if count == 0:
        return []
    found = store.counter_history(first, step)
    names = dict.fromkeys(HISTORY_COUNTERS, 0) | {name: 0 for _, name, _ in found}
    buckets = {first + i * step: dict(names) for i in range(count)}
    for minute, name, value in found:
        bucket = buckets.get(minute)
        if bucket is not None:  # a minute ahead of this clock (another host's) is left out
            bucket[name] += value
    return [{"start": minute * 60, **counts} for minute, counts in buckets.items()]


__all__ = ["HISTORY_COUNTERS", "STAT_COUNTERS", "check_history_span", "current_stats",
           "history"]
