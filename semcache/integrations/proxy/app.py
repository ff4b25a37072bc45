"""The proxy's ASGI application (Starlette): routes and the worker's lifespan.

Routes: ``GET /`` and ``GET /api/stats`` (the dashboard, :mod:`semcache.dashboard`),
``GET /healthz``, ``GET /metrics``, and everything under ``/v1/`` -
``POST /v1/chat/completions`` and ``POST /v1/responses`` through the cache
(:mod:`.cached`), any other method or path passed through untouched. A path that would
leave the upstream's base under any reading is refused with 400 (:mod:`.paths`).

Lifespan of a worker: open the cache (every worker opens the same file; semcache is
multi-process safe), load its embedder (``cache.warmup()``) so the first request does
not pay for it, open the upstream HTTP client; at shutdown close both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from semcache.integrations.base import RequestCache
from semcache.integrations.pipeline import CHAT, RESPONSES
from semcache.integrations.proxy.cached import serve_cached
from semcache.integrations.proxy.config import ProxyConfig
from semcache.integrations.proxy.logs import limit_worker_logs
from semcache.integrations.proxy.metrics import ProxyMetrics
from semcache.integrations.proxy.paths import UnsafePathError, request_raw_path, upstream_path
from semcache.integrations.proxy.state import ProxyState
from semcache.integrations.proxy.upstream import UpstreamPool

if TYPE_CHECKING:
    from semcache.dashboard.figures import DashboardCache

logger = logging.getLogger("semcache")

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_CACHED = {"chat/completions": CHAT, "responses": RESPONSES}


def _state(request: Request) -> ProxyState:
    state: ProxyState = request.app.state.proxy
    return state


async def _v1(request: Request) -> Response:
    state = _state(request)
    try:
        path = upstream_path(request_raw_path(request.scope))
    except UnsafePathError as exc:  # would leave the upstream base: never forwarded
        logger.debug("semcache proxy: refused a request path (%s)", exc)
        return state.error("passthrough", 400, f"semcache proxy: {exc}",
                           "invalid_request_error", "invalid_path")
    request.state.upstream_path = path
    rules = _CACHED.get(path.strip("/"))
    if request.method == "POST" and rules is not None:
        return await serve_cached(state, request, rules)
    return await state.passthrough(request)


async def _dashboard(request: Request) -> Response:
    """``GET /`` and ``GET /api/stats``: the dashboard of the proxy's cache (in a thread:
    it reads the cache)."""
    dashboard = request.app.state.dashboard
    if dashboard is None:
        return JSONResponse({"error": "the dashboard is off (--no-dashboard)"}, 404)
    reply = await anyio.to_thread.run_sync(dashboard.respond, request.method,
                                           request.url.path, dict(request.headers))
    response = Response(reply.body, status_code=reply.status)
    for name, value in reply.headers:
        response.headers.append(name, value)
    return response


def _make_dashboard(config: ProxyConfig, cache: RequestCache) -> Any:
    """The dashboard of the proxy's cache, or None when it is off. With one namespace per
    API key, namespaces are shown as hashed ids and prompts never (config checks it)."""
    if not config.dashboard:
        return None
    from semcache.dashboard import Dashboard, Gate, load_prices

    gate = Gate(config.dashboard_token_sha256, config.dashboard_loopback_only)
    return Dashboard(cast("DashboardCache", cache), load_prices(config.prices), gate,
                     show_prompts=config.show_prompts, hashed_namespaces=not config.shared)


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _metrics(request: Request) -> Response:
    metrics = _state(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)


def _open_cache(config: ProxyConfig) -> RequestCache:
    import semcache

    cache: RequestCache = semcache.open(config.cache, **config.open_settings())
    return cache


def create_app(config: ProxyConfig, cache: RequestCache | None = None) -> Starlette:
    """The proxy for ``config``.

    Args:
        config: what to serve.
        cache: an open cache to use (the caller closes it); None opens ``config.cache``
            at startup and closes it at shutdown.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = cache is None
        opened = await anyio.to_thread.run_sync(_open_cache, config) if own else cache
        assert opened is not None
        try:
            await anyio.to_thread.run_sync(opened.warmup)
            # One upstream connection per client connection at most (the descriptor
            # budget of .protocol counts on it).
            pool = UpstreamPool(config.upstream_base, config.timeout,
                                min(1000, config.max_connections or 1000))
            try:
                app.state.proxy = ProxyState(config, opened, pool, ProxyMetrics())
                app.state.dashboard = _make_dashboard(config, opened)
                logger.info("semcache proxy ready: upstream %s", config.upstream_display)
                yield
            finally:
                await pool.close()
        finally:
            close: Any = getattr(opened, "close", None)
            if own and callable(close):
                await anyio.to_thread.run_sync(close)

    routes = [
        Route("/", _dashboard, methods=["GET", "HEAD"]),
        Route("/api/stats", _dashboard, methods=["GET", "HEAD"]),
        Route("/healthz", _healthz, methods=["GET", "HEAD"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/v1/{path:path}", _v1, methods=_METHODS),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def app_from_env() -> Starlette:
    """App factory of the worker processes (``uvicorn ...:app_from_env --factory``).

    A worker's log lines are rate-limited (:mod:`.logs`); an app made in-process with
    :func:`create_app` leaves the caller's logging alone."""
    limit_worker_logs()
    return create_app(ProxyConfig.from_env())


__all__ = ["app_from_env", "create_app"]
