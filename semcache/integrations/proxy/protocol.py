"""uvicorn's HTTP protocols with ``TCP_NODELAY`` set on every connection.

uvicorn writes a response's headers and body in separate writes. asyncio sets
``TCP_NODELAY`` on accepted sockets only when the listening socket says it is TCP
(``proto == IPPROTO_TCP``); the socket uvicorn binds itself for ``--workers N`` says 0, so
with several workers Nagle's algorithm held every response body until the client's
delayed ACK: 44 ms per request instead of ~1 ms (measured with scripts/bench_proxy.py).
Setting the option on each connection makes one worker and N workers behave the same.
"""

from __future__ import annotations

import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def _no_delay(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket after all
            pass


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with ``TCP_NODELAY`` on the connection."""

    def connection_made(self, transport: Any) -> None:
        _no_delay(transport)
        super().connection_made(transport)


__all__ = ["NoDelayH11Protocol"]
