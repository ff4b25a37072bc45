"""What one proxy worker holds: its cache, its upstream HTTP client, its metrics.

Also the plain relays: :meth:`ProxyState.passthrough` (everything under ``/v1/`` that is
not cached: status, headers and body untouched) and :meth:`ProxyState.forward` (a cached
route's request that bypasses the cache). Upstream failures become OpenAI-style JSON
errors: 502 when the upstream cannot be reached, 504 when it does not answer in time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from semcache.integrations.base import RequestCache
from semcache.integrations.proxy.calls import call_sites_for
from semcache.integrations.proxy.config import ProxyConfig
from semcache.integrations.proxy.http import client_headers, error_body, upstream_headers
from semcache.integrations.proxy.metrics import ProxyMetrics
from semcache.integrations.proxy.upstream import UPSTREAM_ERRORS, UpstreamPool, is_timeout
from semcache.integrations.streaming import replay_settings

logger = logging.getLogger("semcache")

#: The cached routes, as paths below the upstream base.
_CACHED_PATHS = ("/chat/completions", "/responses")


class ProxyState:
    """The cache, upstream pool and metrics of one worker (see :mod:`.app`)."""

    def __init__(self, config: ProxyConfig, cache: RequestCache, client: UpstreamPool,
                 metrics: ProxyMetrics) -> None:
        self.config = config
        self.cache = cache
        self.client = client
        self.metrics = metrics
        self.calls = call_sites_for(str(getattr(cache, "location", "")))

    def replay_settings(self) -> tuple[str, int]:
        """How cached answers are split when replayed as a stream."""
        config = self.config
        return replay_settings(config.stream_chunk_strategy, config.stream_chunk_length)

    def error(self, endpoint: str, status: int, message: str, kind: str,
              code: str | None = None) -> Response:
        """An error answered by the proxy itself (counted as ``result="error"``)."""
        self.metrics.record(endpoint, "error")
        return Response(error_body(message, kind, code), status_code=status,
                        media_type="application/json")

    def _url(self, request: Request) -> str:
        # The path checked and normalized by the route (see .paths), never the raw one.
        tail: str = request.state.upstream_path
        query = request.url.query
        return self.config.upstream_base + tail + (f"?{query}" if query else "")

    def upstream_failure(self, endpoint: str, exc: BaseException) -> Response:
        """The 504 (too slow) or 502 (unreachable, broke off) answering ``exc``."""
        where = self.config.upstream_display
        if is_timeout(exc):
            logger.warning("semcache proxy: upstream %s timed out (%s)", where,
                           type(exc).__name__)
            return self.error(endpoint, 504, f"semcache proxy: the upstream {where} did not "
                              f"answer in time ({type(exc).__name__})", "upstream_error",
                              "upstream_timeout")
        # The client library's message can quote the URL, credentials included: only its type is shown.
        logger.warning("semcache proxy: upstream %s unreachable (%s)", where,
                       type(exc).__name__)
        return self.error(endpoint, 502, f"semcache proxy: the upstream {where} is "
                          f"unreachable ({type(exc).__name__})", "upstream_error",
                          "upstream_unreachable")

    async def send(self, request: Request, content: bytes | None, *,
                   decoded: bool = True) -> aiohttp.ClientResponse | Response:
        """Send ``request`` (with ``content`` as its body) upstream; ``decoded``: a
        compressed answer is decoded (False: relayed as it came).

        Returns the upstream's response (its body still to read; the caller releases
        it), or the proxy's own 502/504 error response.
        """
        cached_route = request.state.upstream_path.rstrip("/") in _CACHED_PATHS
        headers = upstream_headers(request.headers.items(), cached_route=cached_route)
        try:
            return await self.client.send(request.method, self._url(request), headers,
                                          content, decompress=decoded)
        except UPSTREAM_ERRORS as exc:  # connect errors, timeouts, protocol errors
            return self.upstream_failure(_endpoint(request), exc)

    async def read_body(self, endpoint: str, upstream: aiohttp.ClientResponse) -> bytes | Response:
        """The whole body of ``upstream``, its connection released; or the 502/504 answering
        an upstream that broke off, or was too slow, before the end of its body."""
        try:
            return await upstream.read()
        except UPSTREAM_ERRORS as exc:
            return self.upstream_failure(endpoint, exc)
        finally:
            upstream.release()

    async def _relay(self, request: Request, content: bytes | None, *, decoded: bool,
                     extra: dict[str, str]) -> Response:
        upstream = await self.send(request, content, decoded=decoded)
        if isinstance(upstream, Response):
            return upstream
        headers = {**client_headers(upstream.headers.items(), decoded=decoded), **extra}
        return StreamingResponse(_closing(upstream), status_code=upstream.status,
                                 headers=headers)

    async def forward(self, request: Request, content: bytes, endpoint: str) -> Response:
        """A cached route's request that bypasses the cache (``X-Semcache: bypass``)."""
        self.metrics.record(endpoint, "bypass")
        return await self._relay(request, content, decoded=True, extra={"x-semcache": "bypass"})

    async def passthrough(self, request: Request) -> Response:
        """Anything else under ``/v1/``: forwarded and relayed untouched."""
        self.metrics.record("passthrough", "passthrough")
        body = await request.body()
        return await self._relay(request, body, decoded=False, extra={})


def _endpoint(request: Request) -> str:
    path = request.state.upstream_path.rstrip("/")
    if request.method == "POST" and path == _CACHED_PATHS[0]:
        return "chat.completions"
    if request.method == "POST" and path == _CACHED_PATHS[1]:
        return "responses"
    return "passthrough"


async def _closing(upstream: aiohttp.ClientResponse) -> AsyncIterator[Any]:
    """The upstream's body as it arrives; its connection is released at the end (closed,
    not reused, when the body was not read to its end)."""
    try:
        async for chunk in upstream.content.iter_any():
            yield chunk
    finally:
        upstream.release()


__all__ = ["ProxyState"]
