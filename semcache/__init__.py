"""semcache: an embedded, persistent, multi-process semantic cache for LLM applications.

One SQLite file holds the cache; every worker process of an app can open it at once; an
exact tier answers repeated requests in microseconds and a semantic tier answers
paraphrases. See README.md and docs/.
"""

from __future__ import annotations

from semcache.cache import Cache, Entry, Hit, HitKind, open
from semcache.defaults import (
    cache_stats,
    clear_cache,
    disable_cache,
    get_default_cache,
    init_cache,
)
from semcache.errors import (
    CacheClosedError,
    CacheConnectionError,
    CacheFileError,
    CacheNotFoundError,
    ConfigurationError,
    CorruptCacheError,
    DimensionError,
    EmbedderError,
    EmbedderMismatchError,
    EmptyPromptError,
    InvalidInputError,
    InvalidTypeError,
    InvalidVectorError,
    NotASemcacheFileError,
    ReadOnlyCacheError,
    SchemaVersionError,
    SemcacheError,
    SerializationError,
    ThresholdError,
    TooLargeError,
)
from semcache.integrations.base import RequestCache
from semcache.integrations.info import CacheInfo, cache_info
from semcache.integrations.openai import wrap
from semcache.kernels.projection import BinaryEncoder
from semcache.verify import verify

__version__ = "0.1.0"


def _public_module() -> None:
    """Public classes and functions say they live in ``semcache`` (as httpx does), so that
    reprs, tracebacks and docs read ``semcache.Cache``, not the private module that
    defines it."""
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) or callable(obj) and hasattr(obj, "__code__"):
            obj.__module__ = "semcache"


__all__ = [
    "BinaryEncoder",
    "Cache",
    "CacheClosedError",
    "CacheConnectionError",
    "CacheFileError",
    "CacheInfo",
    "CacheNotFoundError",
    "ConfigurationError",
    "CorruptCacheError",
    "DimensionError",
    "EmbedderError",
    "EmbedderMismatchError",
    "EmptyPromptError",
    "Entry",
    "Hit",
    "HitKind",
    "InvalidInputError",
    "InvalidTypeError",
    "InvalidVectorError",
    "NotASemcacheFileError",
    "ReadOnlyCacheError",
    "RequestCache",
    "SchemaVersionError",
    "SemcacheError",
    "SerializationError",
    "ThresholdError",
    "TooLargeError",
    "cache_info",
    "cache_stats",
    "clear_cache",
    "disable_cache",
    "get_default_cache",
    "init_cache",
    "open",
    "verify",
    "wrap",
]

_public_module()
