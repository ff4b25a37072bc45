"""Preparing entries for the store (puts, stores, restored exports) and writing them,
with the size limits (``max_entries``, ``max_bytes``) enforced.

Everything that can fail on bad input (validation, JSON encoding, embedding) happens
before the write transaction starts, so a refused put writes nothing and never holds the
cross-process write lock while a model runs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from semcache.cache._trust import checked_outcome, checked_verdict, record_outcomes
from semcache.cache._writer import Write, Writer
from semcache.cache.entry import Entry
from semcache.errors import InvalidInputError, InvalidTypeError, SemcacheError, TooLargeError
from semcache.kernels.projection import BinaryEncoder
from semcache.keys import (
    PromptKeyMemo,
    prompt_key_hash,
    request_key_hash,
    vector_key_hashes,
)
from semcache.settings import Tunables
from semcache.store.base import NewEntry, Outcome, Verdict, entry_size
from semcache.store.codecs import encode_metadata, encode_response, encode_vector
from semcache.validation import (
    UNSET,
    check_namespace,
    check_prompt,
    check_scope,
    check_text,
    check_tokens,
    check_ttl,
)


def is_vector(value: Any) -> bool:
    """True for a numpy array or a non-empty list/tuple of plain numbers."""
    if isinstance(value, str):
        return False
    return isinstance(value, np.ndarray) or (
        isinstance(value, (list, tuple)) and bool(value)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value))


class EntryFactory:
    """Turns validated put arguments into :class:`NewEntry` records."""

    def __init__(self, tunables: Callable[[], Tunables], encoder: BinaryEncoder | None) -> None:
        self._tunables = tunables
        self._encoder = encoder

    def ttl_seconds(self, ttl: Any) -> float | None:
        return self._tunables().ttl if ttl is UNSET else check_ttl(ttl)

    def new_entry(self, *, key: bytes, namespace: str, scope: str, prompt: str | None,
                  response: Any, vector: np.ndarray | None, ttl: Any, metadata: Any,
                  tokens: int, now: float) -> NewEntry:
        """``vector`` is a validated unit vector (or None: the entry gets no code yet)."""
        ttl_s = self.ttl_seconds(ttl)
        entry = NewEntry(
            key_hash=key, namespace=namespace, scope=scope,
            prompt=prompt if self._tunables().store_prompts else None,
            response=encode_response(response), metadata=encode_metadata(metadata),
            tokens=check_tokens(tokens), created_at=now,
            expires_at=None if ttl_s is None else now + ttl_s, ttl=ttl_s)
        if vector is not None:
            self.attach(entry, vector)
        return entry

    def prepare(self, items: Iterable[Any], namespace: str, *, vector: Any, ttl: Any,
                metadata: Any, tokens: Any, now: float, keys: PromptKeyMemo,
                check_vectors: Callable[[list[Any]], np.ndarray],
                ) -> tuple[list[NewEntry], list[int], list[str]]:
        """Validate and encode the ``(prompt, response)`` pairs of ``put_many``, in batch.

        Returns the entries, and the positions and texts of those still to embed. What all
        pairs share (ttl, metadata, tokens, a ``vector=``) is checked and encoded once;
        prompts given as vectors are validated, normalized and encoded as one array.
        """
        pairs = _pairs(items)
        if not pairs:
            return [], [], []
        texts, hashes, vector_at = self._prompts(pairs, namespace, vector, keys)
        units = None
        if vector_at:
            given_vectors = [pairs[i][0] for i in vector_at]
            units = check_vectors(given_vectors)  # validated before their keys are taken
            for i, key in zip(vector_at, vector_key_hashes(given_vectors, namespace), strict=True):
                hashes[i] = key
        given = check_vectors([vector])[0] if vector is not None else None
        ttl_s = self.ttl_seconds(ttl)
        expires = None if ttl_s is None else now + ttl_s
        responses = [encode_response(r) for _, r in pairs]
        meta = encode_metadata(metadata)
        count = check_tokens(tokens)
        keep_prompts = self._tunables().store_prompts
        entries = [NewEntry(key, namespace, "", text if keep_prompts else None, response, meta,
                            count, now, expires, ttl_s)
                   for key, text, response in zip(hashes, texts, responses, strict=True)]
        if units is not None:
            self.attach_all([entries[i] for i in vector_at], units)
        if given is not None:
            self.attach_same([e for e, t in zip(entries, texts, strict=True) if t is not None],
                             given)
            return entries, [], []
        todo = [(i, t) for i, t in enumerate(texts) if t is not None]
        return entries, [i for i, _ in todo], [t for _, t in todo]

    @staticmethod
    def _prompts(pairs: list[tuple[Any, Any]], namespace: str, vector: Any, keys: PromptKeyMemo,
                 ) -> tuple[list[str | None], list[bytes], list[int]]:
        """(texts, with None for vectors; exact keys; positions of the vector prompts)."""
        texts: list[str | None] = []
        hashes: list[bytes] = []
        vector_at: list[int] = []
        for i, (prompt, _) in enumerate(pairs):
            if type(prompt) is not str and is_vector(prompt):
                if vector is not None:
                    raise InvalidInputError("pass the vector either as the prompt or as vector=")
                vector_at.append(i)
                texts.append(None)
                hashes.append(b"")  # its key once the vector is validated
            else:
                text, key = keys.key(prompt, namespace)
                texts.append(text)
                hashes.append(key)
        return texts, hashes, vector_at

    def attach_same(self, entries: Sequence[NewEntry], vector: np.ndarray) -> None:
        """Give every entry the same (validated unit) vector and its code."""
        if self._encoder is None or not entries:
            return
        code = self._encoder.encode_unit(vector).tobytes()
        blob = encode_vector(vector)
        for entry in entries:
            entry.code, entry.vector = code, blob

    def attach(self, entry: NewEntry, vector: np.ndarray) -> None:
        """Give an entry its code and stored vector (no-op without vectors in the file)."""
        if self._encoder is None:
            return
        entry.code = self._encoder.encode_unit(vector).tobytes()
        entry.vector = encode_vector(vector)

    def attach_all(self, entries: Sequence[NewEntry], vectors: np.ndarray) -> None:
        """Give each entry its (validated unit) vector and code, encoded as one batch."""
        if self._encoder is None or not len(entries):
            return
        n = len(entries)
        vectors = vectors.reshape(n, -1)
        codes = self._encoder.encode_unit(vectors, single=False).tobytes()
        blob = np.ascontiguousarray(vectors, dtype="<f4").tobytes()  # encode_vector, all rows
        code_size, row_size = len(codes) // n, len(blob) // n
        for i, entry in enumerate(entries):
            entry.code = codes[i * code_size:(i + 1) * code_size]
            entry.vector = blob[i * row_size:(i + 1) * row_size]


    def restored(self, e: Entry, check_vector: Callable[[Any], np.ndarray]) -> NewEntry:
        """An exported entry as it will be written by ``Cache.restore``: every value
        validated as a put's would be, its key derived again for its own namespace
        (:func:`restored_key`), its vector checked and normalized (``check_vector``)."""
        ns = check_namespace(e.namespace)
        scope = check_scope(e.scope)
        prompt = None if e.prompt is None else check_text(check_prompt(e.prompt), "prompt")
        expires = e.expires_at
        for name, value in (("created_at", e.created_at), ("accessed_at", e.accessed_at),
                            ("expires_at", expires)):
            if (value is None and name == "created_at") or value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or not 0 <= value < 1e11):
                raise InvalidInputError(f"{name} must be epoch seconds; got {value!r}")
        response = encode_response(e.response)
        vector = None if e.vector is None else check_vector(e.vector)
        key, material = restored_key(ns, scope, prompt, e.key, hashlib.sha256(
            b"%s\x00%s\x00%r\x00%s" % (scope.encode(), response, e.created_at,
                                        b"" if vector is None else vector.tobytes())).digest())
        ttl = check_ttl(e.ttl, "ttl of an imported entry")
        entry = NewEntry(
            key_hash=key, namespace=ns, scope=scope,
            prompt=prompt if self._tunables().store_prompts else None,
            response=response, metadata=encode_metadata(e.metadata),
            tokens=check_tokens(e.tokens), created_at=float(e.created_at),
            expires_at=None if expires is None else float(expires), ttl=ttl,
            key_material=material, accessed_at=e.accessed_at, hits=check_tokens(e.hits))
        if vector is not None:
            self.attach(entry, vector)
        return entry

    def restorable(self, entries: Sequence[Entry], check_vector: Callable[[Any], np.ndarray],
                   on_error: Callable[[int, SemcacheError], None] | None = None,
                   ) -> list[tuple[NewEntry, list[Verdict], list[Outcome]]]:
        """Each exported entry as :meth:`restored` makes it, with its verdicts and outcomes
        checked for its namespace; a bad one raises, or with ``on_error`` is reported as
        ``on_error(index, error)`` and left out."""
        ready = []
        for i, e in enumerate(entries):
            try:
                entry = self.restored(e, check_vector)
                ready.append((entry, [checked_verdict(v, entry.namespace) for v in e.verdicts],
                              [checked_outcome(o, 0, entry.namespace) for o in e.outcomes]))
            except SemcacheError as exc:
                if on_error is None:
                    raise
                on_error(i, exc)
        return ready


def restored_key(ns: str, scope: str, prompt: str | None, material: bytes | None,
                 content_digest: bytes) -> tuple[bytes, bytes | None]:
    """The exact key of an imported entry, computed here for its own namespace."""
    if material is not None:
        if not isinstance(material, bytes) or not material:
            raise InvalidInputError(f"key must be non-empty bytes; got {material!r:.40}")
        return request_key_hash(material, ns), material
    if prompt is not None and not scope:
        return prompt_key_hash(prompt, ns), None
    # No way to rebuild the exact key: a key nobody asks for, derived from the content so
    # that importing the same file twice replaces instead of duplicating.
    return request_key_hash(b"semcache-restored:" + content_digest, ns), None


def _pairs(items: Iterable[Any]) -> list[tuple[Any, Any]]:
    """The items of ``put_many`` as a list, each checked to be a (prompt, response) pair."""
    pairs = items if isinstance(items, list) else list(items)
    for item in pairs:
        if not isinstance(item, tuple) or len(item) != 2:
            raise InvalidTypeError(
                f"put_many takes (prompt, response) pairs; got {type(item).__name__}")
    return pairs


def write_entries(writer: Writer, entries: Sequence[NewEntry], limits: Tunables,
                  now: float, outcomes: Sequence[Outcome] = ()) -> list[int]:
    """Insert ``entries`` in one transaction, with the ``outcomes`` of the explorations
    they answer (``ErrorBound.outcomes_for``), then evict down to the size limits."""
    if not entries:
        return []
    check_fits(entries, limits)
    # One statement when the engine has it and nothing else needs the transaction: no
    # byte limit (its eviction reads sizes) and no outcomes to record with the entry
    # (put_alone checks max_entries itself).
    if len(entries) == 1 and limits.max_bytes is None and not outcomes:
        entry_id = writer.put_alone(entries[0], limits.max_entries)
        if entry_id is not None:
            return [entry_id]

    def work(w: Write) -> list[int]:
        ids = w.txn.insert_many(entries)
        w.count(puts=len(entries))
        record_outcomes(w, outcomes)
        enforce_limit(w, limits, now)
        return ids

    return writer.run(work)


def restore_entries(writer: Writer,
                    restored: Sequence[tuple[NewEntry, Sequence[Verdict], Sequence[Outcome]]],
                    limits: Tunables, now: float) -> list[int]:
    """Exported entries in one transaction, each with its verdicts and outcomes recorded for
    its new id (outcomes not pooled again: the pools come with their namespace), then the
    size limits enforced; returns the new ids."""
    check_fits([e for e, _, _ in restored], limits)

    def work(w: Write) -> list[int]:
        ids = w.txn.insert_many([e for e, _, _ in restored])
        w.txn.restore_verdicts([replace(v, entry_id=i) for i, (_, own, _) in
                                zip(ids, restored, strict=True) for v in own])
        w.txn.record_outcomes([replace(o, entry_id=i) for i, (_, _, own) in
                               zip(ids, restored, strict=True) for o in own], pool=False)
        enforce_limit(w, limits, now)
        return ids

    return writer.run(work)


def check_fits(entries: Sequence[NewEntry], limits: Tunables) -> None:
    """An entry larger than ``max_bytes`` could never be kept: refused before any write."""
    if limits.max_bytes is None:
        return
    for e in entries:
        size = entry_size(e)
        if size > limits.max_bytes:
            raise TooLargeError(f"an entry of {size} bytes does not fit in max_bytes="
                                f"{limits.max_bytes} (namespace {e.namespace!r})")


def enforce_limit(w: Write, limits: Tunables, now: float) -> None:
    """Expired entries go first, then the least recently used, until both ``max_entries``
    and ``max_bytes`` hold."""
    purged = False
    if limits.max_entries is not None:
        excess = w.txn.entry_count() - limits.max_entries
        if excess > 0:
            expired = w.txn.purge_expired(now)
            purged = True
            w.count(expirations=expired)
            if excess - expired > 0:
                w.count(evictions=w.txn.evict_lru(excess - expired))
    if limits.max_bytes is not None:
        excess = w.txn.entry_bytes() - limits.max_bytes
        if excess > 0 and not purged:
            w.count(expirations=w.txn.purge_expired(now))
            excess = w.txn.entry_bytes() - limits.max_bytes
        if excess > 0:
            w.count(evictions=w.txn.evict_bytes(excess))


__all__ = ["EntryFactory", "check_fits", "enforce_limit", "is_vector", "restore_entries", "write_entries"]
