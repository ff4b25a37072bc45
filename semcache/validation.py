"""The one place where public arguments are checked.

``open``, ``put``/``get``, ``lookup``/``store``, ``wrap`` and its per-call controls,
``memoize``, ``init_cache``, import headers and the CLI all call these functions, so the
same value is accepted or refused the same way everywhere. Each failure raises a
:class:`~semcache.errors.SemcacheError` subclass naming the value and what was expected,
before anything is written.

Bounds exist so that a value that passes can never poison a file for the processes that
read it later (a ``ttl`` of ``1e300`` overflowing every expiry computation, a ``dim`` of a
billion failing every open, a lone surrogate that SQLite cannot encode).
"""

from __future__ import annotations

import math
from typing import Any

from semcache.errors import (
    ConfigurationError,
    EmptyPromptError,
    InvalidInputError,
    InvalidTypeError,
    SemcacheError,
    ThresholdError,
    TooLargeError,
)
from semcache.store.codecs import MAX_PROMPT_BYTES


class _Unset:
    """The type of :data:`UNSET`."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unset>"

    def __bool__(self) -> bool:
        return False


#: "Not given": distinguishes an omitted argument from an explicit ``None``
#: (``ttl=None`` means "never expires", an omitted ttl means "the cache's default").
UNSET: Any = _Unset()

#: Longest namespace, in characters.
MAX_NAMESPACE_CHARS = 256
#: Longest TTL accepted: 100 years. ``None`` means "never expires".
MAX_TTL = 100 * 365.25 * 86_400
#: Largest vector dimension a file may pin (OpenAI's largest model is 3072).
MAX_DIM = 16_384
#: Largest token count and entry id (fits a signed 64-bit column with room to add).
MAX_INT = (1 << 62) - 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_text(value: str, what: str) -> str:
    """Refuse text that cannot be stored as UTF-8 (lone surrogates such as ``"\\ud800"``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what} is not valid Unicode text (a lone surrogate {value[exc.start]!r} at "
            f"position {exc.start}); expected text that encodes as UTF-8") from None
    return value


def check_prompt(prompt: Any, what: str = "prompt") -> str:
    """A non-blank ``str`` of at most ``MAX_PROMPT_BYTES`` UTF-8 bytes."""
    if not isinstance(prompt, str):
        raise InvalidTypeError(
            f"{what} must be a str (or a 1-D numpy vector); got {type(prompt).__name__}")
    if not prompt.strip():
        raise EmptyPromptError(f"{what} must be a non-empty string; got {prompt!r}")
    try:
        size = len(prompt.encode("utf-8"))
    except UnicodeEncodeError:
        check_text(prompt, what)
        raise  # pragma: no cover - check_text raised
    if size > MAX_PROMPT_BYTES:
        raise TooLargeError(f"{what} is {size} bytes; the limit is {MAX_PROMPT_BYTES} bytes")
    return prompt


def check_ttl(ttl: Any, what: str = "ttl") -> float | None:
    """A TTL in seconds: ``None`` (never expires) or a number in (0, MAX_TTL]."""
    if ttl is None:
        return None
    if not _is_number(ttl):
        raise InvalidTypeError(f"{what} must be a number of seconds or None; got {ttl!r}")
    if not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL:
        raise InvalidInputError(
            f"{what} must be a number of seconds > 0 and <= {MAX_TTL:.0f} (100 years), or None "
            f"for entries that never expire; got {ttl!r}")
    return float(ttl)


def check_threshold(value: Any, what: str = "similarity_threshold") -> float:
    """A cosine similarity in [0, 1]."""
    if not _is_number(value):
        raise ThresholdError(f"{what} must be a number in [0, 1]; got {value!r}")
    if math.isnan(value) or not 0.0 <= float(value) <= 1.0:
        raise ThresholdError(f"{what} is a cosine similarity in [0, 1]; got {value!r}")
    return float(value)


def check_error_bound(value: Any, what: str = "error_bound") -> float | None:
    """None (threshold decisions), or the fraction of lookups allowed to serve a wrong
    answer: a number in (0, 1)."""
    if value is None:
        return None
    if not _is_number(value) or math.isnan(value) or not 0.0 < float(value) < 1.0:
        raise InvalidInputError(f"{what} must be None or a fraction in (0, 1), e.g. 0.01 for "
                                f"1% of lookups; got {value!r}")
    return float(value)


def check_max_entries(value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 1 <= value <= MAX_INT:
        raise ConfigurationError(f"max_entries must be an int >= 1 or None; got {value!r}")
    return int(value)


def check_max_bytes(value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 1 <= value <= MAX_INT:
        raise ConfigurationError(f"max_bytes must be an int >= 1 (bytes) or None; got {value!r}")
    return int(value)


def check_namespace(value: Any, what: str = "namespace") -> str:
    """1..256 characters, not only whitespace, no NUL, valid Unicode."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} must be a str; got {type(value).__name__}")
    if not value.strip() or len(value) > MAX_NAMESPACE_CHARS or "\x00" in value:
        shown = value if len(value) <= 40 else value[:40] + f"... ({len(value)} characters)"
        raise InvalidInputError(
            f"{what} must be 1..{MAX_NAMESPACE_CHARS} characters, not only whitespace, "
            f"without NUL; got {shown!r}")
    return check_text(value, what)


def check_scope(value: Any) -> str:
    """A request scope: any valid text (``""`` for plain prompts)."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"scope must be a str; got {type(value).__name__}")
    if len(value) > MAX_PROMPT_BYTES:
        raise TooLargeError(f"scope is {len(value)} characters; the limit is {MAX_PROMPT_BYTES}")
    return check_text(value, "scope")


def _int_in(value: Any, low: int, high: int, what: str, error: type[SemcacheError]) -> int:
    """``value`` as an int in [low, high]; ``error`` naming ``what`` otherwise."""
    if not _is_int(value) or not low <= value <= high:
        bounds = "2**62)" if high == MAX_INT else f"{high}]"
        raise error(f"{what} must be an int in [{low}, {bounds}; got {value!r}")
    return int(value)


def check_entry_id(value: Any) -> int:
    if not _is_int(value):
        raise InvalidTypeError(f"entry_id must be an int; got {value!r}")
    return _int_in(value, 0, MAX_INT, "entry_id", InvalidInputError)


def check_tokens(value: Any) -> int:
    return _int_in(value, 0, MAX_INT, "tokens", InvalidInputError)


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{what} must be True or False; got {value!r}")
    return value


def check_dim(value: Any) -> int:
    return _int_in(value, 1, MAX_DIM, "dim", ConfigurationError)


def check_seed(value: Any) -> int:
    return _int_in(value, 0, MAX_INT, "seed", ConfigurationError)


def check_key(value: Any) -> bytes:
    """Exact-key material of a request: non-empty bytes or str."""
    if isinstance(value, str):
        return check_text(value, "key").encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value):
        return bytes(value)
    raise InvalidTypeError(f"key must be non-empty bytes or str (exact-key material of a "
                           f"request); got {type(value).__name__}: {value!r:.60}")


__all__ = [
    "MAX_DIM",
    "MAX_NAMESPACE_CHARS",
    "MAX_TTL",
    "UNSET",
    "check_bool",
    "check_dim",
    "check_entry_id",
    "check_key",
    "check_max_bytes",
    "check_max_entries",
    "check_namespace",
    "check_prompt",
    "check_scope",
    "check_seed",
    "check_text",
    "check_threshold",
    "check_tokens",
    "check_ttl",
]
