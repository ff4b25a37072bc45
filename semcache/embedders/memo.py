"""An in-process LRU memo of recent embeddings, so a repeated text is embedded once.

Applications often ask the same question many times in a row (retries, a popular prompt,
``get`` followed by ``put`` of the same text). Embedding with a neural model costs
milliseconds and with a remote API costs money; a dictionary lookup costs nanoseconds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from semcache.embedders.base import Embedder, check_embedder, validate_texts
from semcache.errors import ConfigurationError


class EmbeddingMemo:
    """Wraps an embedder with a thread-safe LRU memo keyed by the exact text.

    Has the same ``name`` and ``dim`` as the wrapped embedder (the vectors are identical,
    so the pinned identity is too) and counts ``hits`` (rows served without embedding)
    and ``misses`` (texts passed to the wrapped embedder).
    The wrapped embedder is called outside the lock, so a slow embed in one thread does
    not block lookups in others; two threads missing on the same text at the same moment
    may both embed it, which is harmless.
    """

    def __init__(self, embedder: Embedder, maxsize: int = 1024) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ConfigurationError(f"memo maxsize must be an int >= 0, got {maxsize!r}")
        self.inner: Embedder = check_embedder(embedder)
        self.name: str = self.inner.name
        self.dim: int = self.inner.dim
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()

    def load(self) -> None:
        """Load the wrapped embedder ahead of the first miss (its ``load()``, if it has one)."""
        load = getattr(self.inner, "load", None)
        if callable(load):
            load()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``, reusing memoized rows and embedding the rest in one batch."""
        items = validate_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}  # text -> output rows, deduplicated within the batch
        with self._lock:
            for i, text in enumerate(items):
                row = self._rows.get(text)
                if row is not None:
                    self._rows.move_to_end(text)
                    out[i] = row
                    self.hits += 1
                else:
                    todo.setdefault(text, []).append(i)
            # A text repeated within the batch is embedded once: only that one is a miss.
            self.misses += len(todo)
            self.hits += sum(len(rows) - 1 for rows in todo.values())
        if not todo:
            return out
        missing = list(todo)
        vectors = self.inner.embed(missing)
        with self._lock:
            for text, vec in zip(missing, vectors, strict=True):
                out[todo[text]] = vec
                if self.maxsize:
                    stored = np.array(vec, dtype=np.float32)  # a copy: callers may mutate `out`
                    stored.flags.writeable = False
                    self._rows[text] = stored
                    self._rows.move_to_end(text)
            while len(self._rows) > self.maxsize:
                self._rows.popitem(last=False)
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def clear(self) -> None:
        """Forget every memoized embedding (counters are kept)."""
        with self._lock:
            self._rows.clear()

    def stats(self) -> dict[str, int]:
        """Counters: ``hits``, ``misses``, ``size``, ``maxsize``."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "size": len(self._rows),
                "maxsize": self.maxsize,
            }

    def __repr__(self) -> str:
        return f"EmbeddingMemo({self.inner!r}, maxsize={self.maxsize})"
