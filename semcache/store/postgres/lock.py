"""The PostgreSQL engine's :class:`~semcache.store.base.StoreLock` (this process only)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from semcache.errors import CacheFileError


class ProcessLock:
    """The engine's :class:`~semcache.store.base.StoreLock`: a re-entrant lock of this
    process only. PostgreSQL serializes writers itself; this lock only lets the cache
    keep two of its own threads from flushing batched hits at the same moment."""

    def __init__(self, name: str) -> None:
        self._lock = threading.RLock()
        self._name = name

    def acquire(self, timeout: float | None = None) -> bool:
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(timeout=max(0.0, timeout)) if timeout > 0 else \
            self._lock.acquire(blocking=False)

    def release(self) -> None:
        self._lock.release()

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        if not self.acquire(timeout):
            raise CacheFileError(f"the write lock of {self._name} stayed busy for {timeout} s")
        try:
            yield
        finally:
            self.release()


__all__ = ["ProcessLock"]
