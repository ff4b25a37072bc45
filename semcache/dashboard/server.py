"""``semcache ui CACHE``: the dashboard of any cache, served by the standard library.

No extra to install: ``http.server`` carries the two GET routes of :mod:`.app`. The cache
is opened read-only (the dashboard never writes to it) and without its embedder. Bounded
by construction: requests with a body are refused unread, request lines and headers are
capped by ``http.server`` (64 KiB, 100 headers), every connection has a socket timeout, at
most :data:`MAX_CONCURRENT` requests are handled at once (further connections wait in the
listen backlog), and figures are read from the cache at most every two seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from semcache.dashboard.app import Dashboard, Reply
from semcache.dashboard.auth import Gate, check_bind, is_loopback, resolve_token
from semcache.dashboard.prices import load_prices

log = logging.getLogger("semcache")

#: Default port of ``semcache ui``.
DEFAULT_PORT = 8089
#: Seconds a client may take to send its request (and to read the answer).
SOCKET_TIMEOUT_S = 10.0
#: Requests handled at the same time.
MAX_CONCURRENT = 16


class _Handler(BaseHTTPRequestHandler):
    server_version = "semcache-dashboard"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_S

    def version_string(self) -> str:
        return self.server_version

    @property
    def dashboard(self) -> Dashboard:
        """The dashboard of the :class:`DashboardServer` this handler answers for."""
        server = self.server
        assert isinstance(server, DashboardServer)
        return server.dashboard

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _refuse(self) -> None:
        """Any other method: 405, the request's body left unread."""
        self.close_connection = True
        self._send(self.dashboard.respond(self.command, "/", {}), send_body=True)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _refuse  # noqa: N815

    def _answer(self, send_body: bool) -> None:
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or \
                self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(Reply(413, (("Content-Type", "text/plain"),), b"no request body\n"),
                       send_body)
            return
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._send(self.dashboard.respond(self.command, path, headers), send_body)

    def _send(self, reply: Reply, send_body: bool) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if send_body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The request line and status only (http.server never logs headers, so the
        # Authorization header - the token - never reaches a log).
        log.debug("semcache ui: %s - %s", self.address_string(), format % args)


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server for one :class:`Dashboard`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()  # the listen backlog holds further connections meanwhile
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


def add_ui_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``semcache ui``."""
    parser.add_argument("path", help="cache file or postgresql:// URL")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--show-prompts", action="store_true",
                        help="show prompt and answer text (hidden by default)")
    parser.add_argument("--dashboard-token", metavar="TOKEN",
                        help="require this bearer token (default: $SEMCACHE_DASHBOARD_TOKEN; "
                             "needed on any address but loopback)")
    parser.add_argument("--prices", metavar="FILE",
                        help="JSON price table merged over the built-in one "
                             "(docs/operations.md)")


def run_ui(args: argparse.Namespace) -> int:
    """``semcache ui`` with parsed arguments: serve until interrupted."""
    from semcache.cli.common import open_cache

    token = resolve_token(args.dashboard_token)
    check_bind("semcache ui", args.host, token)
    if not 0 <= args.port <= 65535:
        from semcache.cli.common import UsageError

        raise UsageError(f"--port must be in [0, 65535]; got {args.port}")
    prices = load_prices(args.prices)
    cache = open_cache(args)
    try:
        dashboard = Dashboard(cache, prices, Gate.for_bind(args.host, token),
                              show_prompts=args.show_prompts)
        with DashboardServer((args.host, args.port), dashboard) as server:
            where = server.url if is_loopback(args.host) or token is None else \
                f"{server.url} (token required)"
            if getattr(args, "json", False):
                print(json.dumps({"path": args.shown, "url": server.url,
                                  "token_required": token is not None}), flush=True)
            else:
                print(f"semcache dashboard of {args.shown}: {where}  (Ctrl-C to stop)",
                      flush=True)
            try:
                server.serve_forever(poll_interval=0.5)
            except KeyboardInterrupt:
                print("semcache ui: stopped", file=sys.stderr)
    finally:
        cache.close()
    return 0


__all__ = ["DEFAULT_PORT", "DashboardServer", "add_ui_arguments", "run_ui"]
