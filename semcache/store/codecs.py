"""How values become bytes in the database, and back.

Responses and metadata are JSON, never pickle: a cache file must be safe to read even if
someone else wrote it. Responses are zstd-compressed JSON; vectors are little-endian float32.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from typing import Any

import numpy as np
import orjson
import zstandard

from semcache.errors import SerializationError, TooLargeError

#: Largest response accepted, measured as its JSON text (documented in docs/configuration.md).
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: Largest prompt accepted, in UTF-8 bytes.
MAX_PROMPT_BYTES = 1024 * 1024
#: Largest metadata accepted, as JSON text.
MAX_METADATA_BYTES = 64 * 1024

_ZSTD_LEVEL = 3
# zstandard compressor objects are not safe to share between threads; one per thread.
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def _reject_constant(value: str) -> Any:
    raise ValueError(f"non-finite number {value}")


# One encoder object: json.dumps() with keyword arguments builds a new encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def to_json(value: Any, what: str) -> str:
    """Canonical JSON text of ``value``; raises SerializationError naming ``what``."""
    try:
        return _ENCODER.encode(value)
    except RecursionError:
        raise SerializationError(
            f"{what} is nested too deeply to store as JSON (more than ~"
            f"{sys.getrecursionlimit()} levels)") from None
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"{what} must be JSON-serializable (str, number, bool, None, list, dict); "
            f"got {type(value).__name__}: {exc}"
        ) from None


def to_utf8(text: str, what: str) -> bytes:
    """UTF-8 bytes of JSON text; a lone surrogate (``"\ud800"``) cannot be stored."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationError(
            f"{what} holds text that is not valid Unicode (a lone surrogate "
            f"{text[exc.start]!r}); expected text that encodes as UTF-8") from None


#: Types whose JSON orjson writes exactly as the json module does (bool is not an int here:
#: type() is compared, so subclasses such as IntEnum take the general path).
_SCALARS = frozenset((str, int, bool, type(None)))


def encode_response(value: Any) -> bytes:
    """zstd-compressed JSON of a response; validates serializability and size."""
    raw = None
    kind = type(value)
    if kind in _SCALARS or (kind is float and math.isfinite(value)):
        # A plain string (the common LLM answer) or number has one JSON form, and orjson
        # writes it ~20x faster than the json module; a lone surrogate or an integer
        # beyond 64 bits makes orjson refuse, and the general path below then raises the
        # error naming it or writes it. Containers keep the json module: orjson would also
        # accept values json refuses inside them (UUIDs, enums, NaN written as null).
        try:
            raw = orjson.dumps(value)
        except orjson.JSONEncodeError:
            raw = None
    if raw is None:
        raw = to_utf8(to_json(value, "response"), "response")
    if len(raw) > MAX_RESPONSE_BYTES:
        raise TooLargeError(
            f"response is {len(raw)} bytes of JSON; the limit is {MAX_RESPONSE_BYTES} bytes"
        )
    return _compressor().compress(raw)


# One decoder object: json.loads() with keyword arguments builds a new decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


# 19+ digits in a row may be an integer beyond 64 bits, which some orjson versions turn
# into a float silently: such documents go to the stdlib parser, exact for any integer.
_LONG_DIGITS = re.compile(rb"[0-9]" * 19)
_DIGITS = b"0123456789"


def orjson_exact(raw: bytes) -> bool:
    """True when orjson decodes these JSON bytes exactly: no run of 19+ digits (an integer
    beyond 64 bits, which some orjson versions turn into a float silently)."""
    # A JSON string document holds no number; otherwise counting digits (~1 us per KB)
    # spares most documents the slower regex scan.
    return (raw[:1] == b'"' or len(raw) - len(raw.translate(None, _DIGITS)) < 19
            or _LONG_DIGITS.search(raw) is None)


def loads(raw: bytes, exact: bool | None = None) -> Any:
    """Decode JSON bytes of a response (orjson is ~4x faster on the hot path).

    ``exact``: what :func:`orjson_exact` said of these bytes, if the caller remembers it."""
    if exact is None:
        exact = orjson_exact(raw)
    if exact:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return _DECODER.decode(raw.decode("utf-8"))


def decompress_response(blob: bytes) -> bytes:
    """The JSON bytes of a stored response."""
    return _decompressor().decompress(blob)


def decode_response(blob: bytes) -> Any:
    return loads(decompress_response(blob))


def encode_metadata(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SerializationError(f"metadata must be a dict or None; got {type(value).__name__}")
    text = to_json(value, "metadata")
    if len(to_utf8(text, "metadata")) > MAX_METADATA_BYTES:
        raise TooLargeError(f"metadata is above the {MAX_METADATA_BYTES}-byte limit")
    return text


def decode_metadata(text: str | None) -> dict[str, Any] | None:
    return None if text is None else _DECODER.decode(text)


def encode_vector(vector: np.ndarray) -> bytes:
    """float32 little-endian bytes. float32 (not float16) so that rescoring reproduces
    exact float cosine decisions; the vector is read only for the few rescored candidates."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")

