"""The cached endpoints of the proxy: ``POST /v1/chat/completions`` and ``POST /v1/responses``.

Same keys, scopes, controls and store rules as ``semcache.wrap`` - both go through
:mod:`semcache.integrations.pipeline`. :func:`serve_cached` is the proxy's one miss path
("lookup -> on miss call the upstream -> store").

* A hit is answered from the cache: JSON, or with ``"stream": true`` Server-Sent Events
  exactly as the upstream sends them (chat: ``data: {chunk}`` lines then
  ``data: [DONE]``; Responses: ``event: <type>`` + ``data: {event}``).
* A miss is forwarded; a JSON answer is stored before it is returned (its entry id in
  ``X-Semcache-Entry``); a live stream is relayed chunk by chunk as it arrives and stored
  only when the upstream finished it and the client received all of it.
* Upstream errors (any status but 200) are relayed as they are, never stored.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from semcache.errors import SemcacheError
from semcache.integrations.base import CachedAnswer
from semcache.integrations.chat_format import ChunkAccumulator, completion_chunk_dicts
from semcache.integrations.info import info_from_hit, info_headers, miss_info
from semcache.integrations.pipeline import (
    CHAT,
    ApiRules,
    Plan,
    claim_for_async,
    lookup,
    plan_request,
    recheck,
    store,
)
from semcache.integrations.proxy.http import (
    SSEParser,
    client_headers,
    request_control,
    request_namespace,
    sse_data,
)
from semcache.integrations.proxy.state import ProxyState
from semcache.integrations.proxy.upstream import UPSTREAM_ERRORS
from semcache.integrations.responses_format import ResponseCollector, response_event_dicts

logger = logging.getLogger("semcache")


def _bad_request(state: ProxyState, rules: ApiRules, message: str, code: str) -> Response:
    return state.error(rules.name, 400, message, "invalid_request_error", code)


def _replay(state: ProxyState, plan: Plan, data: Any, body: dict[str, Any]) -> bytes:
    """A cached answer as the SSE body the upstream would have streamed."""
    strategy, length = state.replay_settings()
    if plan.rules is CHAT:
        options = body.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = completion_chunk_dicts(data, strategy, length, include_usage=usage)
        return sse_data(chunks, named=False, done=True)
    return sse_data(response_event_dicts(data, strategy, length), named=True, done=False)


def hit_response(state: ProxyState, plan: Plan, hit: CachedAnswer,
                 body: dict[str, Any]) -> Response:
    """The response for a cache hit (JSON or replayed SSE)."""
    info = info_from_hit(hit)
    state.metrics.record(plan.rules.name, info.status)
    if hit.tokens:
        state.metrics.tokens_saved.inc(hit.tokens)
    headers = info_headers(info)
    if body.get("stream"):
        payload = _replay(state, plan, hit.response, body)
        return Response(payload, media_type="text/event-stream",
                        headers={**headers, "cache-control": "no-cache"})
    return Response(orjson.dumps(hit.response), media_type="application/json", headers=headers)


def _embedded(hit: CachedAnswer | None) -> bool:
    """True when a lookup went past the exact tier (a miss, or a semantic hit): what a
    lookup's place (loop or thread) is decided by (:mod:`.calls`)."""
    return hit is None or hit.kind != "exact"


async def _timed_lookup(state: ProxyState, plan: Plan) -> CachedAnswer | None:
    started = time.perf_counter()
    hit = await state.calls.run("lookup", lookup, plan, slow=_embedded)
    state.metrics.lookup_latency.observe(time.perf_counter() - started)
    return hit


async def _store(plan: Plan, data: Any) -> int | None:
    """Store in a worker thread, always: a store waits for the file's write lock, which
    another process may hold for seconds (an import, a vacuum) - the event loop, and every
    other request of this worker, must not wait with it. (Lookups and claims never wait
    for that lock: they run on the loop while quick, see :mod:`.calls`.)"""
    if not isinstance(data, dict):
        return None
    return await anyio.to_thread.run_sync(store, plan, data)


async def relay_answer(state: ProxyState, request: Request, plan: Plan, content: bytes,
                       result: str) -> Response:
    """Forward a non-streamed miss; store a 200 JSON answer before returning it."""
    name = plan.rules.name
    started = time.perf_counter()
    upstream = await state.send(request, content)
    if isinstance(upstream, Response):
        return upstream
    body = await state.read_body(name, upstream)
    if isinstance(body, Response):
        return body
    state.metrics.upstream_latency.labels(endpoint=name).observe(time.perf_counter() - started)
    entry = None
    if upstream.status == 200:
        try:
            entry = await _store(plan, orjson.loads(body))
        except orjson.JSONDecodeError:
            logger.warning("semcache proxy: upstream answered 200 with a body that is not JSON")
    info = miss_info(entry, plan.entry_namespace(), looked_up=result == "miss")
    state.metrics.record(name, info.status)
    headers = {**client_headers(upstream.headers.items(), decoded=True), **info_headers(info)}
    return Response(body, status_code=upstream.status, headers=headers)


async def relay_stream(state: ProxyState, request: Request, plan: Plan, content: bytes,
                       result: str) -> Response:
    """Forward a streamed miss chunk by chunk; store the answer once it completed."""
    name = plan.rules.name
    started = time.perf_counter()
    upstream = await state.send(request, content)
    if isinstance(upstream, Response):
        return upstream
    state.metrics.upstream_latency.labels(endpoint=name).observe(time.perf_counter() - started)
    headers = client_headers(upstream.headers.items(), decoded=True)
    info = miss_info(None, plan.entry_namespace(), looked_up=result == "miss")
    state.metrics.record(name, info.status)
    headers.update(info_headers(info))
    if upstream.status != 200:
        body = await state.read_body(name, upstream)
        if isinstance(body, Response):
            return body
        return Response(body, status_code=upstream.status, headers=headers)
    return StreamingResponse(_recorded(plan, upstream), status_code=200, headers=headers)


async def _recorded(plan: Plan, upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Relay the upstream's bytes; after the last one reached the client, store the answer.

    The code after the loop only runs when the client asked for more after the final
    chunk: a client that disconnected midway (or an upstream that broke off, which raises
    here and aborts the client's connection too) stores nothing.
    """
    accumulator: ChunkAccumulator | ResponseCollector = (
        ChunkAccumulator() if plan.rules is CHAT else ResponseCollector()
    )
    parser = SSEParser()
    try:
        async for chunk in upstream.content.iter_any():
            for payload in parser.feed(chunk):
                accumulator.add(payload)
            yield chunk
    except UPSTREAM_ERRORS as exc:
        logger.warning("semcache proxy: upstream stream broke off (%s); not stored",
                       type(exc).__name__)
        raise
    finally:
        upstream.release()
    answer = accumulator.result()
    if answer is not None:
        await _store(plan, answer)


async def serve_cached(state: ProxyState, request: Request, rules: ApiRules) -> Response:
    """One cached request: parse and check it, look it up, on a miss forward and store."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _bad_request(state, rules, f"semcache proxy: the request body is not valid "
                            f"JSON ({exc})", "invalid_json")
    if not isinstance(body, dict):
        return _bad_request(state, rules, "semcache proxy: the request body must be a JSON "
                            f"object, got {type(body).__name__}", "invalid_json")
    has_control = "semcache" in body
    try:
        control = request_control(request.headers, body.pop("semcache", None))
        namespace = request_namespace(request.headers, control, state.config.shared)
    except SemcacheError as exc:
        return _bad_request(state, rules, f"semcache proxy: {exc}", "invalid_semcache_control")
    content = orjson.dumps(body) if has_control else raw
    try:
        # The namespace is final (the tenant's): the control's own must not replace it.
        if control.namespace is not None:
            control = dataclasses.replace(control, namespace=None)
        plan = plan_request(state.cache, rules, body, control, namespace=namespace,
                            exact_only=state.config.exact_only)
    except SemcacheError as exc:
        logger.debug("semcache proxy: request not cacheable (%s); passed through", exc)
        plan = None
    if plan is None:
        return await state.forward(request, content, rules.name)
    hit = None if control.no_cache else await _timed_lookup(state, plan)
    if hit is not None and rules.is_answer(hit.response):
        return hit_response(state, plan, hit, body)
    result = "bypass" if control.no_cache else "miss"
    if body.get("stream"):  # streamed misses are relayed as they come, not coalesced
        return await relay_stream(state, request, plan, content, result)
    # MISS: identical concurrent misses are coalesced across the proxy's workers: the first
    # request fetches, the others wait for its answer and look the cache up again.
    claim = await claim_for_async(plan, functools.partial(state.calls.run, "claim"))
    try:
        hit = None if claim is None else await state.calls.run("recheck", recheck, plan, claim)
        if hit is not None and rules.is_answer(hit.response):
            return hit_response(state, plan, hit, body)
        return await relay_answer(state, request, plan, content, result)
    finally:
        if claim is not None:
            claim.release()


__all__ = ["hit_response", "relay_answer", "relay_stream", "serve_cached"]
