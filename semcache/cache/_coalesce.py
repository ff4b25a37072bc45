"""Coalescing identical misses: one caller fetches a request's answer, the others wait.

When fifty callers miss on the same question at once (a cold cache behind a busy app),
all fifty would pay the model and could get fifty different answers. A *claim* on the
request's exact key lets the first caller fetch while the others wait for it, bounded by
``wait`` seconds, then look the cache up again and, normally, hit.

Two layers, because the engine's claim is per process: a lock per key inside the process
(threads, async tasks run in threads), and the engine's claim across processes and hosts
(:meth:`semcache.store.base.Store.claim`: byte-range locks on a sidecar file for SQLite,
which the kernel releases when a process dies; a leased row for PostgreSQL). A caller
that times out fetches anyway: coalescing saves money, it never blocks an answer.
"""

from __future__ import annotations

import logging
import threading
import time

from semcache.errors import SemcacheError
from semcache.store.base import Store

log = logging.getLogger("semcache")

#: Longest a claim is honoured by others (a PostgreSQL lease outlives a crashed holder by
#: at most this long).
CLAIM_LEASE_S = 120.0
_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.05


class _KeyLocks:
    """One lock per key held by this process, dropped when nobody uses it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[bytes, tuple[threading.Lock, int]] = {}

    def acquire(self, key: bytes, timeout: float) -> tuple[bool, bool]:
        """(acquired, had to wait)."""
        with self._mutex:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        if lock.acquire(blocking=False):
            return True, False
        got = lock.acquire(timeout=max(timeout, 0.0))
        if not got:
            self._forget(key)
        return got, True

    def release(self, key: bytes) -> None:
        with self._mutex:
            lock, _ = self._locks[key]
        lock.release()
        self._forget(key)

    def _forget(self, key: bytes) -> None:
        with self._mutex:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Claim:
    """The right to fetch one request's answer (see :meth:`semcache.Cache.claim`).

    ``waited`` is True when another caller held it first, or when an answer for the key was
    stored between the caller's miss and its claim: look the cache up again before calling
    the model. ``held`` is False when waiting timed out: fetch anyway.
    Release it (or leave the ``with`` block) once the answer is stored or the call failed.
    """

    def __init__(self, owner: Coalescer, key: bytes, held: bool, waited: bool,
                 engine_held: bool) -> None:
        self._owner = owner
        self._key = key
        self.held = held
        self.waited = waited
        self._engine_held = engine_held
        self._released = not held

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._owner.release(self._key, self._engine_held)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Claim held={self.held} waited={self.waited}>"


class Coalescer:
    """Claims of one cache."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._local = _KeyLocks()
        self._warned = False

    def claim(self, key: bytes, wait: float) -> Claim:
        deadline = time.monotonic() + wait
        held, waited = self._local.acquire(key, wait)
        if not held:
            return Claim(self, key, False, True, False)
        pause = _POLL_FIRST_S
        while not self._engine_claim(key):
            waited = True
            if time.monotonic() >= deadline:
                self._local.release(key)
                return Claim(self, key, False, True, False)
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_S)
        # An identical request may have been fetched and stored between our miss and now:
        # its entry exists, so the caller must look again (it counts as having waited).
        waited = waited or self._stored(key)
        return Claim(self, key, True, waited, True)

    def _stored(self, key: bytes) -> bool:
        try:
            return self._store.get_by_key(key) is not None
        except SemcacheError:
            return False

    def _engine_claim(self, key: bytes) -> bool:
        try:
            return self._store.claim(key, CLAIM_LEASE_S)
        except SemcacheError as exc:  # coalescing saves money; it never blocks an answer
            if not self._warned:
                self._warned = True
                log.warning("semcache: claims unavailable for %s (%s); identical misses "
                            "are not coalesced across processes", self._store.location, exc)
            return True

    def release(self, key: bytes, engine_held: bool) -> None:
        try:
            if engine_held:
                self._store.release(key)
        finally:
            self._local.release(key)


__all__ = ["CLAIM_LEASE_S", "Claim", "Coalescer"]

