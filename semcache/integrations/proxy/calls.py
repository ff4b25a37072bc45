"""Where the proxy runs its blocking cache calls: on the event loop while they are quick,
in a worker thread when they are not.

A cache call (lookup, claim, store) blocks. In a worker thread it leaves the event loop
free, but every hand-off costs two thread wake-ups: ~0.08 ms each way on a quiet machine,
milliseconds on a loaded one (a woken thread waits for a core), and a miss made three or
four of them (lookup, claim, store) - the better part of the 3-9 ms a miss added over
calling the upstream directly (12-07, `hashing` embedder, 2 shared cores). On the loop,
a call stalls every other connection of the worker for as long as it runs - but a call
of well under a millisecond that is mostly Python holds the GIL anyway, so a thread
would not let the loop run much meanwhile.

So each kind of call is timed, and runs on the loop while its typical duration (the
median of its last :data:`WINDOW` runs where it did the slow work) is within
:data:`INLINE_BUDGET_S`; otherwise in a thread. The hashing embedder's lookups (~0.5 ms)
and every exact-tier call (microseconds) stay on the loop; MiniLM's embedding (~10 ms,
numpy releasing the GIL) goes to threads, where it overlaps with the loop's other work.
Only calls that never wait for another party belong here: the proxy stores in a thread
always (a store waits for the file's write lock), and with PostgreSQL every call goes to
a thread (budget 0: a stalled server holds a call for up to its statement timeout). The first call of a kind runs in a thread (nothing
is known yet), and a kind moves back to the loop as soon as its calls got quick. Until a
kind has done its slow work once (a lookup that missed the exact tier), its quick runs
decide: a stream of exact hits stays on the loop.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from semcache.store import is_server_location

T = TypeVar("T")

#: Typical duration (seconds) up to which a kind of call runs on the event loop.
INLINE_BUDGET_S = 0.002
#: Runs of a kind whose median decides where the next one runs.
WINDOW = 32


class CallSites:
    """Runs blocking calls on the loop or in a thread, per kind (see the module)."""

    def __init__(self, budget: float = INLINE_BUDGET_S) -> None:
        self.budget = budget
        self._seconds: dict[str, deque[float]] = {}
        self._inline: dict[str, bool] = {}

    def inline(self, kind: str) -> bool:
        """True when the next call of ``kind`` runs on the event loop."""
        return self._inline.get(kind, False)

    async def run(self, kind: str, func: Callable[..., T], *args: Any,
                  slow: Callable[[T], bool] | None = None) -> T:
        """``func(*args)`` on the loop or in a thread; ``slow(result)`` says whether this
        run did the work the kind is timed by (default: every run counts). A lookup's
        exact hit, for one, says nothing about how long an embedding takes."""
        if self._inline.get(kind, False):
            return self._timed(kind, func, args, slow)
        return await anyio.to_thread.run_sync(self._timed, kind, func, args, slow)

    def _timed(self, kind: str, func: Callable[..., T], args: tuple[Any, ...],
               slow: Callable[[T], bool] | None) -> T:
        started = time.perf_counter()
        result = func(*args)
        seconds = time.perf_counter() - started
        if slow is None or slow(result):
            self.observe(kind, seconds)
        elif kind not in self._seconds:
            # Only quick runs so far (exact hits): they decide until a slow one is seen -
            # which then runs on the loop once, and is timed.
            self._inline[kind] = seconds <= self.budget
        return result

    def observe(self, kind: str, seconds: float) -> None:
        """Record one run of ``kind`` (from the loop or a worker thread: a lost update
        under a race only delays the decision by one call)."""
        window = self._seconds.get(kind)
        if window is None:
            window = self._seconds[kind] = deque(maxlen=WINDOW)
        window.append(seconds)
        self._inline[kind] = statistics.median(window) <= self.budget

    def typical(self) -> dict[str, float]:
        """Median seconds of each kind's recent runs (for tests and diagnostics)."""
        return {kind: statistics.median(window) for kind, window in list(self._seconds.items())
                if window}


def call_sites_for(location: str) -> CallSites:
    """Where the calls of the cache at ``location`` run: on the loop while quick for a
    cache file, whose reads never wait for a writer (WAL); always in threads for a
    PostgreSQL server (a URL or libpq string), whose every call is a round trip that a
    stalled server can hold for up to its statement timeout."""
    return CallSites(budget=0.0 if is_server_location(location) else INLINE_BUDGET_S)


__all__ = ["INLINE_BUDGET_S", "WINDOW", "CallSites", "call_sites_for"]
