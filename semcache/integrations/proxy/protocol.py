"""The proxy's HTTP protocol: uvicorn's h11 protocol with ``TCP_NODELAY``, one send per
response (:class:`CoalescingTransport`), read timeouts and a connection limit.

``TCP_NODELAY``: uvicorn writes a response's headers and body in separate writes. asyncio
sets the option on accepted sockets only when the listening socket says it is TCP
(``proto == IPPROTO_TCP``); the socket uvicorn binds itself for ``--workers N`` says 0, so
with several workers Nagle's algorithm held every response body until the client's
delayed ACK: 44 ms per request instead of ~1 ms (measured with scripts/bench_proxy.py).

Slow clients (slowloris): uvicorn has no timeout for a request's headers (its keep-alive
timer is cancelled by any byte), so 1,200 connections that trickle header lines held the
worker's file descriptors until accept() failed, and every other client timed out. Here:

* the request line and headers must arrive within ``header_timeout`` seconds of the
  connection (or of the previous response, on a kept-alive connection): a deadline, not
  an idle timer, so trickling bytes does not extend it (answered 408, then closed);
* a request body may pause at most ``body_timeout`` seconds between two reads (nginx's
  ``client_body_timeout``); the time the application itself leaves the body unread does
  not count;
* at most ``max_connections`` connections per worker: the one over the limit takes the
  place of the connection that has waited longest for its client among those that sent
  part of a request (headers or body), or else nothing for :data:`SILENT_GRACE` seconds.
  A connection that just opened is spared (it may be a client whose request is on its
  way): up to ``burst`` of them may be open beyond the limit for an instant; past that the
  oldest silent one makes room, and when every connection is busy with a request in
  progress the newcomer is answered 503 and closed. The limit is chosen below the
  process's file-descriptor limit (see :func:`default_limits`), with room for the accepts
  in flight, so that accept() never fails; ``semcache serve`` first raises the soft limit
  to the hard one (:func:`raise_descriptor_limit`). What the guards close is counted in
  one log line per :data:`REPORT_EVERY` seconds.
* the kernel's listen queue is widened to :data:`LISTEN_QUEUE` once the worker accepts its
  first connection: asyncio accepts up to uvicorn's ``backlog`` connections per loop turn
  (the same number it gives listen()), so that number must stay small for the descriptor
  budget - but a small queue overflows when an attacker reopens hundreds of closed
  connections at once, and the kernel then drops new clients' SYNs (their retry comes a
  second later).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import weakref
from dataclasses import dataclass
from typing import Any, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("semcache")

#: File descriptors kept for everything but client and upstream connections (the cache's
#: files, the mirror, logs, the event loop, metrics).
FD_RESERVE = 64
#: Connections a worker serves at most by default, whatever its descriptor limit.
MAX_CONNECTIONS_CAP = 4096
#: uvicorn's default accept backlog (also how many connections asyncio accepts at once).
BACKLOG_CAP = 2048
#: The soft descriptor limit ``semcache serve`` raises itself to, at most (the hard limit
#: may be far larger; nothing here needs more).
RAISED_LIMIT_CAP = 65536
#: Seconds a connection that has sent nothing is spared from making room for a newcomer.
SILENT_GRACE = 1.0
#: Connections the kernel may hold for a worker before it accepts them (capped by
#: ``net.core.somaxconn``); they cost no descriptor until accepted.
LISTEN_QUEUE = 4096
#: Seconds between two log lines counting the connections the guards closed.
REPORT_EVERY = 10.0

_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n"
                b"content-length: 0\r\n\r\n")
_BUSY_503 = (b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n"
             b"content-length: 0\r\n\r\n")


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a worker waits for a client, and how many clients it holds at once."""

    header_timeout: float = 5.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    #: Connections that may be open beyond ``max_connections`` for an instant, while the
    #: ones that just opened show whether they are slow (see :func:`burst`).
    burst: int = 0


def descriptor_limit() -> int:
    """The process's soft ``RLIMIT_NOFILE`` (what ``ulimit -n`` says)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_descriptor_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (at most
    :data:`RAISED_LIMIT_CAP`), as nginx's ``worker_rlimit_nofile`` and Go's runtime do:
    1,024 is a common soft default while the hard limit allows far more. Returns the
    limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = RAISED_LIMIT_CAP if hard == resource.RLIM_INFINITY else min(hard, RAISED_LIMIT_CAP)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # a sandbox may refuse: keep the limit there is
            pass
    return descriptor_limit()


def accept_backlog(fd_limit: int) -> int:
    """uvicorn's ``backlog``: asyncio accepts up to this many connections per turn of the
    event loop, each a descriptor before the protocol sees it (see :func:`in_flight`)."""
    return max(16, min(BACKLOG_CAP, fd_limit // 16))


def burst(fd_limit: int) -> int:
    """Connections allowed over the limit for an instant: those that just opened and did
    not show yet whether they are slow (their first bytes are read two or three loop turns
    after accept(), while as many batches of others are accepted)."""
    return 3 * accept_backlog(fd_limit)


def in_flight(fd_limit: int) -> int:
    """Descriptors of connections the limit does not count: the ``burst``, two batches
    accepted before the protocol learns of them, one batch closed whose descriptors are
    freed a loop turn later."""
    return burst(fd_limit) + 3 * accept_backlog(fd_limit)


def default_limits(fd_limit: int) -> int:
    """The default ``max_connections`` for a process allowed ``fd_limit`` descriptors: each
    client connection may need one to the upstream, and the accepts in flight must fit."""
    spare = fd_limit - FD_RESERVE - in_flight(fd_limit)
    return max(1, min(MAX_CONNECTIONS_CAP, spare // 2))


def descriptors_needed(max_connections: int, fd_limit: int) -> int:
    """Descriptors ``max_connections`` clients may use at worst (with their upstream
    connections, the accepts in flight and the reserve)."""
    return 2 * max_connections + in_flight(fd_limit) + FD_RESERVE


def _no_delay(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket after all
            pass


class CoalescingTransport:
    """An asyncio transport whose writes of one turn of the event loop leave in one send.

    uvicorn writes a response's status line and headers, then its body, in separate
    ``write`` calls; with ``TCP_NODELAY`` each became its own send() and its own packet,
    and the client woke up twice per response. On a loaded 2-core machine a send() that
    wakes the peer cost ~0.5 ms (profiled, 12-07): one send per response saves that on
    every hit and miss. The bytes leave at the next turn of the loop (``call_soon``),
    before anything else that turn waits for; ``close`` (and ``write_eof``,
    ``set_protocol``) send what is pending first. Everything else is the transport's.
    """

    def __init__(self, transport: Any, loop: Any) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        """Send what was written this turn (nothing once the transport is closing)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + sum(map(len, self._pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def set_protocol(self, protocol: Any) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with ``TCP_NODELAY`` on the connection, and a response's
    writes sent together (:class:`CoalescingTransport`)."""

    def connection_made(self, transport: Any) -> None:
        _no_delay(transport)
        # Duck-typed: it forwards every other attribute to the real transport.
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))


_widened: set[int] = set()


def _widen_listen_queue(transport: Any) -> None:
    """Give the listening socket(s) of ``transport``'s server the :data:`LISTEN_QUEUE`
    (once per worker). asyncio's ``Server`` is only reachable from an accepted transport
    through CPython's ``_server`` attribute: without it nothing changes."""
    server = getattr(transport, "_server", None)
    for listener in getattr(server, "sockets", None) or ():
        fd = listener.fileno()
        if fd in _widened:
            continue
        _widened.add(fd)
        # listen() on a duplicate descriptor changes the one listening socket both share.
        with socket.socket(fileno=os.dup(fd)) as sock:
            try:
                sock.listen(LISTEN_QUEUE)
            except OSError:  # pragma: no cover - a socket that cannot listen again
                pass


class _Connections:
    """One worker's guarded connections: how many are open, and those waiting for their
    client in the order they began to wait - the slow ones (part of a request came) and
    the silent ones (nothing came yet) - so that the next to close is found at once.

    What the guards close is counted and reported in one log line per
    :data:`REPORT_EVERY` seconds at most (an attack closes thousands per second)."""

    def __init__(self) -> None:
        self.open = 0
        self.slow: dict[GuardedH11Protocol, None] = {}  # dicts keep insertion order
        self.silent: dict[GuardedH11Protocol, float] = {}
        self.closed: dict[str, int] = {}
        self._report: Any = None

    def note(self, loop: Any, what: str) -> None:
        """Count one connection closed by a guard (``what`` says why)."""
        self.closed[what] = self.closed.get(what, 0) + 1
        if self._report is None:
            self._report = loop.call_later(REPORT_EVERY, self.report)

    def report(self) -> None:
        self._report = None
        if self.closed:
            summary = ", ".join(f"{n} {what}" for what, n in sorted(self.closed.items()))
            self.closed = {}
            logger.warning("semcache proxy: slow or surplus connections closed in the last "
                           "%g s: %s", REPORT_EVERY, summary)

    def victim(self, now: float, grace: float) -> GuardedH11Protocol | None:
        """The slow connection that began waiting first, else the first silent one that
        has been silent for ``grace`` seconds, else None."""
        for conn in self.slow:
            return conn
        for conn, since in self.silent.items():
            return conn if now - since >= grace else None
        return None

    def forget(self, conn: GuardedH11Protocol) -> None:
        self.slow.pop(conn, None)
        self.silent.pop(conn, None)


_workers: weakref.WeakKeyDictionary[Any, _Connections] = weakref.WeakKeyDictionary()


class GuardedH11Protocol(NoDelayH11Protocol):
    """:class:`NoDelayH11Protocol` with the read timeouts and the connection limit of
    ``limits`` (see the module's docstring). uvicorn builds one per connection; ``serve``
    binds ``limits`` with :func:`functools.partial`."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._registry = _workers.setdefault(self.server_state, _Connections())
        self._counted = False
        self._header_timer: Any = None
        self._body_timer: Any = None

    # -- connection limit ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not _widened:
            _widen_listen_queue(transport)
        registry = self._registry
        registry.open += 1
        self._counted = True
        now = self.loop.time()
        registry.silent[self] = now
        self._header_timer = self.loop.call_later(self._limits.header_timeout,
                                                  self._headers_too_slow)
        limit = self._limits.max_connections
        # Over the limit: the slowest makes room (no answer: it would only keep it busy).
        # Over the limit and the burst: the first of the silent ones too, however new.
        for ceiling, grace in ((limit, SILENT_GRACE), (limit + self._limits.burst, 0.0)):
            while registry.open > ceiling:
                victim = registry.victim(now, grace)
                if victim is None or victim is self:
                    break
                victim._close(b"")
                registry.note(self.loop, f"to stay within --max-connections {limit}")
        if registry.open > limit + self._limits.burst:
            registry.note(self.loop, "answered 503 (every connection busy)")
            self._close(_BUSY_503)

    def _release(self) -> None:
        self._registry.forget(self)
        if self._counted:
            self._counted = False
            self._registry.open -= 1
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _close(self, farewell: bytes) -> None:
        self._release()
        if not self.transport.is_closing():
            if farewell and self.conn.our_state is h11.IDLE:
                self.transport.write(farewell)
            self.transport.close()

    # -- read timeouts ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        registry = self._registry
        if state is h11.IDLE:  # part of the headers: their deadline runs on
            if registry.silent.pop(self, None) is not None:
                registry.slow[self] = None
            return
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        registry.silent.pop(self, None)
        if state is h11.SEND_BODY:
            registry.slow.setdefault(self, None)  # waiting for the client again
            self._body_timer = self.loop.call_later(self._limits.body_timeout,
                                                    self._body_too_slow)
        else:  # the whole request came: the server's turn
            registry.slow.pop(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        # Kept alive: the next request's headers have the same deadline.
        self._registry.slow.pop(self, None)
        self._registry.silent[self] = self.loop.time()
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self._limits.header_timeout,
                                                  self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self._registry.note(self.loop, f"without complete headers after "
                                       f"--header-timeout {self._limits.header_timeout:g} s")
        self._close(_TIMEOUT_408)

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        if self.flow.read_paused:  # the application has not read what came: not the client
            self._body_timer = self.loop.call_later(self._limits.body_timeout,
                                                    self._body_too_slow)
            return
        self._registry.note(self.loop, f"whose body paused beyond --body-timeout "
                                       f"{self._limits.body_timeout:g} s")
        self._close(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)


__all__ = [
    "CoalescingTransport",
    "ConnectionLimits",
    "GuardedH11Protocol",
    "NoDelayH11Protocol",
    "accept_backlog",
    "burst",
    "default_limits",
    "descriptor_limit",
    "descriptors_needed",
    "in_flight",
    "raise_descriptor_limit",
]
