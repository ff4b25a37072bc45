"""The wrapped SDK resources: ``chat.completions`` and ``responses`` (sync and async).

Cached methods:

* ``chat.completions.create`` and ``responses.create`` (streamed or not);
* ``chat.completions.parse`` (structured outputs): cached as the plain completion and
  parsed again with the caller's ``response_format`` on every hit (passed through if the
  installed SDK lacks its parsing helpers);
* ``with_raw_response.create`` of both: a miss returns the SDK's raw response (stored
  from its ``parse()``), a hit a :class:`~semcache.integrations.openai.raw.CachedRawResponse`;
  streamed raw calls are passed through uncached.

Everything else (``retrieve``, ``list``, ``delete``, ``with_streaming_response``,
``responses.parse`` / ``stream`` / ``input_items``...) is the SDK's own object, untouched.
"""

from __future__ import annotations

from typing import Any

from semcache.integrations.base import RequestCache
from semcache.integrations.openai.adapters import (
    CHAT_ADAPTER,
    RESPONSES_ADAPTER,
    ChatAdapter,
    ParsedChatAdapter,
    parse_supported,
)
from semcache.integrations.openai.options import WrapOptions
from semcache.integrations.openai.runner import Binding, materialize, run_async, run_sync


class _Proxy:
    """Forward every attribute not defined here to the wrapped object."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._target)) | set(super().__dir__()))


class _Resource(_Proxy):
    """A wrapped SDK resource bound to a cache and the wrap options."""

    def __init__(self, target: Any, cache: RequestCache | None, options: WrapOptions,
                 is_async: bool) -> None:
        super().__init__(target)
        object.__setattr__(self, "_semcache_args", (cache, options, is_async))

    def _binding(self, adapter: ChatAdapter, raw: bool = False) -> Binding:
        cache, options, is_async = self._semcache_args
        return Binding(cache, options, adapter, is_async=is_async, raw=raw)

    def _sub(self, cls: type[_Resource], target: Any) -> Any:
        return cls(target, *self._semcache_args)


class CachedRawCompletions(_Resource):
    """``chat.completions.with_raw_response`` of a wrapped sync client."""

    def create(self, **kwargs: Any) -> Any:
        """``with_raw_response.create`` with caching (see the module docstring)."""
        return run_sync(self._binding(CHAT_ADAPTER, raw=True), kwargs, self._target.create)


class AsyncCachedRawCompletions(_Resource):
    """``chat.completions.with_raw_response`` of a wrapped async client."""

    async def create(self, **kwargs: Any) -> Any:
        """``with_raw_response.create`` with caching (see the module docstring)."""
        return await run_async(self._binding(CHAT_ADAPTER, raw=True), kwargs, self._target.create)


class CachedCompletions(_Resource):
    """``chat.completions`` of a wrapped sync client."""

    def create(self, **kwargs: Any) -> Any:
        """``Completions.create`` with caching; same arguments plus ``semcache={...}``."""
        return run_sync(self._binding(CHAT_ADAPTER), kwargs, self._target.create)

    def parse(self, **kwargs: Any) -> Any:
        """``Completions.parse`` with caching; same arguments plus ``semcache={...}``."""
        if not parse_supported():
            kwargs.pop("semcache", None)
            return self._target.parse(**kwargs)
        kwargs = materialize(kwargs)
        return run_sync(self._binding(ParsedChatAdapter(kwargs)), kwargs, self._target.parse)

    @property
    def with_raw_response(self) -> CachedRawCompletions:
        """Raw-response twin; ``create`` is cached (see the module docstring)."""
        return self._sub(CachedRawCompletions, self._target.with_raw_response)


class AsyncCachedCompletions(_Resource):
    """``chat.completions`` of a wrapped async client."""

    async def create(self, **kwargs: Any) -> Any:
        """``AsyncCompletions.create`` with caching; same arguments plus ``semcache={...}``."""
        return await run_async(self._binding(CHAT_ADAPTER), kwargs, self._target.create)

    async def parse(self, **kwargs: Any) -> Any:
        """``AsyncCompletions.parse`` with caching; same arguments plus ``semcache={...}``."""
        if not parse_supported():
            kwargs.pop("semcache", None)
            return await self._target.parse(**kwargs)
        kwargs = materialize(kwargs)
        adapter = ParsedChatAdapter(kwargs)
        return await run_async(self._binding(adapter), kwargs, self._target.parse)

    @property
    def with_raw_response(self) -> AsyncCachedRawCompletions:
        """Raw-response twin; ``create`` is cached (see the module docstring)."""
        return self._sub(AsyncCachedRawCompletions, self._target.with_raw_response)


class CachedRawResponses(_Resource):
    """``responses.with_raw_response`` of a wrapped sync client."""

    def create(self, **kwargs: Any) -> Any:
        """``with_raw_response.create`` with caching (see the module docstring)."""
        return run_sync(self._binding(RESPONSES_ADAPTER, raw=True), kwargs, self._target.create)


class AsyncCachedRawResponses(_Resource):
    """``responses.with_raw_response`` of a wrapped async client."""

    async def create(self, **kwargs: Any) -> Any:
        """``with_raw_response.create`` with caching (see the module docstring)."""
        binding = self._binding(RESPONSES_ADAPTER, raw=True)
        return await run_async(binding, kwargs, self._target.create)


class CachedResponses(_Resource):
    """``client.responses`` of a wrapped sync client."""

    def create(self, **kwargs: Any) -> Any:
        """``Responses.create`` with caching; same arguments plus ``semcache={...}``."""
        return run_sync(self._binding(RESPONSES_ADAPTER), kwargs, self._target.create)

    @property
    def with_raw_response(self) -> CachedRawResponses:
        """Raw-response twin; ``create`` is cached (see the module docstring)."""
        return self._sub(CachedRawResponses, self._target.with_raw_response)


class AsyncCachedResponses(_Resource):
    """``client.responses`` of a wrapped async client."""

    async def create(self, **kwargs: Any) -> Any:
        """``AsyncResponses.create`` with caching; same arguments plus ``semcache={...}``."""
        return await run_async(self._binding(RESPONSES_ADAPTER), kwargs, self._target.create)

    @property
    def with_raw_response(self) -> AsyncCachedRawResponses:
        """Raw-response twin; ``create`` is cached (see the module docstring)."""
        return self._sub(AsyncCachedRawResponses, self._target.with_raw_response)


class CachedChat(_Proxy):
    """``client.chat`` of a wrapped client: only ``completions`` is replaced."""

    def __init__(self, target: Any, completions: Any) -> None:
        super().__init__(target)
        object.__setattr__(self, "completions", completions)


__all__ = [
    "AsyncCachedCompletions",
    "AsyncCachedRawCompletions",
    "AsyncCachedRawResponses",
    "AsyncCachedResponses",
    "CachedChat",
    "CachedCompletions",
    "CachedRawCompletions",
    "CachedRawResponses",
    "CachedResponses",
]
