"""The proxy's connection pool to the upstream: aiohttp, kept alive between requests.

Why aiohttp and not httpx: a request to the local stub server cost 0.97 ms p50 through
``httpx.AsyncClient`` (httpcore sends a request's headers and body in two writes, and its
anyio layers add the rest), 0.37 ms through ``aiohttp.ClientSession`` and 0.26 ms over a bare
asyncio socket (same process, same stub, 2-core machine under load, 12-07) - on a miss
the difference was most of what the proxy added over calling the upstream directly.

What the pool promises, whatever the client library:

* connections are reused (keep-alive), at most ``max_connections`` at once (the descriptor
  budget of :mod:`.protocol` counts one upstream connection per client connection);
* no cookie jar: a ``Set-Cookie`` of the upstream's answer to one tenant is never sent
  with another tenant's request (a client-wide jar would share it);
* redirects are relayed to the client, never followed;
* ``timeout`` seconds at most to get a connection, and between two reads of an answer
  (connecting itself: at most 10 s); a slow upstream answer is a 504, an unreachable one
  a 502 (:data:`UPSTREAM_ERRORS`);
* the URL is sent as the proxy built it (already checked and percent-encoded by
  :mod:`.paths`), not re-quoted;
* an HTTP proxy named by the environment (``HTTPS_PROXY``/``HTTP_PROXY``, unless
  ``NO_PROXY`` covers the upstream's host) is read once, when the pool opens, as httpx
  did; aiohttp's own ``trust_env`` would look it up - and ``~/.netrc`` - in a worker
  thread on every request (two thread hand-offs each), and a ``.netrc`` entry for the
  upstream's host would then clash with the client's ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request

import aiohttp
from yarl import URL

#: What a failed upstream exchange raises (connecting, sending, reading, timeouts).
UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError)
#: Seconds to open a connection at most (``timeout`` if shorter).
CONNECT_TIMEOUT_S = 10.0


def is_timeout(exc: BaseException) -> bool:
    """True when ``exc`` (one of :data:`UPSTREAM_ERRORS`) means the upstream was too slow."""
    return isinstance(exc, asyncio.TimeoutError)


def environment_proxy(url: str) -> str | None:
    """The proxy URL the environment names for requests to ``url``, or None."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):  # NO_PROXY
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


class UpstreamPool:
    """The keep-alive connections of one proxy worker to its upstream (see the module)."""

    def __init__(self, upstream: str, timeout: float, max_connections: int) -> None:
        self.proxy = environment_proxy(upstream)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout,
                                          sock_connect=min(CONNECT_TIMEOUT_S, timeout),
                                          sock_read=timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def send(self, method: str, url: str, headers: list[tuple[str, str]],
                   content: bytes | None, *, decompress: bool) -> aiohttp.ClientResponse:
        """Send one request; the answer's body is left to read (``read()`` or
        ``content``), and must be released. ``decompress``: decode a compressed body
        (False relays the bytes as they came, with their ``Content-Encoding``).

        Raises one of :data:`UPSTREAM_ERRORS`."""
        return await self._session.request(
            method, URL(url, encoded=True), data=content or None, headers=headers,
            allow_redirects=False, auto_decompress=decompress, proxy=self.proxy)

    async def close(self) -> None:
        await self._session.close()


__all__ = ["CONNECT_TIMEOUT_S", "UPSTREAM_ERRORS", "UpstreamPool", "environment_proxy",
           "is_timeout"]
