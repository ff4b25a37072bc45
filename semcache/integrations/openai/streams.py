"""Streams handed back by the wrapper: cached answers replayed, live answers recorded.

* :class:`ReplayStream` / :class:`AsyncReplayStream` replay a cached answer like
  ``openai.Stream`` / ``openai.AsyncStream``: iterable, closable, context managers.
* :class:`RecordingStream` / :class:`AsyncRecordingStream` pass a live stream through
  item by item as it arrives and hand the assembled answer to ``on_complete`` once the
  stream ended normally - never when the caller stopped early, closed it, or it raised.

Each carries its :class:`~semcache.integrations.info.CacheInfo` (``semcache.cache_info``);
a recording stream's info gains the new entry id when its answer was stored.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, Protocol

from semcache.integrations.info import CacheInfo, attach_info


class Accumulator(Protocol):
    """Collects a live stream's items; ``result()`` is the answer once it completed."""

    def add(self, item: Any) -> None:
        """Account for one streamed item."""

    def result(self) -> dict[str, Any] | None:
        """The assembled answer (JSON), or None when the stream did not complete."""


#: Turns the collected items into the answer to store (None: nothing to store).
Finisher = Callable[[Accumulator], "dict[str, Any] | None"]
#: Stores an answer and returns the info of the stream that produced it.
OnComplete = Callable[[dict[str, Any]], CacheInfo]


class _Replay:
    """A cached answer's items, handed out one by one; carries its :class:`CacheInfo`."""

    def __init__(self, items: list[Any], info: CacheInfo) -> None:
        self._items = iter(items)
        attach_info(self, info)

    def _stop(self) -> None:
        self._items = iter(())


class ReplayStream(_Replay):
    """Cached answer replayed like ``openai.Stream``."""

    def __iter__(self) -> ReplayStream:
        return self

    def __next__(self) -> Any:
        return next(self._items)

    def close(self) -> None:
        """Stop the replay (nothing to release)."""
        self._stop()

    def __enter__(self) -> ReplayStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncReplayStream(_Replay):
    """Cached answer replayed like ``openai.AsyncStream``."""

    def __aiter__(self) -> AsyncReplayStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._items)
        except StopIteration:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Stop the replay (nothing to release)."""
        self._stop()

    aclose = close

    async def __aenter__(self) -> AsyncReplayStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Recording:
    """State shared by the sync and async recording streams."""

    def __init__(self, stream: Any, accumulator: Accumulator, finish: Finisher,
                 on_complete: OnComplete, info: CacheInfo) -> None:
        self._stream = stream
        self._acc = accumulator
        self._finish = finish
        self._on_complete = on_complete
        self._state = "open"  # open -> done | closed | failed
        attach_info(self, info)

    def _answer_at_end(self) -> dict[str, Any] | None:
        """The answer to store when the stream just ended normally (once)."""
        if self._state != "open":
            return None
        self._state = "done"
        return self._finish(self._acc)

    def _completed(self, data: dict[str, Any]) -> None:
        attach_info(self, self._on_complete(data))

    def _passed(self, item: Any) -> Any:
        """An item of the live stream on its way to the caller, collected for the answer."""
        self._acc.add(item)
        return item

    def _closing(self) -> Any:
        """Mark an unfinished answer as not to be stored; the live stream's ``close``."""
        if self._state == "open":
            self._state = "closed"
        return getattr(self._stream, "close", None)

    def __getattr__(self, name: str) -> Any:
        # Attributes other than iteration/close (``response``, ...) are the live stream's.
        return getattr(self._stream, name)


class RecordingStream(_Recording):
    """Pass a live ``openai.Stream`` through; store the answer once it completed."""

    def __init__(self, stream: Any, accumulator: Accumulator, finish: Finisher,
                 on_complete: OnComplete, info: CacheInfo) -> None:
        super().__init__(stream, accumulator, finish, on_complete, info)
        self._iterator = iter(stream)

    def __iter__(self) -> RecordingStream:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._iterator)
        except StopIteration:
            data = self._answer_at_end()
            if data is not None:
                self._completed(data)
            raise
        except BaseException:
            self._state = "failed"
            raise
        return self._passed(item)

    def close(self) -> None:
        """Close the live stream; an unfinished answer is not stored."""
        close = self._closing()
        if close is not None:
            close()

    def __enter__(self) -> RecordingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRecordingStream(_Recording):
    """Pass a live ``openai.AsyncStream`` through; store the answer once it completed.

    The store runs in a worker thread: SQLite I/O and embedding never block the loop.
    """

    def __init__(self, stream: Any, accumulator: Accumulator, finish: Finisher,
                 on_complete: OnComplete, info: CacheInfo) -> None:
        super().__init__(stream, accumulator, finish, on_complete, info)
        self._iterator = stream.__aiter__()

    def __aiter__(self) -> AsyncRecordingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._iterator.__anext__()
        except StopAsyncIteration:
            data = self._answer_at_end()
            if data is not None:
                await asyncio.to_thread(self._completed, data)
            raise
        except BaseException:
            self._state = "failed"
            raise
        return self._passed(item)

    async def close(self) -> None:
        """Close the live stream; an unfinished answer is not stored."""
        close = self._closing()
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result

    aclose = close

    async def __aenter__(self) -> AsyncRecordingStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "Accumulator",
    "AsyncRecordingStream",
    "AsyncReplayStream",
    "RecordingStream",
    "ReplayStream",
]
