"""Exact keys: what the ``entries.key_hash`` column holds.

Every key is SHA-256 over a kind tag, the namespace and the key material, so the same
prompt in two namespaces (tenants) has two keys, and a plain prompt, a vector and a
request can never collide. The formulas are part of the file format: changing them makes
every stored entry unreachable by its exact key.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from semcache.store.codecs import MAX_PROMPT_BYTES
from semcache.validation import check_prompt

#: Namespaces whose key prefix and memo are kept (past it, all start over).
MEMO_NAMESPACES = 64
#: Prompts remembered in all, and the longest remembered.
MEMO_PROMPTS = 4096
MEMO_PROMPT_CHARS = 512
#: Array types whose float32 conversion is the same one by one or as a stacked array.
_FLOAT_DTYPES = (np.dtype("<f4"), np.dtype("<f8"), np.dtype(">f4"), np.dtype(">f8"))


def _digest(kind: bytes, namespace: str, payload: bytes) -> bytes:
    return hashlib.sha256(b"%s\x00%s\x00%s" % (kind, namespace.encode("utf-8"), payload)).digest()


def prompt_key(prompt: str, namespace: str) -> bytes:
    """Exact key of a plain prompt (``get``/``put``): the prompt's bytes, unnormalized."""
    return _digest(b"prompt", namespace, prompt.encode("utf-8"))


class PromptKeys:
    """:func:`prompt_key` with the prompt's validation in the same pass, remembered.

    The prompt is encoded once (the check and the digest share the bytes) and each
    namespace's prefix is built once. Keys of recent short prompts are remembered: an exact
    hit is a prompt seen before, and a dict lookup (~0.1 us) is cheaper than validating and
    hashing it again (~0.45 us of a ~5 us hit). The memo holds prompts that already passed
    validation, so a remembered prompt is valid; it is bounded (:data:`MEMO_PROMPTS` prompts
    in all, of at most :data:`MEMO_PROMPT_CHARS` characters: ~3 MB of ASCII) and starts
    over when full. Threads may race on it harmlessly: every value is the one digest of
    its prompt, and a lost insert only costs a recomputation.
    Any prompt the fast path does not accept goes through
    :func:`~semcache.validation.check_prompt`, which raises the error it always raised.
    """

    def __init__(self) -> None:
        self._prefixes: dict[str, bytes] = {}
        self._memo: dict[str, dict[str, bytes]] = {}  # namespace -> prompt -> key
        self._remembered = 0

    def key(self, prompt: Any, namespace: str) -> tuple[str, bytes]:
        """``(prompt, key)`` of a valid prompt; raises like ``check_prompt`` otherwise."""
        if type(prompt) is str:
            memo = self._memo.get(namespace)
            if memo is not None:
                found = memo.get(prompt)
                if found is not None:
                    return prompt, found
            if prompt and not prompt.isspace():
                try:
                    raw = prompt.encode("utf-8")
                except UnicodeEncodeError:
                    raw = None
                if raw is not None and len(raw) <= MAX_PROMPT_BYTES:
                    return prompt, self._remember(prompt, raw, namespace)
        text = check_prompt(prompt)  # raises for anything the fast path refused but a str subclass
        return text, prompt_key(text, namespace)

    def _remember(self, prompt: str, raw: bytes, namespace: str) -> bytes:
        prefix = self._prefixes.get(namespace)
        if prefix is None:
            if len(self._prefixes) >= MEMO_NAMESPACES:
                self._prefixes.clear()
                self._memo.clear()
                self._remembered = 0
            prefix = self._prefixes[namespace] = b"prompt\x00%s\x00" % namespace.encode("utf-8")
        key = hashlib.sha256(prefix + raw).digest()
        if len(prompt) <= MEMO_PROMPT_CHARS:
            if self._remembered >= MEMO_PROMPTS:
                self._memo.clear()  # start over: simple, and bounded
                self._remembered = 0
            memo = self._memo.get(namespace)
            if memo is None:
                memo = self._memo[namespace] = {}
            memo[prompt] = key
            self._remembered += 1
        return key


def vector_key(vector: np.ndarray, namespace: str) -> bytes:
    """Exact key of an entry put by vector: its float32 bytes as given (not normalized)."""
    return _digest(b"vector", namespace, np.asarray(vector, dtype="<f4").tobytes())


def vector_keys(vectors: list[Any], namespace: str) -> list[bytes]:
    """:func:`vector_key` of each (validated) vector. 1-D float32/float64 arrays of one
    shape are converted as one array, which gives the same float32 bytes row by row;
    anything else is converted one at a time."""
    first = vectors[0] if vectors else None
    if not isinstance(first, np.ndarray) or first.ndim != 1 or not first.size or not all(
            isinstance(v, np.ndarray) and v.dtype in _FLOAT_DTYPES and v.shape == first.shape
            for v in vectors):
        return [vector_key(v, namespace) for v in vectors]
    blob = np.asarray(vectors, dtype="<f4").tobytes()
    size = len(blob) // len(vectors)
    prefix = b"vector\x00%s\x00" % namespace.encode("utf-8")
    return [hashlib.sha256(prefix + blob[i:i + size]).digest()
            for i in range(0, len(blob), size)]


def request_key(material: bytes, namespace: str) -> bytes:
    """Exact key of a request stored through :meth:`~semcache.Cache.store`."""
    return _digest(b"request", namespace, material)


__all__ = ["PromptKeys", "prompt_key", "request_key", "vector_key", "vector_keys"]
