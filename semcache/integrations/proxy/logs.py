"""Log lines of a proxy worker, rate-limited: an attack must not fill the disk.

1,200 half-open connections once made a worker write 538 MB of log in 40 s (asyncio's
accept errors with their tracebacks, several per millisecond). Every message of the
loggers below is let through at most :data:`BURST` times per :data:`PERIOD` seconds per
kind (logger, level and the first line of the message's format, numbers and addresses
blanked: asyncio formats its messages itself, with descriptors and addresses in them); the
next one let through says how many were dropped. The access log (one line per request served) is not
limited: ``--no-access-log`` turns it off.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

#: Loggers whose lines are rate-limited in a proxy worker.
LIMITED_LOGGERS = ("semcache", "uvicorn.error", "asyncio", "aiohttp")
#: Lines of one kind let through per period.
BURST = 10
#: Seconds of one period.
PERIOD = 60.0
#: Characters of a message's first line that decide its kind.
KIND_CHARS = 100
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")


def kind_of(record: logging.LogRecord) -> tuple[str, int, str]:
    """What makes two records "the same line" for the limit."""
    text = str(record.msg)
    first = text.split("\n", 1)[0][:KIND_CHARS]
    return record.name, record.levelno, _NUMBERS.sub("#", first)


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records of a kind per ``period`` seconds (see the module doc)."""

    def __init__(self, burst: int = BURST, period: float = PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._burst = burst
        self._period = period
        self._clock = clock
        self._lock = threading.Lock()
        #: kind -> [start of its period, lines let through, lines dropped]
        self._kinds: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = kind_of(record)
        now = self._clock()
        with self._lock:
            state = self._kinds.get(kind)
            if state is None or now - state[0] >= self._period:
                dropped = int(state[2]) if state is not None else 0
                if len(self._kinds) > 10_000:  # bounded, whatever the messages
                    self._kinds.clear()
                self._kinds[kind] = [now, 1, 0]
            elif state[1] < self._burst:
                state[1] += 1
                dropped = int(state[2])
                state[2] = 0
            else:
                state[2] += 1
                return False
        if dropped:
            record.msg = f"{record.msg} [{dropped} similar log lines dropped before this one]"
        return True


_installed = threading.Lock()


def limit_worker_logs() -> RateLimitFilter | None:
    """Attach one :class:`RateLimitFilter` to :data:`LIMITED_LOGGERS` (once per process);
    returns it, or None if it was attached before."""
    with _installed:
        for name in LIMITED_LOGGERS:
            if any(isinstance(f, RateLimitFilter) for f in logging.getLogger(name).filters):
                return None
        limiter = RateLimitFilter()
        for name in LIMITED_LOGGERS:
            logging.getLogger(name).addFilter(limiter)
        return limiter


__all__ = ["BURST", "LIMITED_LOGGERS", "PERIOD", "RateLimitFilter", "kind_of",
           "limit_worker_logs"]
