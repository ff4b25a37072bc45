"""The connection pool of one process, and what happens when the server goes away.

* One ``psycopg_pool.ConnectionPool`` per process. After ``fork()`` the child makes its own
  (a libpq connection must never be shared by two processes); the parent's pool object is
  kept, untouched, so that nothing in the child closes the parent's sockets.
* Connections are in autocommit mode: a read is one statement; a write transaction is an
  explicit ``BEGIN`` ... ``COMMIT`` (see :meth:`Connections.transaction`).
* Timeouts. Connecting gives up after ``connect_timeout`` seconds. A statement gets its
  answer or an error within ``statement_timeout`` seconds: the server is asked to cancel
  it a little earlier (:func:`server_timeout`: an error, not an outage), and a server that
  does not even answer that way - frozen, or cut off by the network - is caught by the
  :class:`~.watchdog.Watchdog`, which cuts the connection at ``statement_timeout``.
  Maintenance work (:meth:`Connections.maintenance`, :meth:`Connections.unbound`) lifts
  both. Over TCP, libpq's keepalives are on with short intervals (:data:`KEEPALIVES`), so
  an idle pooled connection to a vanished host is found broken rather than trusted.
* Outages. A statement cut by the watchdog, or a probe connection that fails after a broken
  connection, means the server is down or frozen: the outage is declared - every other
  statement in flight is cut, the pool is closed (which wakes every caller waiting for a
  connection), and each call raises :class:`~semcache.errors.CacheConnectionError` at once
  while one of them at a time tries a direct connection. When that connection succeeds,
  a fresh pool is made.
* A restarted server leaves the pool's idle connections broken. A read that fails on a
  broken connection, and a transaction whose ``BEGIN`` fails on one, are retried once on a
  fresh pool (nothing was done yet). Failures after that raise ``CacheConnectionError``,
  and the next call reconnects.
"""

from __future__ import annotations

import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from semcache.errors import CacheConnectionError
from semcache.store.postgres.conninfo import ConnInfo, translate, unreachable
from semcache.store.postgres.watchdog import Watch, Watchdog

log = logging.getLogger("semcache")

T = TypeVar("T")

#: Pools left behind by fork() in a child: never used, never closed, never collected
#: (closing them would close sockets the parent still uses).
_INHERITED: list[ConnectionPool] = []

_IDLE = pq.TransactionStatus.IDLE

#: How much earlier than ``statement_timeout`` the server is asked to cancel a statement
#: (at most a quarter of it): its cancellation must reach the client before the watchdog
#: takes the silence for an outage.
GRACE = 0.5


def server_timeout(statement_timeout: float) -> float:
    """The server's ``statement_timeout`` for a client-side bound of ``statement_timeout``."""
    return statement_timeout - min(GRACE, statement_timeout / 4)
#: libpq's TCP keepalive settings on TCP connections (a URL or key=value may set others):
#: an idle connection to a host that vanished is found dead within about 20 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
              "keepalives_count": 3}


def over_tcp(params: dict[str, Any]) -> bool:
    """True when libpq connects over TCP (a host name or address, not a socket directory)."""
    if params.get("hostaddr"):
        return True
    hosts = str(params.get("host") or os.environ.get("PGHOST") or "").split(",")
    return any(h and not h.startswith("/") and not h.startswith("@") for h in hosts)


class Connections:
    """Pooled, fork-safe, self-healing connections to one database."""

    def __init__(self, info: ConnInfo, *, configure: Callable[[psycopg.Connection], None],
                 min_size: int = 1, max_size: int = 8, timeout: float = 10.0,
                 connect_timeout: float = 2.0, statement_timeout: float = 2.0) -> None:
        self._info = info
        self._configure = configure
        self._sizes = (min_size, max_size)
        self._timeout = timeout
        #: Seconds to reach the server (libpq counts whole seconds, at least 2).
        self.connect_timeout = connect_timeout
        #: Seconds a statement may run (0: no limit).
        self.statement_timeout = statement_timeout
        self._deadline = statement_timeout or None
        self._watchdog = Watchdog()
        self._mutex = threading.Lock()
        self._probing = threading.Lock()
        #: The error of the outage in progress, or None.
        self._down: CacheConnectionError | None = None
        self._next_probe = 0.0
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
        kw.setdefault("connect_timeout", max(2, math.ceil(self.connect_timeout)))
        if over_tcp(kw):
            for name, value in KEEPALIVES.items():
                kw.setdefault(name, value)
        return kw

    def connect(self) -> psycopg.Connection:
        """One direct connection (used at open, and to probe an unreachable server)."""
        try:
            return psycopg.connect(autocommit=True, **self.kwargs())
        except psycopg.Error as exc:
            raise unreachable(self._info, exc) from None

    def _configure_pooled(self, conn: psycopg.Connection) -> None:
        if self.statement_timeout:
            conn.execute(f"SET statement_timeout = {self._timeout_ms()}")
        self._configure(conn)

    def _timeout_ms(self) -> int:
        return max(1, round(server_timeout(self.statement_timeout) * 1000))

    def _new_pool(self) -> ConnectionPool:
        kw = self.kwargs()
        kw["autocommit"] = True
        return ConnectionPool(
            "", kwargs=kw, min_size=self._sizes[0], max_size=self._sizes[1],
            open=True, configure=self._configure_pooled, timeout=self._timeout,
            name="semcache", num_workers=2, reconnect_timeout=max(60.0, self._timeout))

    def pool(self) -> ConnectionPool:
        if os.getpid() != self._pid:
            with self._mutex:
                if os.getpid() != self._pid:
                    if self._pool is not None:
                        _INHERITED.append(self._pool)
                    self._pid = os.getpid()
                    self._pool = self._new_pool()
        pool = self._pool
        if pool is None:
            if self._down is not None:
                raise self._outage_error()
            raise CacheConnectionError(f"the connection pool of {self._info.location} "
                                       "is not open")
        return pool

    def close(self) -> None:
        self._watchdog.close()
        if os.getpid() == self._pid and self._pool is not None:
            self._pool.close(timeout=5.0)

    # -- outages -----------------------------------------------------------------------

    def _outage_error(self) -> CacheConnectionError:
        """A new exception with the message of the outage in progress (one object per
        caller: threads must not share an exception's traceback)."""
        down = self._down
        return CacheConnectionError(str(down) if down is not None else
                                    f"PostgreSQL at {self._info.endpoint} is unreachable")

    def _declare_down(self, error: CacheConnectionError) -> CacheConnectionError:
        """The server is down or frozen: cut what waits for it, close the pool (its waiting
        callers wake up with ``PoolClosed``); calls fail at once from now on."""
        with self._mutex:
            first = self._down is None
            self._down = error
            pool, self._pool = self._pool, None
        cut = self._watchdog.cut_all()
        if pool is not None:
            # psycopg_pool wakes its waiting callers only after joining its workers, which
            # may be stuck connecting to the frozen server: do not wait for them.
            _close_later(pool, wait=0.1)
        if first:
            log.warning("semcache: %s; %d statement(s) in flight cut, calls fail at once "
                        "until the server answers again", error, cut)
        return error

    def probe(self) -> None:
        """Raise the one-line unreachable error if the server cannot be reached now; a
        fresh pool when it is back. One thread probes at a time: the others raise the
        outage's error at once (a frozen server takes ``connect_timeout`` to fail), and
        after a failed probe as long again (a server answering "refused" is probed again
        at once; one that made the probe wait is not asked again during that wait)."""
        if self._down is not None and time.monotonic() < self._next_probe:
            raise self._outage_error()
        if not self._probing.acquire(blocking=False):
            if self._down is not None:
                raise self._outage_error()
            with self._probing:  # a probe of a server thought up: wait for its verdict
                pass
            if self._down is not None:
                raise self._outage_error()
            return
        try:
            started = time.monotonic()
            try:
                self.connect().close()
            except CacheConnectionError as exc:
                ended = time.monotonic()
                self._next_probe = ended + (ended - started)
                raise self._declare_down(exc) from None
            if self._down is not None:
                with self._mutex:
                    self._down = None
                    old, self._pool = self._pool, self._new_pool()
                if old is not None:
                    _close_later(old)
                log.warning("semcache: PostgreSQL at %s answers again", self._info.endpoint)
        finally:
            self._probing.release()

    def _replace_pool(self, broken: ConnectionPool) -> None:
        """A fresh pool instead of ``broken`` (a restart left its idle connections dead;
        dropping them all beats finding them one call at a time)."""
        with self._mutex:
            if self._pool is not broken:
                return  # another thread replaced it already
            self._pool = self._new_pool()
        _close_later(broken)

    def _failed(self, exc: psycopg.Error, conn: psycopg.Connection, watch: Watch,
                pool: ConnectionPool) -> Exception:
        """The error to raise for ``exc`` on ``conn`` (an outage is declared first when the
        watchdog cut the connection, or when the server cannot be reached any more)."""
        if watch.cut:
            if self._down is not None:
                return self._outage_error()
            return self._declare_down(CacheConnectionError(self._info.scrub(
                f"PostgreSQL at {self._info.endpoint} ({self._info.location}) did not "
                f"answer within statement_timeout ({self.statement_timeout:g} s): the "
                f"server is frozen or unreachable")))
        if conn.broken:
            try:
                self.probe()
            except CacheConnectionError as down:
                return down
            self._replace_pool(pool)
        return translate(exc, self._info)

    # -- running statements ----------------------------------------------------------------

    def _checkout(self) -> tuple[psycopg.Connection, ConnectionPool]:
        """A pooled connection and its pool; the one-line error when there is none."""
        for _ in range(3):
            if self._down is not None:
                self.probe()
            pool = self.pool()
            try:
                return pool.getconn(timeout=self._timeout), pool
            except PoolTimeout:
                self.probe()  # raises if the server is the problem
                raise CacheConnectionError(self._info.scrub(
                    f"no free connection to {self._info.location} within {self._timeout:g} "
                    f"s: all {self._sizes[1]} connections of this process are busy "
                    "(raise pool_max_size)")) from None
            except PoolClosed:
                if self._down is not None:  # woken up by the outage
                    raise self._outage_error() from None
                # replaced by a fresh one meanwhile: take a connection from that
        raise self._outage_error()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection, watched with the statement deadline; the one-line
        unreachable error when there is none."""
        conn, pool = self._checkout()
        watch = self._watchdog.watch(conn, self._deadline)
        try:
            yield conn
        except psycopg.Error as exc:
            raise self._failed(exc, conn, watch, pool) from None
        finally:
            self._give_back(conn, pool)

    def _give_back(self, conn: psycopg.Connection, pool: ConnectionPool) -> None:
        """Return a checked-out connection: unwatched, any open transaction rolled back."""
        self._watchdog.done(conn)
        if not conn.broken and conn.info.transaction_status != _IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                pass
        pool.putconn(conn)

    @contextmanager
    def maintenance(self) -> Iterator[psycopg.Connection]:
        """A pooled connection for long work (vacuum, index builds, scans of every row):
        no statement timeout, no deadline - but cut like the others when an outage is
        declared."""
        with self.connection() as conn:
            self._watchdog.unbound(conn)
            if self.statement_timeout:
                conn.execute("SET statement_timeout = 0")
            try:
                yield conn
            finally:
                if self.statement_timeout and not conn.broken:
                    try:
                        if conn.info.transaction_status != _IDLE:
                            conn.rollback()
                        conn.execute(f"SET statement_timeout = {self._timeout_ms()}")
                    except psycopg.Error:
                        conn.close()  # the pool drops it rather than keep it unbounded

    def unbound(self, conn: psycopg.Connection) -> None:
        """Lift the limits for the rest of the transaction open on ``conn`` (a write that
        may touch every row: clear, purge, import)."""
        self._watchdog.unbound(conn)
        if self.statement_timeout:
            conn.execute("SET LOCAL statement_timeout = 0")

    def run(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """Run a read (``fn`` must be safe to repeat): retried once on a broken connection.

        The lookup path: no context managers, one pool checkout (the pool itself resets
        a connection left inside a transaction when it comes back)."""
        pool = self._pool
        if self._down is not None or pool is None or os.getpid() != self._pid:
            return self._run_slow(fn)
        try:
            conn = pool.getconn(timeout=self._timeout)
        except PoolClosed:
            if self._down is not None:  # woken up by the outage: no second wait for it
                raise self._outage_error() from None
            return self._run_slow(fn)
        except PoolTimeout:
            return self._run_slow(fn)
        watch = self._watchdog.watch(conn, self._deadline)
        try:
            return fn(conn)
        except psycopg.Error as exc:
            if watch.cut or not conn.broken:
                raise self._failed(exc, conn, watch, pool) from None
        finally:
            self._watchdog.done(conn)
            pool.putconn(conn)
        # Broken by the server (a restart, a terminated backend): down -> fail now, not
        # after the pool's timeout; up -> once more on a fresh pool.
        self.probe()
        self._replace_pool(pool)
        return self._run_slow(fn, attempts=1)

    def _run_slow(self, fn: Callable[[psycopg.Connection], T], attempts: int = 2) -> T:
        for attempt in range(attempts):
            conn, pool = self._checkout()
            watch = self._watchdog.watch(conn, self._deadline)
            try:
                return fn(conn)
            except psycopg.Error as exc:
                if watch.cut or not conn.broken or attempt == attempts - 1:
                    raise self._failed(exc, conn, watch, pool) from None
            finally:
                self._watchdog.done(conn)
                pool.putconn(conn)
            self.probe()  # down: fail now, not after the pool's timeout
            self._replace_pool(pool)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def transaction(self, begin: Sequence[str], *, pipelined: bool = False,
                    bounded: bool = True) -> Iterator[psycopg.Connection]:
        """The statements of ``begin`` (``BEGIN``, ``SET LOCAL ...``) on a healthy
        connection, then the caller's statements; the caller commits. Rolled back on any
        exception; driver errors are translated. ``bounded=False``: maintenance work,
        without the statement timeout (see :meth:`unbound`).

        ``pipelined``: the caller's statements run in psycopg's pipeline mode, and
        ``begin`` is sent with the first of them (no round trip of its own) - on a
        connection that looks healthy: a server that restarted or cut the connection
        has sent its farewell, so the idle socket is readable; such a connection begins
        the usual way, where a failure is retried on a fresh one."""
        if not bounded and self.statement_timeout:
            begin = [*begin, "SET LOCAL statement_timeout = 0"]
        for attempt in (0, 1):
            conn, pool = self._checkout()
            watch = self._watchdog.watch(conn, self._deadline if bounded else None)
            try:
                if pipelined and not _has_news(conn):
                    with conn.pipeline():
                        for statement in begin:
                            conn.execute(statement)
                        yield conn
                    return
                try:
                    conn.execute("; ".join(begin))
                except psycopg.Error:
                    if attempt == 0 and conn.broken and not watch.cut:
                        self.probe()  # down: fail now, not after the pool's timeout
                        self._replace_pool(pool)
                        continue
                    raise
                if pipelined:
                    with conn.pipeline():
                        yield conn
                else:
                    yield conn
                return
            except psycopg.Error as exc:
                raise self._failed(exc, conn, watch, pool) from None
            finally:
                self._give_back(conn, pool)

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Block until the pool has made its first connection (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pool().get_stats().get("pool_available", 0):
                return
            time.sleep(0.01)


def _close_later(pool: ConnectionPool, wait: float = 5.0) -> None:
    """Close a pool in the background: its callers waiting for a connection wake up
    (``PoolClosed``) once its workers stopped, or after ``wait`` seconds (a worker still
    connecting then finishes on its own, with a warning of psycopg_pool's)."""
    threading.Thread(target=pool.close, kwargs={"timeout": wait}, daemon=True,
                     name="semcache-pool-close").start()


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


__all__ = ["GRACE", "KEEPALIVES", "Connections", "over_tcp", "server_timeout"]
