"""Checks of public arguments. Each failure names the value and what was expected,
and happens before anything is written."""

from __future__ import annotations

import math
from typing import Any

from semcache.errors import (
    ConfigurationError,
    EmptyPromptError,
    InvalidInputError,
    InvalidTypeError,
    ThresholdError,
    TooLargeError,
)
from semcache.store.codecs import MAX_PROMPT_BYTES

_MAX_NAMESPACE_CHARS = 256


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise InvalidTypeError(
            f"prompt must be a str (or a 1-D numpy vector); got {type(prompt).__name__}"
        )
    if not prompt.strip():
        raise EmptyPromptError(f"prompt must be a non-empty string; got {prompt!r}")
    # A UTF-8 character is at most 4 bytes: only long prompts need encoding to be measured.
    if len(prompt) * 4 > MAX_PROMPT_BYTES and (
        size := len(prompt.encode("utf-8", "surrogatepass"))
    ) > MAX_PROMPT_BYTES:
        raise TooLargeError(f"prompt is {size} bytes; the limit is {MAX_PROMPT_BYTES} bytes")
    return prompt


def check_ttl(ttl: Any) -> float | None:
    """A TTL in seconds: None (never expires) or a finite number > 0."""
    if ttl is None:
        return None
    if not _is_number(ttl):
        raise InvalidTypeError(f"ttl must be a number of seconds or None; got {ttl!r}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidInputError(f"ttl must be a finite number of seconds > 0, or None; got {ttl!r}")
    return float(ttl)


def check_threshold(value: Any) -> float:
    if not _is_number(value):
        raise ThresholdError(
            f"similarity_threshold must be a number in [0, 1]; got {value!r}"
        )
    if not (0.0 <= float(value) <= 1.0) or math.isnan(value):
        raise ThresholdError(
            f"similarity_threshold is a cosine similarity in [0, 1]; got {value!r}"
        )
    return float(value)


def check_max_entries(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"max_entries must be an int >= 1 or None; got {value!r}")
    return value


def check_namespace(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"namespace must be a str; got {type(value).__name__}")
    if not value or len(value) > _MAX_NAMESPACE_CHARS or "\x00" in value:
        raise InvalidInputError(
            f"namespace must be 1..{_MAX_NAMESPACE_CHARS} characters without NUL; got {value!r}"
        )
    return value


def check_entry_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTypeError(f"entry_id must be an int; got {value!r}")
    return value
