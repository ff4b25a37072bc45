"""Open/closed state shared by the threads that use one cache.

Every public operation passes through :meth:`Gate.enter`; :meth:`Gate.close` refuses new
operations at once (they raise :class:`~semcache.errors.CacheClosedError`, never a driver
error), waits a short, bounded time for the ones in flight, and leaves the actual release of
the store to the last of them if they are still busy (a put waiting for another process's
write lock, a remote embedder retrying): closing never blocks longer than its bound, and no
operation ever runs on a closed connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from semcache.errors import CacheClosedError


class Gate:
    def __init__(self, what: str) -> None:
        self._what = what
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._closed = False
        self._release: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def check(self) -> None:
        if self._closed:
            raise CacheClosedError(f"cache {self._what!r} is closed")

    @contextmanager
    def enter(self) -> Iterator[None]:
        with self._cond:
            if self._closed:
                raise CacheClosedError(f"cache {self._what!r} is closed")
            self._active += 1
        try:
            yield
        finally:
            release = None
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()
                    release, self._release = self._release, None
            if release is not None:
                release()

    def close(self, release: Callable[[], None], wait: float) -> bool:
        """Refuse new operations; run ``release`` now if nothing is in flight within
        ``wait`` seconds, else when the last operation in flight ends. Returns False when
        the gate was already closed."""
        with self._cond:
            if self._closed:
                return False
            self._closed = True
            self._cond.wait_for(lambda: self._active == 0, timeout=wait)
            if self._active:
                self._release = release
                return True
        release()
        return True


__all__ = ["Gate"]
