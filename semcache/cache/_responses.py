"""Decoding stored responses, with a per-process memo of recently hit ones."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from semcache.store.codecs import decompress_response, loads, orjson_exact

#: Bytes of decompressed responses kept per process.
RESPONSE_MEMO_BYTES = 32 * 1024 * 1024

#: Decoded JSON values that no caller can change: these are handed out as they are.
_IMMUTABLE = (str, int, float, bool, type(None))


class ResponseMemo:
    """Decompressed JSON of recently hit entries, by entry id, checked against the stored
    bytes.

    Within one incarnation of a cache an entry's content never changes under its id (a
    replacement gets a new id), but ids start over when the file is replaced or the schema
    dropped and created again: the same id then names another tenant's entry. So the memo
    keeps the compressed bytes it decoded and serves its value only when the row read now
    carries the same bytes (a comparison of a few hundred bytes, far cheaper than zstd).
    Lists and dicts are decoded afresh on every hit (callers may mutate what they get);
    strings, numbers, booleans and null are immutable and kept decoded.

    A repeated hit reads the memo without taking its lock: ``dict.get`` and
    ``OrderedDict.move_to_end`` are single atomic operations, and an item evicted by
    another thread meanwhile only costs its recency update.
    """

    def __init__(self, budget: int = RESPONSE_MEMO_BYTES) -> None:
        # entry id -> (bytes held, the stored blob, the JSON if it must be decoded again,
        # the value, or for JSON decoded again whether orjson decodes it exactly: see
        # codecs.loads). LookupPipeline.run_prompt reads it without a call (the exact hit
        # of an immutable value: item[2] None, item[1] the row's blob, then moves it to
        # the end as decode does); only this class adds and removes items.
        self.items: OrderedDict[int, tuple[int, bytes, bytes | None, Any]] = OrderedDict()
        self._bytes = 0
        self._budget = budget
        self._lock = threading.Lock()

    def decode(self, entry_id: int, blob: bytes) -> Any:
        item = self.items.get(entry_id)
        if item is None or item[1] != blob:  # not seen, or another entry under this id
            raw = decompress_response(blob)
            exact = orjson_exact(raw)
            value = loads(raw, exact)
            size = len(raw) + len(blob)
            if type(value) in _IMMUTABLE:
                self._remember(entry_id, (size, bytes(blob), None, value))
            else:
                self._remember(entry_id, (size, bytes(blob), raw, exact))
            return value
        try:
            self.items.move_to_end(entry_id)
        except KeyError:
            pass  # evicted by another thread since the get: it stays evicted
        _, _, json_bytes, value = item
        return value if json_bytes is None else loads(json_bytes, value)

    def _remember(self, entry_id: int, item: tuple[int, bytes, bytes | None, Any]) -> None:
        with self._lock:
            old = self.items.pop(entry_id, None)
            if old is not None:
                self._bytes -= old[0]
            self.items[entry_id] = item
            self._bytes += item[0]
            while self._bytes > self._budget and self.items:
                self._bytes -= self.items.popitem(last=False)[1][0]


__all__ = ["RESPONSE_MEMO_BYTES", "ResponseMemo"]
