"""Decoding stored responses, with a per-process memo of recently hit ones."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from semcache.store.codecs import decompress_response, loads

#: Bytes of decompressed responses kept per process.
RESPONSE_MEMO_BYTES = 32 * 1024 * 1024


class ResponseMemo:
    """Decompressed JSON of recently hit entries, by entry id.

    An entry's content never changes under its id (a replacement gets a new id and the
    store still decides whether the id is alive), so a repeated hit can skip zstd.
    Values are decoded afresh on every hit: callers may mutate what they get.
    """

    def __init__(self, budget: int = RESPONSE_MEMO_BYTES) -> None:
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._budget = budget
        self._lock = threading.Lock()

    def decode(self, entry_id: int, blob: bytes) -> Any:
        with self._lock:
            raw = self._items.get(entry_id)
            if raw is not None:
                self._items.move_to_end(entry_id)
        if raw is None:
            raw = decompress_response(blob)
            self._remember(entry_id, raw)
        return loads(raw)

    def _remember(self, entry_id: int, raw: bytes) -> None:
        with self._lock:
            if entry_id in self._items:
                return
            self._items[entry_id] = raw
            self._bytes += len(raw)
            while self._bytes > self._budget and self._items:
                self._bytes -= len(self._items.popitem(last=False)[1])


__all__ = ["RESPONSE_MEMO_BYTES", "ResponseMemo"]
