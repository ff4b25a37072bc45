"""Cache keys for LLM requests (SPEC section 3).

Three things are derived from one chat-completions request (the keyword arguments of
``client.chat.completions.create``):

* :func:`request_key` - the exact key: SHA-256 of a canonical JSON of the model, the
  messages and every generation parameter. Two requests share it only if the model
  would receive the same input and generation settings.
* :func:`semantic_scope` - the partition a semantic (paraphrase) hit may come from:
  everything in the request except the *content* of the last user message, hashed.
  A paraphrase can therefore never be answered across models, parameters, system
  prompts, tools or conversation prefixes.
* :func:`embed_text` - the text that is embedded for the semantic tier: the last user
  message only (None when that message holds non-text parts such as images, which makes
  the request exact-only).

Canonical JSON: keys sorted, no whitespace, ``ensure_ascii=False``, NaN/inf rejected.
Before hashing, values are normalized so that equivalent requests hash the same:

* pydantic models / SDK objects -> ``model_dump(mode="json", exclude_none=True)``;
  tuples and other non-string iterables -> lists; enums -> their value;
  numpy scalars -> Python scalars; int dict keys -> str (what JSON does anyway);
* integral floats -> ints (``temperature=1`` and ``temperature=1.0`` are the same request);
* top-level parameters whose value is ``None`` or the SDK's ``NOT_GIVEN``/``omit``
  sentinel are dropped (the API treats null as "use the default"), and so are
  ``None``-valued fields of a message (an assistant turn with ``content=None`` is the
  same turn as one without ``content``).

Excluded parameters (:data:`EXCLUDED_PARAMS`), because they cannot change what the model
generates:

* ``stream``, ``stream_options`` - delivery format only; a streamed and a non-streamed
  call share entries;
* ``timeout``, ``extra_headers``, ``extra_query`` - client/transport options;
* ``metadata``, ``store``, ``user``, ``safety_identifier`` - bookkeeping / abuse
  monitoring identifiers on OpenAI's side;
* ``prompt_cache_key``, ``prompt_cache_retention``, ``prompt_cache_options`` - hints for
  OpenAI's own prefix cache;
* ``semcache`` - semcache's per-call control, never sent to the API.

``extra_body`` IS part of the key: it is merged into the JSON body the API receives, so it
can carry generation parameters the SDK does not know yet (or provider-specific ones
such as vLLM's ``top_k``). Every other parameter, including ones added to the API after
this module was written, is part of the key: an unknown parameter is assumed to matter,
because a missed hit only costs money while a wrong hit returns a wrong answer.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from semcache.errors import InvalidInputError, InvalidTypeError, SerializationError

#: Request parameters that never enter a key or scope (see the module docstring).
EXCLUDED_PARAMS: frozenset[str] = frozenset(
    {
        "stream",
        "stream_options",
        "timeout",
        "extra_headers",
        "extra_query",
        "metadata",
        "store",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "semcache",
    }
)

# Bumped whenever the canonical form changes, so old entries stop matching instead of
# matching the wrong request.
_KEY_VERSION = 1


def _is_sdk_sentinel(value: Any) -> bool:
    """True for openai's NOT_GIVEN / omit sentinels, without importing openai."""
    cls = type(value)
    return cls.__name__ in {"NotGiven", "Omit"} and cls.__module__.startswith("openai")


def _normalize(value: Any, path: str) -> Any:
    """Turn ``value`` into plain JSON data, raising SerializationError naming ``path``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)  # int subclasses (IntEnum handled below) -> plain int
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(
                f"request parameter {path!r} holds {value!r}; expected a finite number"
            )
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, enum.Enum):
        return _normalize(value.value, path)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(k, str):
                key = k
            elif isinstance(k, (int, float)) and not isinstance(k, bool):
                key = json.dumps(k)  # JSON turns numeric keys into strings anyway
            else:
                raise SerializationError(
                    f"request parameter {path!r} has a dict key {k!r} of type "
                    f"{type(k).__name__}; expected str keys"
                )
            out[key] = _normalize(v, f"{path}.{key}")
        return out
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic v2 models, openai SDK objects
        try:
            dumped = model_dump(mode="json", exclude_none=True)
        except Exception as exc:  # pydantic raises its own error types
            raise SerializationError(
                f"request parameter {path!r}: cannot dump {type(value).__name__} to JSON: {exc}"
            ) from exc
        return _normalize(dumped, path)
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":  # numpy scalar
        return _normalize(item(), path)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise SerializationError(
            f"request parameter {path!r} holds bytes; expected JSON data (str, number, "
            "bool, None, list, dict)"
        )
    if isinstance(value, Iterable) and not isinstance(value, (set, frozenset)):
        return [_normalize(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise SerializationError(
        f"request parameter {path!r} holds a {type(value).__name__} ({value!r:.80}); "
        "expected JSON data (str, number, bool, None, list, dict)"
    )


def _dumps(data: Any) -> bytes:
    """Canonical JSON bytes (data must already be normalized)."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def normalize_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Return the canonical, JSON-ready form of ``request`` used by every key function.

    Excluded parameters and None/NOT_GIVEN values are dropped; messages lose their
    None-valued fields. Raises SerializationError naming the offending parameter.
    """
    if not isinstance(request, Mapping):
        raise InvalidTypeError(
            f"request must be a dict of chat.completions.create arguments, "
            f"got {type(request).__name__}"
        )
    out: dict[str, Any] = {}
    for name, value in request.items():
        if not isinstance(name, str):
            raise InvalidTypeError(f"request parameter names must be str, got {name!r}")
        if name in EXCLUDED_PARAMS or value is None or _is_sdk_sentinel(value):
            continue
        out[name] = _normalize(value, name)
    if "model" not in out:
        raise InvalidInputError("request has no 'model'; expected the model name")
    messages = out.get("messages")
    if not isinstance(messages, list):
        raise InvalidInputError(
            f"request 'messages' must be a list of message dicts, got {type(messages).__name__}"
        )
    cleaned = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InvalidTypeError(f"request 'messages[{i}]' must be a dict, got {msg!r:.80}")
        cleaned.append({k: v for k, v in msg.items() if v is not None})
    out["messages"] = cleaned
    return out


def _last_user_index(messages: list[dict[str, Any]]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return None


@dataclass(frozen=True)
class RequestKeys:
    """Everything the cache needs from one request, computed in one normalization pass."""

    key: bytes
    """Exact key (32 bytes), see :func:`request_key`."""
    scope: str
    """Semantic partition (64 hex chars), see :func:`semantic_scope`."""
    text: str | None
    """Text to embed, see :func:`embed_text`."""


def analyze_request(request: Mapping[str, Any]) -> RequestKeys:
    """Compute key, scope and embedding text of ``request`` at once (one normalization)."""
    canonical = normalize_request(request)
    return RequestKeys(key=_key_of(canonical), scope=_scope_of(canonical), text=_text_of(canonical))


def _key_of(canonical: dict[str, Any]) -> bytes:
    return hashlib.sha256(_dumps({"v": _KEY_VERSION, "request": canonical})).digest()


def request_key(request: Mapping[str, Any]) -> bytes:
    """Exact-tier key of a chat-completions request: 32 bytes of SHA-256.

    ``request`` is the dict of keyword arguments given to ``chat.completions.create``.
    """
    return _key_of(normalize_request(request))


def semantic_scope(request: Mapping[str, Any]) -> str:
    """Partition (hex SHA-256) within which a semantic hit for ``request`` may be found.

    It covers the model, every generation parameter, the system prompt(s) and every
    message other than the last user message; of that last user message it keeps all
    fields but its content (e.g. ``name``) and its position in the conversation.
    """
    return _scope_of(normalize_request(request))


def _scope_of(canonical: dict[str, Any]) -> str:
    messages = canonical["messages"]
    idx = _last_user_index(messages)
    if idx is not None:
        placeholder = {k: v for k, v in messages[idx].items() if k != "content"}
        placeholder["content"] = {"semcache": "embedded"}
        messages = [*messages[:idx], placeholder, *messages[idx + 1 :]]
    scoped = {**canonical, "messages": messages}
    return hashlib.sha256(_dumps({"v": _KEY_VERSION, "scope": scoped})).hexdigest()


def embed_text(request: Mapping[str, Any]) -> str | None:
    """Text of the last user message, or None when the request must be exact-only.

    Content given as a list of parts has its text parts joined with newlines. None is
    returned when there is no user message, when the text is empty, or when the last
    user message holds any non-text part (an image, audio, a file): two requests with the
    same words but different images must never share an answer.
    """
    return _text_of(normalize_request(request))


def _text_of(canonical: dict[str, Any]) -> str | None:
    messages = canonical["messages"]
    idx = _last_user_index(messages)
    if idx is None:
        return None
    content = messages[idx].get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                value = part.get("text")
                if not isinstance(value, str):
                    return None
                texts.append(value)
            else:
                return None
        text = "\n".join(texts)
    else:
        return None
    return text if text.strip() else None


__all__ = [
    "EXCLUDED_PARAMS",
    "RequestKeys",
    "analyze_request",
    "embed_text",
    "normalize_request",
    "request_key",
    "semantic_scope",
]
