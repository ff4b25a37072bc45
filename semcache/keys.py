"""Cache keys for LLM requests (docs/architecture.md, "The request-level API").

Three things are derived from one chat-completions request (the keyword arguments of
``client.chat.completions.create``) or one Responses request (those of
``client.responses.create``, see :func:`analyze_responses_request`):

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
# The Responses API has its own version and an "api" field in everything it hashes, so a
# chat request and a Responses request never share a key or a scope.
_RESPONSES_KEY_VERSION = 1
_RESPONSES_API = "responses"


def _is_sdk_sentinel(value: Any) -> bool:
    """True for openai's NOT_GIVEN / omit sentinels, without importing openai."""
    cls = type(value)
    return cls.__name__ in {"NotGiven", "Omit"} and cls.__module__.startswith("openai")


def _normalize_float(value: float, path: str) -> int | float:
    if not math.isfinite(value):
        raise SerializationError(
            f"request parameter {path!r} holds {value!r}; expected a finite number"
        )
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _normalize_mapping(value: Mapping[Any, Any], path: str) -> dict[str, Any]:
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


def _normalize_object(value: Any, path: str) -> Any:
    """SDK models, numpy scalars, iterables; anything else is refused."""
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


def _normalize(value: Any, path: str) -> Any:
    """Turn ``value`` into plain JSON data, raising SerializationError naming ``path``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)  # int subclasses (IntEnum handled below) -> plain int
    if isinstance(value, float):
        return _normalize_float(value, path)
    if isinstance(value, enum.Enum):
        return _normalize(value.value, path)
    if isinstance(value, Mapping):
        return _normalize_mapping(value, path)
    return _normalize_object(value, path)


def _dumps(data: Any) -> bytes:
    """Canonical JSON bytes (data must already be normalized)."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _normalize_params(request: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Normalized top-level parameters, without excluded and not-given ones."""
    if not isinstance(request, Mapping):
        raise InvalidTypeError(
            f"request must be a dict of {what} arguments, got {type(request).__name__}"
        )
    out: dict[str, Any] = {}
    for name, value in request.items():
        if not isinstance(name, str):
            raise InvalidTypeError(f"request parameter names must be str, got {name!r}")
        if name in EXCLUDED_PARAMS or value is None or _is_sdk_sentinel(value):
            continue
        out[name] = _normalize(value, name)
    return out


def _without_none_fields(items: list[Any], name: str) -> list[dict[str, Any]]:
    cleaned = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidTypeError(f"request '{name}[{i}]' must be a dict, got {item!r:.80}")
        cleaned.append({k: v for k, v in item.items() if v is not None})
    return cleaned


def normalize_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Return the canonical, JSON-ready form of ``request`` used by every key function.

    Excluded parameters and None/NOT_GIVEN values are dropped; messages lose their
    None-valued fields. Raises SerializationError naming the offending parameter.
    """
    out = _normalize_params(request, "chat.completions.create")
    if "model" not in out:
        raise InvalidInputError("request has no 'model'; expected the model name")
    messages = out.get("messages")
    if not isinstance(messages, list):
        raise InvalidInputError(
            f"request 'messages' must be a list of message dicts, got {type(messages).__name__}"
        )
    out["messages"] = _without_none_fields(messages, "messages")
    return out


def _last_user_index(items: list[dict[str, Any]]) -> int | None:
    """Index of the last user message. Responses input items may carry a ``type``: only
    ``"message"`` items (or untyped ones, as chat messages always are) are messages."""
    for i in range(len(items) - 1, -1, -1):
        if items[i].get("role") == "user" and items[i].get("type", "message") == "message":
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
    scoped = {**canonical, "messages": _with_placeholder(canonical["messages"])}
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
    return _last_user_text(canonical["messages"], ("text",))


def _last_user_text(items: list[dict[str, Any]], text_types: tuple[str, ...]) -> str | None:
    """Text of the last user message of ``items``; None if absent, empty or not all text.

    ``text_types`` are the part types holding text (``text`` in chat messages,
    ``input_text`` in Responses input items).
    """
    idx = _last_user_index(items)
    if idx is None:
        return None
    content = items[idx].get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in text_types:
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


def _with_placeholder(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` with the content of the last user message replaced by a fixed marker."""
    idx = _last_user_index(items)
    if idx is None:
        return items
    placeholder = {k: v for k, v in items[idx].items() if k != "content"}
    placeholder["content"] = {"semcache": "embedded"}
    return [*items[:idx], placeholder, *items[idx + 1 :]]


# -- Responses API -------------------------------------------------------------------------


def normalize_responses_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical form of a ``responses.create`` request (see the module docstring).

    ``input`` given as a string becomes the one user message it stands for (the API
    treats ``input="hi"`` and ``input=[{"role": "user", "content": "hi"}]`` the same), and
    input items lose their None-valued fields. ``instructions``, ``previous_response_id``,
    ``tools``, ``text``, ``reasoning``, ``include`` and every other parameter not in
    :data:`EXCLUDED_PARAMS` stay, like chat generation parameters.
    """
    out = _normalize_params(request, "responses.create")
    if "model" not in out and "prompt" not in out:
        raise InvalidInputError(
            "Responses request has no 'model' (nor a stored 'prompt'); expected the model name"
        )
    if "input" in out:
        value = out["input"]
        if isinstance(value, str):
            out["input"] = [{"role": "user", "content": value}]
        elif isinstance(value, list):
            out["input"] = _without_none_fields(value, "input")
        else:
            raise InvalidInputError(
                f"Responses 'input' must be a str or a list of input items, "
                f"got {type(value).__name__}"
            )
    return out


def analyze_responses_request(request: Mapping[str, Any]) -> RequestKeys:
    """Key, scope and embedding text of a ``responses.create`` request.

    Same rules as :func:`analyze_request` for chat: the exact key covers the model, the
    instructions, the input items and every generation parameter; the scope is all of it
    but the content of the last user input message, which is the text embedded (None -
    exact-only - when it holds images, files or audio, or is absent). Keys and scopes
    carry their own version and an ``"api": "responses"`` field: a Responses request
    never shares an entry with a chat request.
    """
    canonical = normalize_responses_request(request)
    items = canonical.get("input", [])
    key = hashlib.sha256(
        _dumps({"v": _RESPONSES_KEY_VERSION, "api": _RESPONSES_API, "request": canonical})
    ).digest()
    scoped = {**canonical, "input": _with_placeholder(items)} if items else canonical
    scope = hashlib.sha256(
        _dumps({"v": _RESPONSES_KEY_VERSION, "api": _RESPONSES_API, "scope": scoped})
    ).hexdigest()
    return RequestKeys(key=key, scope=scope, text=_last_user_text(items, ("input_text",)))


__all__ = [
    "EXCLUDED_PARAMS",
    "RequestKeys",
    "analyze_request",
    "analyze_responses_request",
    "embed_text",
    "normalize_request",
    "normalize_responses_request",
    "request_key",
    "semantic_scope",
]
