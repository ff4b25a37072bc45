"""The cross-process write lock: a sibling lock file (filelock) plus an in-process RLock.

Writers serialize through it; SQLite's own locking (WAL + busy timeout) is the second
line. Readers never take it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import filelock

from semcache.errors import CacheFileError

#: How long a writer waits for another process's write before giving up.
DEFAULT_LOCK_TIMEOUT = 60.0


def _create_lock_file(path: str) -> None:
    """Create the lock file as 0o644 filtered by the umask, like the database: filelock's
    own default (0o666 & ~umask) would make it world-writable under umask 0, letting any
    local user hold the write lock. Best effort: filelock reports real failures later."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError:
        pass


class WriteLock:
    """Re-entrant within a process; exclusive across processes."""

    def __init__(self, lock_path: str, timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = lock_path
        self.timeout = timeout
        # thread_local=False: the RLock below already serializes threads, and the file
        # lock must be one per process so that re-entrant use from helper threads works.
        _create_lock_file(lock_path)
        self._file = filelock.FileLock(lock_path, timeout=timeout, thread_local=False,
                                       poll_interval=0.001)
        self._thread = threading.RLock()

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock; False when ``timeout`` (seconds; 0 = don't wait) runs out."""
        wait = self.timeout if timeout is None else timeout
        got = self._thread.acquire(timeout=wait) if wait > 0 else self._thread.acquire(False)
        if not got:
            return False
        try:
            self._file.acquire(timeout=wait, poll_interval=0.001)
        except filelock.Timeout:
            self._thread.release()
            return False
        except OSError as exc:
            self._thread.release()
            raise CacheFileError(f"cannot take the write lock {self.path!r}: {exc}") from exc
        return True

    def release(self) -> None:
        self._file.release()
        self._thread.release()

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        if not self.acquire(timeout):
            raise CacheFileError(
                f"timed out after {self.timeout if timeout is None else timeout} s waiting for "
                f"the write lock {self.path!r} (another process is writing)"
            )
        try:
            yield
        finally:
            self.release()

    def close(self) -> None:
        # filelock keeps nothing open between acquisitions.
        pass
