"""The process-wide default cache: a OneLLM-style global API.

::

    import semcache
    semcache.init_cache()                      # ~/.cache/semcache/llm.db (platform cache dir)
    client = semcache.wrap(openai.OpenAI())    # no cache given: uses the default one
    semcache.cache_stats(); semcache.clear_cache(); semcache.disable_cache()

Compatibility with OneLLM's ``onellm.init_cache(max_entries=1000, p=0.95, hash_only=False,
stream_chunk_strategy="words", stream_chunk_length=8, ttl=86400)``: there ``p`` is the
similarity threshold of the semantic tier (cosine, "0.9 = more aggressive matching"). Here
it is accepted as an alias of ``similarity_threshold`` so OneLLM call sites work
unchanged; when both are given they must agree. Unlike OneLLM's in-memory cache, this one
is persistent: ``path=None`` means ``<user cache dir>/semcache/llm.db``
(``platformdirs.user_cache_dir("semcache")``), shared by every process of the user.

All functions are thread-safe; wrapped clients look the default cache up on every call,
so ``disable_cache()`` or a new ``init_cache(...)`` take effect for them immediately.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from semcache.cache import STAT_COUNTERS
from semcache.errors import ConfigurationError
from semcache.integrations.streaming import check_stream_options, set_replay_defaults
from semcache.settings import INIT_DEFAULTS
from semcache.validation import UNSET

logger = logging.getLogger("semcache")

_lock = threading.RLock()
_default: Any = None  # the current default semcache.Cache, or None


def default_cache_path() -> Path:
    """Where ``init_cache(path=None)`` puts the file: ``<user cache dir>/semcache/llm.db``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("semcache")) / "llm.db"



def init_cache(
    path: str | os.PathLike[str] | None = None,
    max_entries: Any = UNSET,
    similarity_threshold: Any = UNSET,
    p: float | None = None,
    hash_only: bool = False,
    stream_chunk_strategy: str = "words",
    stream_chunk_length: int = 8,
    ttl: Any = UNSET,
    **settings: Any,
) -> Any:
    """Open (or create) the process-wide default cache and return it.

    Args:
        path: cache file or ``postgresql://`` URL; None -> :func:`default_cache_path`
            (directories are created).
        max_entries: LRU bound on the number of entries (a new file gets 1000).
        similarity_threshold: cosine in [0, 1] above which a paraphrase is a hit (a new
            file gets 0.95).
        p: OneLLM's name for ``similarity_threshold``; takes its place when given.
        hash_only: exact matches only (no embedder is loaded).
        stream_chunk_strategy: ``words | sentences | paragraphs | characters`` - how cached
            answers are split when replayed with ``stream=True`` by clients wrapped without
            an explicit cache (``semcache.wrap(client)``).
        stream_chunk_length: units of that strategy per replayed chunk.
        ttl: seconds an entry lives (None: no expiry; a new file gets one day).
        **settings: any other :func:`semcache.open` setting (``embedder=``, ``namespace=``...).

    Only the arguments actually passed change an existing file's stored settings; the
    defaults above apply to a new file (one that holds no entry yet). A file in use keeps
    what it stores, and for what it does not store the defaults of :func:`semcache.open`.
    A previous default cache is closed once the new one is open (if opening fails, the
    previous one stays the default).

    Raises:
        ConfigurationError: ``p`` and ``similarity_threshold`` disagree, or an invalid
            setting (raised by :func:`semcache.open`).
    """
    global _default
    if p is not None:
        if similarity_threshold is not UNSET and similarity_threshold != p:
            raise ConfigurationError(
                f"init_cache got p={p!r} and similarity_threshold={similarity_threshold!r}; "
                "p is OneLLM's name for the same setting, give only one"
            )
        similarity_threshold = p
    stream = check_stream_options(stream_chunk_strategy, stream_chunk_length)
    given = {name: value for name, value in (
        ("max_entries", max_entries), ("similarity_threshold", similarity_threshold),
        ("ttl", ttl)) if value is not UNSET}
    if path is None:
        path = default_cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
    from semcache.cache import open as open_cache

    cache = open_cache(path, hash_only=hash_only, defaults=INIT_DEFAULTS, **given, **settings)
    with _lock:
        previous, _default = _default, cache
        set_replay_defaults(*stream)
    if previous is not None and previous is not cache:
        _close_quietly(previous)
    logger.info("semcache: default cache is %s", cache.location)
    return cache


def get_default_cache() -> Any:
    """The current default cache, or None when none is set (or it was disabled)."""
    return _default


def set_default_cache(cache: Any) -> Any:
    """Make an already opened cache the default (None unsets); returns the previous one.

    The previous default is NOT closed: whoever set it owns it.
    """
    global _default
    with _lock:
        previous, _default = _default, cache
    return previous


def cache_stats() -> dict[str, Any]:
    """``stats()`` of the default cache; when caching is disabled, the same keys, all zero
    (``embedder`` None)."""
    cache = _default
    if cache is None:
        return {**dict.fromkeys(STAT_COUNTERS, 0), "hit_rate": 0.0, "file_bytes": 0,
                "embedder": None}
    return dict(cache.stats())


def clear_cache() -> int:
    """Delete every entry of the default cache; returns how many (0 when disabled)."""
    cache = _default
    if cache is None:
        return 0
    return int(cache.clear() or 0)


def disable_cache() -> None:
    """Stop caching through the default cache, and close it. Idempotent."""
    global _default
    with _lock:
        previous, _default = _default, None
    if previous is not None:
        _close_quietly(previous)


def _close_quietly(cache: Any) -> None:
    try:
        cache.close()
    except Exception as exc:  # closing must not break the caller's (re)configuration
        logger.warning("semcache: closing the previous default cache failed: %s", exc)


__all__ = [
    "cache_stats",
    "clear_cache",
    "default_cache_path",
    "disable_cache",
    "get_default_cache",
    "init_cache",
    "set_default_cache",
]
