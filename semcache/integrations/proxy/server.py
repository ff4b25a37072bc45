"""``semcache serve``: run the proxy on uvicorn, with one or several worker processes.

Importing this module is cheap (no uvicorn, starlette or aiohttp): the CLI builds its
parser from :func:`add_serve_arguments` even where the ``[serve]`` extra is missing.

Several workers (``--workers N``) are separate processes started by uvicorn; each opens
the same cache file (semcache is built for that) and the configuration reaches them in
the environment (:data:`~.config.CONFIG_ENV`). Their Prometheus metrics are summed
through prometheus-client's multiprocess mode: a fresh ``PROMETHEUS_MULTIPROC_DIR`` is
created for the run (and removed after), unless one is already set.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from semcache.errors import ConfigurationError
from semcache.integrations.proxy.config import CONFIG_ENV, MULTIPROC_ENV, ProxyConfig
from semcache.integrations.streaming import STRATEGIES

APP_FACTORY = "semcache.integrations.proxy.app:app_from_env"


def default_proxy_cache() -> str:
    """``<user cache dir>/semcache/proxy.db`` (directories created)."""
    from semcache.defaults import default_cache_path

    path = Path(default_cache_path()).parent / "proxy.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def serve(config: ProxyConfig, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
          log_level: str = "info", access_log: bool = True) -> None:
    """Serve ``config`` until interrupted (blocks)."""
    try:
        import uvicorn

        from semcache.integrations.proxy import protocol
    except ImportError as exc:  # the [serve] extra is not installed
        raise ConfigurationError(
            "semcache serve needs the [serve] extra: pip install 'semcache-sqlite[serve]'"
        ) from exc
    if workers < 1:
        raise ConfigurationError(f"--workers must be >= 1, got {workers}")
    fd_limit = protocol.raise_descriptor_limit()
    if config.max_connections is None:
        config = dataclasses.replace(config,
                                     max_connections=protocol.default_limits(fd_limit))
    else:
        needed = protocol.descriptors_needed(config.max_connections, fd_limit)
        if needed > fd_limit:
            raise ConfigurationError(
                f"--max-connections {config.max_connections} needs up to {needed} file "
                f"descriptors per worker (a client and an upstream connection each, plus "
                f"the accept backlog), but the limit is {fd_limit}: raise it (ulimit -n) "
                f"or lower --max-connections (at most "
                f"{protocol.default_limits(fd_limit)} fit)")
    assert config.max_connections is not None
    limits = protocol.ConnectionLimits(header_timeout=config.header_timeout,
                                       body_timeout=config.body_timeout,
                                       max_connections=config.max_connections,
                                       burst=protocol.burst(fd_limit))
    # uvicorn calls ``http`` with its config and state for each connection: a class, or
    # this partial binding the limits (picklable, for the worker processes).
    http: Any = functools.partial(protocol.GuardedH11Protocol, limits=limits)
    os.environ[CONFIG_ENV] = config.to_env()
    metrics_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="semcache-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, access_log=access_log, server_header=False,
                    http=http,
                    backlog=protocol.accept_backlog(fd_limit))
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``semcache serve``."""
    parser.add_argument("--upstream", required=True, metavar="URL",
                        help="base URL of the OpenAI-compatible API, as an SDK's base_url "
                             "(e.g. https://api.openai.com/v1)")
    parser.add_argument("--cache", metavar="PATH_OR_URL",
                        help="cache file (default: <user cache dir>/semcache/proxy.db)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes sharing the cache file (1)")
    parser.add_argument("--shared", action="store_true",
                        help="one namespace for every API key (default: one per key)")
    parser.add_argument("--embedder", help="embedder of a new cache file (default: minilm)")
    parser.add_argument("--exact-only", action="store_true", help="no semantic lookups")
    parser.add_argument("--stream-chunk-strategy", choices=STRATEGIES,
                        help="how cached answers are split when replayed as a stream")
    parser.add_argument("--stream-chunk-length", type=int,
                        help="units of that strategy per replayed chunk")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the upstream (600)")
    parser.add_argument("--dashboard-token", metavar="TOKEN",
                        help="token the dashboard (at /) requires (default: "
                             "$SEMCACHE_DASHBOARD_TOKEN; needed on any address but loopback)")
    parser.add_argument("--no-dashboard", action="store_true",
                        help="do not serve the dashboard at / and /api/stats")
    parser.add_argument("--show-prompts", action="store_true",
                        help="show prompt and answer text on the dashboard (needs --shared)")
    parser.add_argument("--prices", metavar="FILE",
                        help="JSON price table merged over the built-in one (cost estimate)")
    parser.add_argument("--header-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="seconds a client has to send a request's headers (5)")
    parser.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="seconds a request body may pause between two reads (30)")
    parser.add_argument("--max-connections", type=int, metavar="N",
                        help="client connections per worker (default: what the "
                             "file-descriptor limit allows, at most 4096)")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--no-access-log", action="store_true", help="no per-request log lines")


def run_from_args(args: argparse.Namespace) -> int:
    """``semcache serve`` with parsed arguments; returns the exit status."""
    from semcache.dashboard.auth import check_bind, is_loopback, resolve_token, token_digest
    from semcache.dashboard.prices import load_prices

    token = None
    if not args.no_dashboard:
        token = resolve_token(args.dashboard_token)
        check_bind("semcache serve", args.host, token,
                   hint="; or serve no dashboard (--no-dashboard)")
        load_prices(args.prices)  # a bad price file is refused now, not by every worker
    config = ProxyConfig(
        upstream=args.upstream,
        cache=args.cache or default_proxy_cache(),
        shared=args.shared,
        embedder=args.embedder,
        exact_only=args.exact_only,
        stream_chunk_strategy=args.stream_chunk_strategy,
        stream_chunk_length=args.stream_chunk_length,
        timeout=args.timeout,
        dashboard=not args.no_dashboard,
        dashboard_token_sha256=None if token is None else token_digest(token),
        dashboard_loopback_only=token is None and is_loopback(args.host),
        show_prompts=args.show_prompts,
        prices=None if args.prices is None else os.path.abspath(args.prices),
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
    )
    # The server opens the cache in its startup, where a bad --cache (not a cache, a
    # server that does not answer, another embedder) ends uvicorn with a traceback and exit
    # status 3: open it once here, so that it is the CLI's one-line error (status 1).
    import semcache

    semcache.open(config.cache, **config.open_settings()).close()
    serve(config, host=args.host, port=args.port, workers=args.workers,
          log_level=args.log_level, access_log=not args.no_access_log)
    return 0


__all__ = ["APP_FACTORY", "add_serve_arguments", "default_proxy_cache", "run_from_args", "serve"]
