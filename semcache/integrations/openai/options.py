"""The options of :func:`semcache.wrap`, checked once when the client is wrapped.

Values are checked with the same rules as ``Cache.put`` / ``semcache.open``
(:mod:`semcache.validation`): ``ttl=float("inf")`` and a 300-character namespace are
refused here exactly as ``put`` refuses them, and ``"   "`` is accepted as ``put``
accepts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from semcache.errors import InvalidInputError, InvalidTypeError
from semcache.integrations.base import RequestCache
from semcache.integrations.pipeline import check_namespace_option, check_ttl_option
from semcache.integrations.streaming import check_stream_options, replay_settings
from semcache.settings import UNSET

#: Keyword options accepted by :func:`semcache.wrap`.
WRAP_OPTIONS: frozenset[str] = frozenset(
    {"namespace", "ttl", "exact_only", "stream_chunk_strategy", "stream_chunk_length"}
)
DEFAULT_CHUNK_STRATEGY = "words"
DEFAULT_CHUNK_LENGTH = 8


@dataclass(frozen=True)
class WrapOptions:
    """Per-wrapper settings (from ``wrap(client, cache, **options)``)."""

    namespace: str | None = None
    ttl: Any = UNSET
    exact_only: bool = False
    stream_chunk_strategy: str | None = None
    """None: the process-wide setting of ``init_cache`` (words by default)."""
    stream_chunk_length: int | None = None
    """None: the process-wide setting of ``init_cache`` (8 by default)."""

    def replay_settings(self, cache: RequestCache) -> tuple[str, int]:
        """How cached answers are split when replayed as a stream."""
        return replay_settings(self.stream_chunk_strategy, self.stream_chunk_length)


def _check_chunking(strategy: Any, length: Any) -> None:
    check_stream_options(DEFAULT_CHUNK_STRATEGY if strategy is None else strategy,
                         DEFAULT_CHUNK_LENGTH if length is None else length)


def parse_wrap_options(options: dict[str, Any]) -> WrapOptions:
    """Check the keyword options of ``wrap``.

    Raises:
        InvalidInputError: an unknown option or a value ``Cache.put`` would refuse.
        InvalidTypeError: a value of the wrong type.
    """
    unknown = sorted(set(options) - WRAP_OPTIONS)
    if unknown:
        raise InvalidInputError(
            f"unknown wrap() option(s) {', '.join(unknown)}; expected {sorted(WRAP_OPTIONS)}"
        )
    exact_only = options.get("exact_only", False)
    if not isinstance(exact_only, bool):
        raise InvalidTypeError(f"wrap() 'exact_only' must be a bool, got {exact_only!r}")
    strategy = options.get("stream_chunk_strategy")
    length = options.get("stream_chunk_length")
    _check_chunking(strategy, length)
    return WrapOptions(
        namespace=check_namespace_option(options.get("namespace"), "wrap()"),
        ttl=check_ttl_option(options.get("ttl", UNSET), "wrap()"),
        exact_only=exact_only,
        stream_chunk_strategy=strategy,
        stream_chunk_length=length,
    )


__all__ = ["WRAP_OPTIONS", "WrapOptions", "parse_wrap_options"]
