"""Open/closed state shared by the threads that use one cache.

Every public operation passes through the gate (``with gate:`` or ``with gate.enter():``);
:meth:`Gate.close` refuses new operations at once (they raise
:class:`~semcache.errors.CacheClosedError`, never a driver error), waits a short, bounded
time for the ones in flight, and leaves the actual release of the store to the last of them
if they are still busy (a put waiting for another process's write lock, a remote embedder
retrying): closing never blocks longer than its bound, and no operation ever runs on a
closed connection.

The gate is on the exact hit's path (~5 us in all), so entering and leaving take no lock:
an operation first registers itself (``list.append``, atomic), then looks at the closed
flag; :meth:`close` first sets the flag, then looks at the registrations. Whichever comes
second sees the other, so either the operation backs out with CacheClosedError or
``close`` waits for it (the same two-flag handshake as a mutex-free Dekker lock; Python's
atomic list operations and attribute stores are sequentially consistent). Only once a close
is waiting does leaving take the condition's lock, to wake it and to hand over the release.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, NoReturn

from semcache.errors import CacheClosedError

log = logging.getLogger("semcache")

#: Every open cache of this process: closed at exit, so that the access times and counters
#: batched in memory are not lost.
OPEN_CACHES: weakref.WeakSet[Any] = weakref.WeakSet()


class Gate:
    def __init__(self, what: str) -> None:
        self._what = what
        self._cond = threading.Condition(threading.Lock())
        #: One item per operation in flight; with :attr:`closed`, the two flags of the
        #: handshake above. ``LookupPipeline.run_prompt`` (the exact hit) enters and leaves
        #: inline, as :meth:`__enter__` and :meth:`__exit__` do: keep the three in step.
        self.inside: list[None] = []
        self.closed = False
        self._release: Callable[[], None] | None = None

    def check(self) -> None:
        if self.closed:
            self.refuse()

    def refuse(self) -> NoReturn:
        raise CacheClosedError(f"cache {self._what!r} is closed")

    def enter(self) -> Gate:
        """The gate itself, for ``with gate.enter():`` (same as ``with gate:``)."""
        return self

    def __enter__(self) -> None:
        self.inside.append(None)
        if self.closed:
            self._leave()
            self.refuse()

    def __exit__(self, *exc: object) -> None:
        self.inside.pop()  # _leave(), inline: one call less on every operation
        if self.closed:
            self.leave_closed()

    def _leave(self) -> None:
        self.inside.pop()
        if self.closed:
            self.leave_closed()

    def leave_closed(self) -> None:
        with self._cond:  # a close is waiting, or has left the release to the last one out
            if self.inside:
                return
            self._cond.notify_all()
            release, self._release = self._release, None
        if release is not None:
            release()

    def close(self, release: Callable[[], None], wait: float) -> bool:
        """Refuse new operations; run ``release`` now if nothing is in flight within
        ``wait`` seconds, else when the last operation in flight ends. Returns False when
        the gate was already closed."""
        with self._cond:
            if self.closed:
                return False
            self.closed = True
            self._cond.wait_for(lambda: not self.inside, timeout=wait)
            if self.inside:
                self._release = release
                return True
        release()
        return True


@atexit.register
def _close_open_caches() -> None:
    for cache in list(OPEN_CACHES):
        try:
            cache.close()
        except Exception as exc:  # noqa: BLE001 - best effort at interpreter exit
            log.warning("semcache: flushing %s at exit failed: %s", cache.location, exc)


__all__ = ["OPEN_CACHES", "Gate"]
