"""Cut the connections of statements that outlived their deadline (a frozen server).

PostgreSQL cancels a statement that runs past ``statement_timeout`` itself - when it is
alive. A server that is frozen (SIGSTOP, a hung host, a network that stopped relaying
without closing anything) answers nothing, and a client blocked reading its socket waits
for as long as the freeze lasts: the kernel acknowledges TCP data and keepalives for a
stopped process, and a Unix socket has neither. So each statement (or transaction) on a
pooled connection is registered here with a deadline, and a daemon thread that wakes every
:data:`TICK` seconds while something is registered shuts down (``shutdown(2)``, not
``close``: the descriptor stays the driver's) the socket of any that is overdue. The driver
then sees an end of file at once, the connection is broken, and the caller raises.

:meth:`Watchdog.cut_all` cuts every registered connection, deadline or not: once an outage
is known, nothing waits for the frozen server any more.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

#: Seconds between two looks at the deadlines (the precision of a cut).
TICK = 0.1


@dataclass(eq=False)
class Watch:
    """One registered statement: its connection's socket and deadline."""

    fd: int
    deadline: float | None
    cut: bool = False


class Watchdog:
    """Deadlines of the statements in flight on one pool's connections."""

    def __init__(self) -> None:
        self._reset()
        self._closed = False
        _ALL.add(self)

    def _reset(self) -> None:
        """A fresh state: at creation, and in a child after ``fork()`` (the parent's
        connections are not the child's to cut, its lock may have been held, and its
        thread did not follow)."""
        self._lock = threading.Lock()
        self._watches: dict[int, Watch] = {}  # id of the connection -> its watch
        self._busy = threading.Event()  # something is registered
        self._thread: threading.Thread | None = None

    def watch(self, conn: Any, seconds: float | None) -> Watch:
        """Register the statement about to run on ``conn`` (None: no deadline)."""
        watch = Watch(conn.fileno(), None if seconds is None else time.monotonic() + seconds)
        with self._lock:
            self._watches[id(conn)] = watch
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="semcache-pg-watchdog",
                                                daemon=True)
                self._thread.start()
        if not self._busy.is_set():
            self._busy.set()
        return watch

    def unbound(self, conn: Any) -> None:
        """Lift the deadline of the statement on ``conn`` (maintenance work may take long;
        it is still cut when an outage is known)."""
        with self._lock:
            watch = self._watches.get(id(conn))
            if watch is not None:
                watch.deadline = None

    def done(self, conn: Any) -> None:
        """The statement on ``conn`` is over (before the connection goes back to the pool)."""
        with self._lock:
            self._watches.pop(id(conn), None)

    def cut_all(self) -> int:
        """Cut every connection with a statement in flight; returns how many."""
        with self._lock:
            watches = [w for w in self._watches.values() if not w.cut]
            for watch in watches:
                _cut(watch)
        return len(watches)

    def close(self) -> None:
        self._closed = True
        self._busy.set()
        _ALL.discard(self)

    def _run(self) -> None:
        while not self._closed:
            self._busy.wait()
            time.sleep(TICK)
            now = time.monotonic()
            with self._lock:
                for watch in self._watches.values():
                    if not watch.cut and watch.deadline is not None and now >= watch.deadline:
                        _cut(watch)
                if not self._watches:
                    self._busy.clear()


_ALL: weakref.WeakSet[Watchdog] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for watchdog in list(_ALL):
        watchdog._reset()


os.register_at_fork(after_in_child=_reset_after_fork)


def _cut(watch: Watch) -> None:
    """Shut the watched socket down (called with the lock held: the connection cannot be
    returned to the pool, and its descriptor reused, meanwhile)."""
    watch.cut = True
    try:
        with socket.socket(fileno=os.dup(watch.fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the driver
        pass


__all__ = ["TICK", "Watch", "Watchdog"]
