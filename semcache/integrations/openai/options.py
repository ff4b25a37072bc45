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
from semcache.integrations.streaming import STRATEGIES, replay_settings, split_text
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
    """None: the cache's ``stream_chunk_strategy`` attribute if it has one, else words."""
    stream_chunk_length: int | None = None
    """None: the cache's ``stream_chunk_length`` attribute if it has one, else 8."""

    def replay_settings(self, cache: RequestCache) -> tuple[str, int]:
        """How cached answers are split when replayed as a stream.

        ``init_cache(stream_chunk_strategy=...)`` keeps working: a cache that carries the
        attributes supplies the defaults.
        """
        return replay_settings(cache, self.stream_chunk_strategy, self.stream_chunk_length)


def _check_chunking(strategy: Any, length: Any) -> None:
    if strategy is not None and strategy not in STRATEGIES:
        raise InvalidInputError(
            f"wrap() stream_chunk_strategy must be one of {', '.join(STRATEGIES)}; "
            f"got {strategy!r}"
        )
    if length is not None:
        try:
            split_text("", DEFAULT_CHUNK_STRATEGY, length)
        except (InvalidInputError, InvalidTypeError) as exc:
            raise type(exc)(f"wrap(): {exc}") from None


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
