"""Cache keys: one module for every key semcache derives (docs/architecture.md).

Request keys. From one request three things are derived, in one normalization pass
(:class:`RequestKeys`): the exact-key material, the semantic scope and the embedded text.
Requests are chat-completions calls (:func:`analyze_request`, the keyword arguments of
``client.chat.completions.create``), Responses calls (:func:`analyze_responses_request`)
and LangChain lookups (:func:`analyze_langchain`, LangChain's ``(prompt, llm_string)``):

* the exact key: SHA-256 of a canonical JSON (:func:`canonical_json`) of the model, the
  messages and every generation parameter. Two requests share it only if the model would
  receive the same input and generation settings;
* the scope (:func:`semantic_scope`): the partition a semantic (paraphrase) hit may come
  from, everything in the request except the *content* of the last user message, hashed.
  A paraphrase can therefore never be answered across models, parameters, system
  prompts, tools or conversation prefixes;
* the text (:func:`embed_text`): the last user message only (None when it holds non-text
  parts such as images, which makes the request exact-only).

Entry keys (the ``entries.key_hash`` column): SHA-256 over a kind tag, the namespace and
the key material (:func:`prompt_key_hash`, :func:`vector_key_hash`,
:func:`request_key_hash`), so the same prompt in two namespaces (tenants) has two keys and
a prompt, a vector and a request can never collide. These formulas are part of the file
format: changing them makes every stored entry unreachable by its exact key.

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

import numpy as np

from semcache.errors import InvalidInputError, InvalidTypeError, SerializationError
from semcache.store.codecs import MAX_PROMPT_BYTES
from semcache.validation import check_prompt

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


def canonical_json(data: Any) -> bytes:
    """Canonical JSON bytes (keys sorted, no whitespace, UTF-8; NaN/inf refused). ``data``
    must already be JSON data (see :func:`normalize_request` for requests)."""
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
    return hashlib.sha256(canonical_json({"v": _KEY_VERSION, "request": canonical})).digest()


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
    return hashlib.sha256(canonical_json({"v": _KEY_VERSION, "scope": scoped})).hexdigest()


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
    return None if idx is None else _content_text(items[idx].get("content"), text_types)


def _content_text(content: Any, text_types: tuple[str, ...]) -> str | None:
    """A message's text: a str, or its text parts joined with newlines; None when empty or
    when any part is not text (an image, audio, a file...: exact-only)."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in text_types \
                    and isinstance(part.get("text"), str):
                texts.append(part["text"])
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
        canonical_json({"v": _RESPONSES_KEY_VERSION, "api": _RESPONSES_API, "request": canonical})
    ).digest()
    scoped = {**canonical, "input": _with_placeholder(items)} if items else canonical
    scope = hashlib.sha256(
        canonical_json({"v": _RESPONSES_KEY_VERSION, "api": _RESPONSES_API, "scope": scoped})
    ).hexdigest()
    return RequestKeys(key=key, scope=scope, text=_last_user_text(items, ("input_text",)))


# -- LangChain ------------------------------------------------------------------------------

_LANGCHAIN_KEY_VERSION = 1
_HUMAN = ("HumanMessage", "HumanMessageChunk")


def _langchain_digest(payload: dict[str, Any]) -> bytes:
    return hashlib.sha256(canonical_json(
        {"v": _LANGCHAIN_KEY_VERSION, "api": "langchain", **payload})).digest()


def _langchain_messages(prompt: str) -> list[dict[str, Any]] | None:
    """The message list of a chat prompt (LangChain's JSON), None for a plain prompt."""
    if not prompt.startswith("["):
        return None
    try:
        data = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(data, list) or not data:
        return None
    if not all(isinstance(m, dict) and m.get("lc") == 1 and isinstance(m.get("kwargs"), dict)
               for m in data):
        return None
    return data


def _is_human(message: dict[str, Any]) -> bool:
    ident = message.get("id") or []
    return (bool(ident) and ident[-1] in _HUMAN) or message["kwargs"].get("type") == "human"


def analyze_langchain(prompt: str, llm_string: str) -> RequestKeys:
    """Key, scope and embedded text of LangChain's ``(prompt, llm_string)``.

    ``llm_string`` (the model and its parameters) is in the key and the scope. A chat
    model's prompt (LangChain's JSON of the message list) embeds its last human message;
    every other message (and the other fields of that one) is scope. A plain LLM's prompt
    is embedded whole."""
    if not isinstance(prompt, str) or not isinstance(llm_string, str):
        raise InvalidTypeError(
            f"LangChain cache keys are strings; got {type(prompt).__name__} prompt and "
            f"{type(llm_string).__name__} llm_string")
    key = _langchain_digest({"llm": llm_string, "prompt": prompt})
    messages = _langchain_messages(prompt)
    if messages is None:  # a plain LLM prompt: embedded whole
        scope = _langchain_digest({"llm": llm_string, "prompt": {"semcache": "embedded"}})
        return RequestKeys(key, scope.hex(), _content_text(prompt, ("text",)))
    index = next((i for i in range(len(messages) - 1, -1, -1) if _is_human(messages[i])), None)
    if index is None:
        scope = _langchain_digest({"llm": llm_string, "messages": messages})
        return RequestKeys(key, scope.hex(), None)
    last = messages[index]
    placeholder = {**last, "kwargs": {**last["kwargs"], "content": {"semcache": "embedded"}}}
    scoped = [*messages[:index], placeholder, *messages[index + 1:]]
    scope = _langchain_digest({"llm": llm_string, "messages": scoped})
    return RequestKeys(key, scope.hex(), _content_text(last["kwargs"].get("content"), ("text",)))


# -- entry keys: what entries.key_hash holds ------------------------------------------------

#: Namespaces whose key prefix and memo are kept (past it, all start over).
MEMO_NAMESPACES = 64
#: Prompts remembered in all, and the longest remembered.
MEMO_PROMPTS = 4096
MEMO_PROMPT_CHARS = 512
#: Array types whose float32 conversion is the same one by one or as a stacked array.
_FLOAT_DTYPES = (np.dtype("<f4"), np.dtype("<f8"), np.dtype(">f4"), np.dtype(">f8"))


def _entry_digest(kind: bytes, namespace: str, payload: bytes) -> bytes:
    return hashlib.sha256(b"%s\x00%s\x00%s" % (kind, namespace.encode("utf-8"), payload)).digest()


def prompt_key_hash(prompt: str, namespace: str) -> bytes:
    """Entry key of a plain prompt (``get``/``put``): the prompt's bytes, unnormalized."""
    return _entry_digest(b"prompt", namespace, prompt.encode("utf-8"))


def vector_key_hash(vector: np.ndarray, namespace: str) -> bytes:
    """Entry key of an entry put by vector: its float32 bytes as given (not normalized)."""
    return _entry_digest(b"vector", namespace, np.asarray(vector, dtype="<f4").tobytes())


def vector_key_hashes(vectors: list[Any], namespace: str) -> list[bytes]:
    """:func:`vector_key_hash` of each (validated) vector. 1-D float32/float64 arrays of one
    shape are converted as one array, which gives the same float32 bytes row by row;
    anything else is converted one at a time."""
    first = vectors[0] if vectors else None
    if not isinstance(first, np.ndarray) or first.ndim != 1 or not first.size or not all(
            isinstance(v, np.ndarray) and v.dtype in _FLOAT_DTYPES and v.shape == first.shape
            for v in vectors):
        return [vector_key_hash(v, namespace) for v in vectors]
    blob = np.asarray(vectors, dtype="<f4").tobytes()
    size = len(blob) // len(vectors)
    prefix = b"vector\x00%s\x00" % namespace.encode("utf-8")
    return [hashlib.sha256(prefix + blob[i:i + size]).digest()
            for i in range(0, len(blob), size)]


def request_key_hash(material: bytes, namespace: str) -> bytes:
    """Entry key of a request stored through ``Cache.store`` (``material``: its exact-key
    material, e.g. :attr:`RequestKeys.key`)."""
    return _entry_digest(b"request", namespace, material)


class PromptKeyMemo:
    """:func:`prompt_key_hash` with the prompt's validation in the same pass, remembered.

    The prompt is encoded once (the check and the digest share the bytes) and each
    namespace's prefix is built once. Keys of recent short prompts are remembered: an exact
    hit is a prompt seen before, and a dict lookup (~0.1 us) is cheaper than validating and
    hashing it again (~0.45 us of a ~5 us hit). The memo holds prompts that already passed
    validation, so a remembered prompt is valid; it is bounded (:data:`MEMO_PROMPTS` prompts
    in all, of at most :data:`MEMO_PROMPT_CHARS` characters: ~3 MB of ASCII) and starts
    over when full. Threads may race on it harmlessly: every value is the one digest of
    its prompt, and a lost insert only costs a recomputation. Any prompt the fast path does
    not accept goes through :func:`~semcache.validation.check_prompt`, which raises the
    error it always raised.
    """

    def __init__(self) -> None:
        self._prefixes: dict[str, bytes] = {}
        #: namespace -> prompt -> key of the prompts remembered (read by Cache.get's hot
        #: path without a call; only :meth:`key` writes it).
        self.remembered: dict[str, dict[str, bytes]] = {}
        self._remembered = 0

    def key(self, prompt: Any, namespace: str) -> tuple[str, bytes]:
        """``(prompt, key hash)`` of a valid prompt; raises like ``check_prompt`` otherwise."""
        if type(prompt) is str:
            memo = self.remembered.get(namespace)
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
        return text, prompt_key_hash(text, namespace)

    def _remember(self, prompt: str, raw: bytes, namespace: str) -> bytes:
        prefix = self._prefixes.get(namespace)
        if prefix is None:
            if len(self._prefixes) >= MEMO_NAMESPACES:
                self._prefixes.clear()
                self.remembered.clear()
                self._remembered = 0
            prefix = self._prefixes[namespace] = b"prompt\x00%s\x00" % namespace.encode("utf-8")
        key = hashlib.sha256(prefix + raw).digest()
        if len(prompt) <= MEMO_PROMPT_CHARS:
            if self._remembered >= MEMO_PROMPTS:
                self.remembered.clear()  # start over: simple, and bounded
                self._remembered = 0
            memo = self.remembered.get(namespace)
            if memo is None:
                memo = self.remembered[namespace] = {}
            memo[prompt] = key
            self._remembered += 1
        return key


__all__ = [
    "EXCLUDED_PARAMS",
    "PromptKeyMemo",
    "RequestKeys",
    "analyze_langchain",
    "analyze_request",
    "analyze_responses_request",
    "canonical_json",
    "embed_text",
    "normalize_request",
    "normalize_responses_request",
    "prompt_key_hash",
    "request_key",
    "request_key_hash",
    "semantic_scope",
    "vector_key_hash",
    "vector_key_hashes",
]
