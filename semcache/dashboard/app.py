"""The dashboard's two routes, independent of the HTTP server that carries them:
``GET /`` (the page) and ``GET /api/stats`` (the same figures as JSON).

``semcache ui`` serves them with the standard library (:mod:`.server`), ``semcache serve``
from its Starlette app; both call :meth:`Dashboard.respond`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from semcache.dashboard.auth import Gate
from semcache.dashboard.figures import DashboardCache, collect
from semcache.dashboard.page import SECURITY_HEADERS, render_page
from semcache.dashboard.prices import PriceTable

log = logging.getLogger("semcache")

#: Figures are read from the cache at most this often (seconds); requests in between,
#: from any number of browsers, share them.
REUSE_S = 2.0
#: The routes, and what they answer.
PAGE, API = "/", "/api/stats"


@dataclass(frozen=True)
class Reply:
    """An HTTP response: status, headers, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class Dashboard:
    """The dashboard of one cache, with its privacy settings and access rule."""

    def __init__(self, cache: DashboardCache, prices: PriceTable, gate: Gate, *,
                 show_prompts: bool = False, hashed_namespaces: bool = False) -> None:
        if show_prompts and hashed_namespaces:
            raise ValueError("prompts are never shown with hashed (per-key) namespaces")
        self.cache = cache
        self.prices = prices
        self.gate = gate
        self.show_prompts = show_prompts
        self.hashed_namespaces = hashed_namespaces
        self._lock = threading.Lock()
        self._figures: dict[str, Any] | None = None
        self._read_at = 0.0

    def figures(self) -> dict[str, Any]:
        """The current figures (read again when older than :data:`REUSE_S`)."""
        with self._lock:
            now = time.monotonic()
            if self._figures is None or now - self._read_at >= REUSE_S:
                self._figures = collect(self.cache, self.prices, show_prompts=self.show_prompts,
                                        hashed_namespaces=self.hashed_namespaces)
                self._read_at = now
            return self._figures

    def respond(self, method: str, path: str, headers: Mapping[str, str]) -> Reply:
        """The reply to a request (``headers`` with lower-case names). Never raises for
        a cache error: it becomes a 503 whose message names the error's type only."""
        if method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD", (("Allow", "GET, HEAD"),))
        if path not in (PAGE, API):
            return _text(404, "not found: the dashboard is at / and its figures at "
                              "/api/stats")
        denied = self.gate.check(headers)
        if denied is not None:
            return _text(denied.status, denied.message, denied.headers)
        try:
            figures = self.figures()
        except Exception as exc:  # noqa: BLE001 - the page reports, the server goes on
            # semcache's errors name what failed, never a password; others: the type only
            from semcache.errors import SemcacheError

            log.warning("semcache dashboard: reading %s failed: %s", self.cache.location,
                        exc if isinstance(exc, SemcacheError) else type(exc).__name__)
            return _text(503, f"the cache could not be read ({type(exc).__name__}); "
                              "see the server's log")
        if path == API:
            body = json.dumps(figures, ensure_ascii=False, allow_nan=False).encode()
            return Reply(200, _headers("application/json"), body)
        return Reply(200, _headers("text/html; charset=utf-8"), render_page(figures).encode())


def _headers(content_type: str,
             extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    return (("Content-Type", content_type), *SECURITY_HEADERS.items(), *extra)


def _text(status: int, message: str, extra: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, _headers("text/plain; charset=utf-8", extra), (message + "\n").encode())


__all__ = ["API", "PAGE", "REUSE_S", "Dashboard", "Reply"]
