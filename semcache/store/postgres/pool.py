"""The connection pool of one process, and what happens when the server goes away.

* One ``psycopg_pool.ConnectionPool`` per process. After ``fork()`` the child makes its own
  (a libpq connection must never be shared by two processes); the parent's pool object is
  kept, untouched, so that nothing in the child closes the parent's sockets.
* Connections are in autocommit mode: a read is one statement; a write transaction is an
  explicit ``BEGIN`` ... ``COMMIT`` (see :meth:`Connections.transaction`).
* A restarted server leaves the pool's idle connections broken. A read that fails on a
  broken connection, and a transaction whose ``BEGIN`` fails on one, are retried once on a
  fresh connection (nothing was done yet). Failures after that raise
  :class:`~semcache.errors.CacheConnectionError`, and the next call reconnects.
* While the server is unreachable every call first tries one direct connection (fails
  fast: connection refused) instead of waiting ``timeout`` seconds for the pool; when that
  connection succeeds the pool is replaced by a fresh one.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolTimeout

from semcache.errors import CacheConnectionError
from semcache.store.postgres.conninfo import ConnInfo, translate, unreachable

log = logging.getLogger("semcache")

T = TypeVar("T")

#: Pools left behind by fork() in a child: never used, never closed, never collected
#: (closing them would close sockets the parent still uses).
_INHERITED: list[ConnectionPool] = []

_IDLE = pq.TransactionStatus.IDLE


class Connections:
    """Pooled, fork-safe, self-healing connections to one database."""

    def __init__(self, info: ConnInfo, *, configure: Callable[[psycopg.Connection], None],
                 min_size: int = 1, max_size: int = 8, timeout: float = 10.0,
                 connect_timeout: float = 5.0) -> None:
        self._info = info
        self._configure = configure
        self._sizes = (min_size, max_size)
        self._timeout = timeout
        self._connect_timeout = max(1, round(connect_timeout))
        self._mutex = threading.Lock()
        self._down = False
        self._pid = os.getpid()
        self._pool: ConnectionPool | None = None

    def start(self) -> None:
        """Open the pool (after the schema is ready: ``configure`` may depend on it)."""
        self._pool = self._new_pool()

    # -- the pool ----------------------------------------------------------------------

    def kwargs(self) -> dict[str, Any]:
        """libpq parameters of every connection (the password among them: never log)."""
        kw: dict[str, Any] = dict(self._info.params)
        kw.setdefault("application_name", "semcache")
        kw.setdefault("connect_timeout", self._connect_timeout)
        return kw

    def connect(self) -> psycopg.Connection:
        """One direct connection (used at open, and to probe an unreachable server)."""
        try:
            return psycopg.connect(autocommit=True, **self.kwargs())
        except psycopg.Error as exc:
            raise unreachable(self._info, exc) from None

    def _new_pool(self) -> ConnectionPool:
        kw = self.kwargs()
        kw["autocommit"] = True
        return ConnectionPool(
            "", kwargs=kw, min_size=self._sizes[0], max_size=self._sizes[1],
            open=True, configure=self._configure, timeout=self._timeout, name="semcache",
            num_workers=2, reconnect_timeout=max(60.0, self._timeout))

    def pool(self) -> ConnectionPool:
        if os.getpid() != self._pid:
            with self._mutex:
                if os.getpid() != self._pid:
                    if self._pool is not None:
                        _INHERITED.append(self._pool)
                    self._pid = os.getpid()
                    self._pool = self._new_pool()
        if self._pool is None:
            raise CacheConnectionError(f"the connection pool of {self._info.location} "
                                       "is not open")
        return self._pool

    def close(self) -> None:
        if os.getpid() == self._pid and self._pool is not None:
            self._pool.close(timeout=5.0)

    # -- outages -----------------------------------------------------------------------

    def probe(self) -> None:
        """Raise the one-line unreachable error if the server cannot be reached now."""
        try:
            self.connect().close()
        except CacheConnectionError:
            self._down = True
            raise
        if self._down:
            self._down = False
            self._replace_pool()

    def _replace_pool(self) -> None:
        """A fresh pool after an outage (the old one may sit in a reconnect backoff)."""
        with self._mutex:
            old, self._pool = self._pool, self._new_pool()
        if old is None:
            return
        threading.Thread(target=old.close, kwargs={"timeout": 5.0}, daemon=True,
                         name="semcache-pool-close").start()

    def _after_broken(self) -> None:
        """A connection broke: drop every broken idle one now (the next call reconnects)."""
        try:
            self.pool().check()
        except psycopg.Error:  # pragma: no cover - check() handles its own errors
            pass

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; the one-line unreachable error when there is none."""
        if self._down:
            self.probe()
        pool = self.pool()
        try:
            conn = pool.getconn(timeout=self._timeout)
        except PoolTimeout:
            self.probe()  # raises if the server is the problem
            raise CacheConnectionError(self._info.scrub(
                f"no free connection to {self._info.location} within {self._timeout:g} s: "
                f"all {self._sizes[1]} connections of this process are busy "
                "(raise pool_max_size)")) from None
        try:
            yield conn
        finally:
            if not conn.broken and conn.info.transaction_status != _IDLE:
                try:
                    conn.rollback()
                except psycopg.Error:
                    pass
            pool.putconn(conn)

    # -- running statements ----------------------------------------------------------------

    def _failed(self, exc: psycopg.Error, conn: psycopg.Connection) -> Exception:
        if conn.broken:
            self._after_broken()
            try:
                self.probe()
            except CacheConnectionError as down:
                return down
        return translate(exc, self._info)

    def run(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """Run a read (``fn`` must be safe to repeat): retried once on a broken connection.

        The lookup path: no context managers, one pool checkout (the pool itself resets
        a connection left inside a transaction when it comes back)."""
        pool = self._pool
        if self._down or pool is None or os.getpid() != self._pid:
            return self._run_slow(fn)
        try:
            conn = pool.getconn(timeout=self._timeout)
        except PoolTimeout:
            return self._run_slow(fn)
        try:
            return fn(conn)
        except psycopg.Error as exc:
            if not conn.broken:
                raise self._failed(exc, conn) from None
        finally:
            pool.putconn(conn)
        self._after_broken()
        self.probe()  # down: fail now, not after the pool's timeout
        return self._run_slow(fn, attempts=1)

    def _run_slow(self, fn: Callable[[psycopg.Connection], T], attempts: int = 2) -> T:
        for attempt in range(attempts):
            with self.connection() as conn:
                try:
                    return fn(conn)
                except psycopg.Error as exc:
                    if attempt < attempts - 1 and conn.broken:
                        self._after_broken()
                        self.probe()  # down: fail now, not after the pool's timeout
                        continue
                    raise self._failed(exc, conn) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def transaction(self, begin: Sequence[str], *,
                    pipelined: bool = False) -> Iterator[psycopg.Connection]:
        """The statements of ``begin`` (``BEGIN``, ``SET LOCAL ...``) on a healthy
        connection, then the caller's statements; the caller commits. Rolled back on any
        exception; driver errors are translated.

        ``pipelined``: the caller's statements run in psycopg's pipeline mode, and
        ``begin`` is sent with the first of them (no round trip of its own) - on a
        connection that looks healthy: a server that restarted or cut the connection
        has sent its farewell, so the idle socket is readable; such a connection begins
        the usual way, where a failure is retried on a fresh one."""
        for attempt in (0, 1):
            with self.connection() as conn:
                if pipelined and not _has_news(conn):
                    try:
                        with conn.pipeline():
                            for statement in begin:
                                conn.execute(statement)
                            yield conn
                    except psycopg.Error as exc:
                        raise self._failed(exc, conn) from None
                    return
                try:
                    conn.execute("; ".join(begin))
                except psycopg.Error as exc:
                    if attempt == 0 and conn.broken:
                        self._after_broken()
                        self.probe()  # down: fail now, not after the pool's timeout
                        continue
                    raise self._failed(exc, conn) from None
                try:
                    if pipelined:
                        with conn.pipeline():
                            yield conn
                    else:
                        yield conn
                except psycopg.Error as exc:
                    raise self._failed(exc, conn) from None
                return

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Block until the pool has made its first connection (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pool().get_stats().get("pool_available", 0):
                return
            time.sleep(0.01)


def _has_news(conn: psycopg.Connection) -> bool:
    """True when an idle connection's socket has something to read: the server's
    farewell (restart, ``pg_terminate_backend``), an end of file, or a notice. A healthy
    idle connection has nothing (one poll, no round trip; poll, not select, which fails
    for descriptors above 1023)."""
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


__all__ = ["Connections"]
