"""One SDK call through the cache: look up, on a miss call the API, store the answer.

:func:`run_sync` and :func:`run_async` are the only places where the wrapper's miss path
lives ("lookup -> on miss call upstream -> store"); every cached method
(``chat.completions.create`` / ``.parse``, ``responses.create``, their
``with_raw_response`` twins) goes through them. At the point marked ``MISS`` identical
concurrent misses are coalesced (``Cache.claim``).

Async clients: cache lookups and stores run in ``asyncio.to_thread`` because a semantic
lookup embeds the prompt (milliseconds of CPU, or an HTTP call for remote embedders) and
SQLite I/O blocks; the event loop is never blocked by the cache.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from semcache.integrations.base import CachedAnswer, RequestCache
from semcache.integrations.info import CacheInfo, attach_info, info_from_hit, miss_info
from semcache.integrations.openai.adapters import ChatAdapter
from semcache.integrations.openai.options import WrapOptions
from semcache.integrations.openai.raw import CachedRawResponse
from semcache.integrations.openai.streams import (
    AsyncRecordingStream,
    AsyncReplayStream,
    RecordingStream,
    ReplayStream,
)
from semcache.integrations.pipeline import (
    Plan,
    claim_for,
    claim_for_async,
    lookup,
    parse_control,
    plan_request,
    recheck,
    store,
)


@dataclass(frozen=True)
class Binding:
    """What one cached SDK method needs: the cache, the wrap options, the API adapter."""

    cache: RequestCache | None
    """None: the process-wide default cache, looked up at every call."""
    options: WrapOptions
    adapter: ChatAdapter
    is_async: bool = False
    raw: bool = False
    """The method is a ``with_raw_response`` one: it returns the HTTP response object."""


def materialize(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn one-shot iterators (generators of messages/tools) into lists.

    The request is read twice - once for the key, once by the SDK - so an iterator would
    arrive empty at the API.
    """
    out = {}
    for name, value in kwargs.items():
        if isinstance(value, Iterator) and not isinstance(value, (str, bytes, dict)):
            value = list(value)
        out[name] = value
    return out


def _resolve_cache(cache: RequestCache | None) -> RequestCache | None:
    if cache is not None:
        return cache
    from semcache.defaults import get_default_cache

    default: RequestCache | None = get_default_cache()
    return default


def prepare(binding: Binding, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Plan | None]:
    """Split the caller's kwargs into (what the SDK gets, the cache plan or None)."""
    control = parse_control(kwargs.pop("semcache", None))
    request = materialize(kwargs)
    cache = _resolve_cache(binding.cache)
    if cache is None or (binding.raw and request.get("stream")):
        return request, None  # raw streams are passed through (documented)
    plan = plan_request(
        cache,
        binding.adapter.rules,
        binding.adapter.key_request(request),
        control,
        namespace=binding.options.namespace,
        ttl=binding.options.ttl,
        exact_only=binding.options.exact_only,
        from_default=binding.cache is None,
    )
    return request, plan


def serve_hit(binding: Binding, plan: Plan, hit: CachedAnswer, request: dict[str, Any]) -> Any:
    """The SDK object (or replay stream) for a hit; None if the entry is unusable."""
    adapter = binding.adapter
    result = adapter.from_data(hit.response)
    if result is None:
        return None
    info = info_from_hit(hit)
    if request.get("stream"):
        strategy, length = binding.options.replay_settings(plan.cache)
        items = adapter.replay(hit.response, strategy, length, request)
        return (AsyncReplayStream if binding.is_async else ReplayStream)(items, info)
    attach_info(result, info)
    return CachedRawResponse(result, info) if binding.raw else result


def _miss_info(plan: Plan, entry_id: int | None) -> CacheInfo:
    return miss_info(entry_id, plan.entry_namespace(), looked_up=not plan.control.no_cache)


def record_stream(binding: Binding, plan: Plan, stream: Any) -> Any:
    """Pass a live stream through; store its answer once it completed."""
    if plan.control.no_store:
        return attach_info(stream, _miss_info(plan, None))
    adapter = binding.adapter

    def on_complete(data: dict[str, Any]) -> CacheInfo:
        return _miss_info(plan, store(plan, data))

    cls = AsyncRecordingStream if binding.is_async else RecordingStream
    return cls(stream, adapter.new_accumulator(), adapter.finish, on_complete,
               _miss_info(plan, None))


def _answer_of(binding: Binding, result: Any) -> Any:
    """The SDK object inside ``result`` (a raw response is parsed; the SDK keeps it)."""
    return result.parse() if binding.raw else result


def store_answer(binding: Binding, plan: Plan, result: Any, answer: Any) -> Any:
    """Store a non-streamed answer and attach its info; returns ``result``."""
    data = binding.adapter.dump(answer)
    info = _miss_info(plan, None if data is None else store(plan, data))
    attach_info(answer, info)
    return attach_info(result, info) if result is not answer else result


def run_sync(binding: Binding, kwargs: dict[str, Any], call: Callable[..., Any]) -> Any:
    """``call(**request)`` through the cache (a sync SDK method)."""
    request, plan = prepare(binding, kwargs)
    if plan is None:
        return call(**request)
    hit = lookup(plan)
    if hit is not None:
        served = serve_hit(binding, plan, hit, request)
        if served is not None:
            return served
    if request.get("stream"):  # streamed misses are relayed as they come, not coalesced
        return record_stream(binding, plan, call(**request))
    # MISS: identical concurrent misses are coalesced: the first caller fetches, the others
    # wait for its answer and look the cache up again.
    claim = claim_for(plan)
    try:
        hit = recheck(plan, claim)
        if hit is not None:
            served = serve_hit(binding, plan, hit, request)
            if served is not None:
                return served
        result = call(**request)
        return store_answer(binding, plan, result, _answer_of(binding, result))
    finally:
        if claim is not None:
            claim.release()


async def run_async(
    binding: Binding, kwargs: dict[str, Any], call: Callable[..., Awaitable[Any]]
) -> Any:
    """``await call(**request)`` through the cache (an async SDK method)."""
    request, plan = prepare(binding, kwargs)
    if plan is None:
        return await call(**request)
    hit = await asyncio.to_thread(lookup, plan)
    if hit is not None:
        served = serve_hit(binding, plan, hit, request)
        if served is not None:
            return served
    if request.get("stream"):  # streamed misses are relayed as they come, not coalesced
        return record_stream(binding, plan, await call(**request))
    # MISS: identical concurrent misses are coalesced (waiting happens in a worker thread).
    claim = await claim_for_async(plan)
    try:
        hit = None if claim is None else await asyncio.to_thread(recheck, plan, claim)
        if hit is not None:
            served = serve_hit(binding, plan, hit, request)
            if served is not None:
                return served
        result = await call(**request)
        answer = _answer_of(binding, result)
        if inspect.isawaitable(answer):
            answer = await answer
        return await asyncio.to_thread(store_answer, binding, plan, result, answer)
    finally:
        if claim is not None:
            claim.release()


__all__ = ["Binding", "materialize", "prepare", "record_stream", "run_async", "run_sync", "serve_hit",
           "store_answer"]
