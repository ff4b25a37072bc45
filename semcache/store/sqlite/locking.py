"""The cross-process write lock: a sibling lock file plus an in-process RLock.

Writers serialize through it; SQLite's own locking (WAL + busy timeout) is the second
line. Readers never take it.

On POSIX the lock is ``flock`` on a descriptor kept open for the life of the process: an
acquire/release pair costs about a microsecond, where the ``filelock`` package (which
opens, locks and closes the file each time) costs ~85 us - a third of a put. Elsewhere
``filelock`` is used.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from semcache.errors import CacheFileError, ReadOnlyCacheError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: How long a writer waits for another process's write before giving up.
DEFAULT_LOCK_TIMEOUT = 60.0
_MAX_POLL_S = 0.001


def _open_lock_file(path: str) -> int:
    """Open (creating) the lock file as 0o644 filtered by the umask, like the database:
    a world-writable lock file (0o666 under umask 0) would let any local user hold the
    write lock."""
    # O_NOFOLLOW: a symlink planted at the lock path must not make us create or lock
    # whatever it points to.
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        raise CacheFileError(f"cannot open the write lock file {path!r} ({exc}); if it is a "
                             "symlink, remove it: semcache creates a plain file there") from exc


class _ProcessFd:
    """This process's descriptor of one lock file: opened on first use, reopened in a
    forked child (a child must not share the parent's locks), closed only by the process
    that opened it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = os.getpid()

    def get(self) -> int:
        if self._fd is None or os.getpid() != self._pid:
            self._fd = _open_lock_file(self.path)
            self._pid = os.getpid()
        return self._fd

    def held(self) -> int | None:
        """The descriptor this process opened, if any (None before use and in a child)."""
        return self._fd if os.getpid() == self._pid else None

    def close(self) -> None:
        fd = self.held()
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fd = None


class _FlockFile:
    """flock(2) on a persistent descriptor (opened on the first write, like filelock does),
    reopened after fork()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = _ProcessFd(path)

    def acquire(self, timeout: float) -> bool:
        fd = self._fd.get()
        deadline = 0.0  # set on the first busy try: a free lock costs one syscall
        pause = 0.00005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            except OSError as exc:
                raise CacheFileError(f"cannot take the write lock {self.path!r}: {exc}") from exc
            if not deadline:
                deadline = time.monotonic() + max(timeout, 0.0)
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)  # like SQLite's busy handler: poll with a short, growing pause
            pause = min(pause * 2, _MAX_POLL_S)

    def release(self) -> None:
        fcntl.flock(self._fd.get(), fcntl.LOCK_UN)

    def close(self) -> None:
        self._fd.close()


class _PortableFile:
    """The filelock package, for platforms without flock."""

    def __init__(self, path: str) -> None:
        import filelock

        self.path = path
        self._created = False
        self._timeout_error = filelock.Timeout
        self._lock = filelock.FileLock(path, thread_local=False, poll_interval=_MAX_POLL_S)

    def acquire(self, timeout: float) -> bool:
        if not self._created:
            os.close(_open_lock_file(self.path))
            self._created = True
        try:
            self._lock.acquire(timeout=timeout)
        except self._timeout_error:
            return False
        except OSError as exc:
            raise CacheFileError(f"cannot take the write lock {self.path!r}: {exc}") from exc
        return True

    def release(self) -> None:
        self._lock.release()

    def close(self) -> None:
        pass


class WriteLock:
    """Re-entrant within a process (any thread holding it may take it again); exclusive
    across processes."""

    def __init__(self, lock_path: str, timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = lock_path
        self.timeout = timeout
        self._file = _FlockFile(lock_path) if fcntl is not None else _PortableFile(lock_path)
        self._thread = threading.RLock()
        self._depth = 0  # file lock taken once per outermost acquire

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock; False when ``timeout`` (seconds; 0 = don't wait) runs out."""
        wait = self.timeout if timeout is None else timeout
        got = self._thread.acquire(timeout=wait) if wait > 0 else self._thread.acquire(False)
        if not got:
            return False
        if self._depth == 0:
            try:
                ok = self._file.acquire(wait)
            except BaseException:
                self._thread.release()
                raise
            if not ok:
                self._thread.release()
                return False
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._file.release()
        self._thread.release()

    def take(self, timeout: float | None = None) -> None:
        """Acquire, or raise CacheFileError naming the lock when ``timeout`` runs out."""
        if not self.acquire(timeout):
            raise CacheFileError(
                f"timed out after {self.timeout if timeout is None else timeout} s waiting for "
                f"the write lock {self.path!r} (another process is writing)"
            )

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        self.take(timeout)
        try:
            yield
        finally:
            self.release()

    def close(self) -> None:
        self._file.close()


class ReadOnlyLock:
    """The lock of a cache opened read-only: nothing may be written, so it is never held."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path

    def acquire(self, timeout: float | None = None) -> bool:
        return False

    def release(self) -> None:
        raise RuntimeError("ReadOnlyLock is never held")

    def take(self, timeout: float | None = None) -> None:
        raise ReadOnlyCacheError(f"cache file {self.path!r} is opened read-only; "
                                 "nothing can be written to it")

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        self.take(timeout)
        yield  # pragma: no cover - take() raised

    def close(self) -> None:
        pass


class _ClaimDescriptor:
    """The one descriptor of a claims file in this process, shared by every
    :class:`ClaimFile` on it and closed when the last one closes.

    POSIX record locks belong to the process, and the kernel drops all of them when the
    process closes *any* descriptor of the file: two descriptors (two caches on one file)
    would let the second cache's ``close()`` release the first one's claims. ``held`` says
    which offsets this process holds and for whom, so that two caches of one process
    exclude each other too (the kernel would grant the same process the same byte twice).
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.pid = os.getpid()
        self.users = 0
        self.held: dict[int, ClaimFile] = {}


#: (st_dev, st_ino) of each claims file this process has open -> its shared descriptor.
_DESCRIPTORS: dict[tuple[int, int], _ClaimDescriptor] = {}
#: Guards _DESCRIPTORS and every descriptor's ``held`` and ``users``.
_DESCRIPTORS_MUTEX = threading.Lock()


def _shared_descriptor(path: str) -> _ClaimDescriptor:
    """The process's descriptor of ``path`` (opened on first use); caller holds the mutex."""
    try:
        st = os.stat(path)
        found = _DESCRIPTORS.get((st.st_dev, st.st_ino))
        if found is not None and found.pid == os.getpid():
            return found
    except FileNotFoundError:
        pass
    fd = _open_lock_file(path)
    st = os.fstat(fd)
    shared = _DESCRIPTORS[(st.st_dev, st.st_ino)] = _ClaimDescriptor(path, fd)
    return shared


class ClaimFile:
    """Claims on request keys across the processes of one host: ``lockf`` byte-range locks
    on a sidecar file, one byte per key (at an offset derived from the key).

    The kernel drops a process's locks when it exits, however it dies, so a crashed
    fetcher never leaves a claim behind. POSIX record locks belong to the process (not
    the thread, not the descriptor): every ClaimFile of a process on the same file shares
    one descriptor (:class:`_ClaimDescriptor`), kept open while any of them is open,
    because closing any descriptor of the file would release every lock the process holds
    on it. A child process opens its own after fork().
    """

    #: Offsets span 2**40 bytes of a sparse, empty file: distinct keys practically never
    #: share a byte (and sharing one only makes two requests wait for each other).
    _SPAN = 1 << 40

    def __init__(self, path: str) -> None:
        self.path = path
        self._shared: _ClaimDescriptor | None = None  # opened on the first claim

    def _descriptor(self) -> _ClaimDescriptor:
        """Caller holds ``_DESCRIPTORS_MUTEX``."""
        shared = self._shared
        if shared is None or shared.pid != os.getpid():  # a forked child holds no lock
            shared = self._shared = _shared_descriptor(self.path)
            shared.users += 1
        return shared

    def _offset(self, key: bytes) -> int:
        return int.from_bytes(key[:8], "little") % self._SPAN

    def try_claim(self, key: bytes) -> bool:
        if fcntl is None:  # pragma: no cover - Windows: no cross-process coalescing
            return True
        offset = self._offset(key)
        with _DESCRIPTORS_MUTEX:
            shared = self._descriptor()
            if offset in shared.held:
                return False  # another cache of this process (or this one) holds it
            try:
                fcntl.lockf(shared.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except (BlockingIOError, PermissionError):
                return False
            except OSError as exc:
                raise CacheFileError(f"cannot take a claim in {self.path!r}: {exc}") from exc
            shared.held[offset] = self
        return True

    def release(self, key: bytes) -> None:
        offset = self._offset(key)
        with _DESCRIPTORS_MUTEX:
            shared = self._shared
            if fcntl is None or shared is None or shared.pid != os.getpid() \
                    or shared.held.get(offset) is not self:
                return
            del shared.held[offset]
            try:
                fcntl.lockf(shared.fd, fcntl.LOCK_UN, 1, offset)
            except OSError:
                pass  # released anyway when the descriptor closes

    def close(self) -> None:
        """Release this ClaimFile's claims; the descriptor closes with the last user."""
        with _DESCRIPTORS_MUTEX:
            shared, self._shared = self._shared, None
            if shared is None or shared.pid != os.getpid():
                return
            for offset in [o for o, owner in shared.held.items() if owner is self]:
                del shared.held[offset]
                try:
                    fcntl.lockf(shared.fd, fcntl.LOCK_UN, 1, offset)
                except OSError:
                    pass
            shared.users -= 1
            if shared.users > 0:
                return
            for key, value in list(_DESCRIPTORS.items()):
                if value is shared:
                    del _DESCRIPTORS[key]
            try:
                os.close(shared.fd)
            except OSError:
                pass


def _after_fork() -> None:
    global _DESCRIPTORS_MUTEX
    _DESCRIPTORS_MUTEX = threading.Lock()  # a thread of the parent may have held it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
