"""Drop-in caching for the OpenAI Python SDK (``openai.OpenAI`` and ``openai.AsyncOpenAI``).

``wrap(client, cache)`` returns a proxy of ``client`` on which
``chat.completions.create(...)`` is answered from the cache when possible; everything
else (``client.models``, ``client.embeddings``, ``client.api_key``, ``with_options`` ...)
is the client's own object, untouched.

Rules (SPEC sections 3 and 8):

* The exact key, semantic scope and embedded text come from :mod:`semcache.keys`: a hit
  is only ever served for the same model, generation parameters, system prompt, tools
  and earlier turns; the semantic tier compares the last user message only.
* A hit returns a real ``ChatCompletion`` (``ChatCompletion.model_validate`` of the
  stored JSON). With ``stream=True`` it is replayed as real ``ChatCompletionChunk``
  objects, split by the cache's ``stream_chunk_strategy`` / ``stream_chunk_length``;
  the deltas concatenate to the cached text exactly. Role comes on the first chunk of a
  choice, ``finish_reason`` on its last one, and a usage chunk (``choices=[]``) closes
  the stream when ``stream_options={"include_usage": True}`` was asked for.
* A miss calls the API. Non-streamed answers are stored at once; streamed ones are
  passed through chunk by chunk as they arrive and stored only when the stream ended
  normally with a ``finish_reason`` on every choice - never when the caller stopped
  early, closed it, or it raised midway.
* What is stored: ``completion.model_dump(mode="json")`` with ``tokens =
  usage.total_tokens`` (so ``stats()["tokens_saved"]`` grows by it on every hit) and
  metadata ``{"model": ..., "api": "chat.completions"}``.
* Not stored: answers whose ``finish_reason`` is not a natural end (``"length"``
  truncation, ``"content_filter"``, missing) - callers typically retry those and caching
  would pin the bad answer. ``n > 1`` answers ARE stored (``n`` is part of the key, so
  they are only served to requests asking for the same number of choices).
* Per-call control: ``semcache={"no_cache": True}`` (don't read), ``{"no_store": True}``
  (don't write), ``{"ttl": 60}``, ``{"namespace": "tenant-7"}``; the key is removed
  before the SDK sees the call; unknown keys raise InvalidInputError.
* ``cache=None`` uses the process-wide default cache (:func:`semcache.init_cache`),
  looked up on every call: calls made while no default cache is set (or after
  ``disable_cache()``) go straight to the API.
* Failures of the cache itself (unreadable file, embedder down) never fail the LLM call:
  a failed lookup is a miss and a failed store is skipped, both logged as warnings.
* Async clients: cache lookups and stores run in ``asyncio.to_thread`` because a
  semantic lookup embeds the prompt (milliseconds of CPU, or an HTTP call for remote
  embedders) and SQLite I/O blocks; the event loop is never blocked by the cache.

Only ``chat.completions.create`` is cached. ``with_raw_response`` /
``with_streaming_response`` / ``parse`` / the Responses API pass through uncached.
``openai`` is imported lazily, so importing this module does not require it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from semcache.errors import (
    CacheClosedError,
    CacheFileError,
    EmbedderError,
    InvalidInputError,
    InvalidTypeError,
    SemcacheError,
    TooLargeError,
)
from semcache.integrations.streaming import split_text
from semcache.keys import RequestKeys, analyze_request
from semcache.validation import UNSET, check_namespace, check_ttl

logger = logging.getLogger("semcache")

#: Keys accepted in the per-call ``semcache={...}`` control dict.
CONTROL_KEYS: frozenset[str] = frozenset({"no_cache", "no_store", "ttl", "namespace"})
#: Keyword options accepted by :func:`wrap`.
WRAP_OPTIONS: frozenset[str] = frozenset(
    {"namespace", "ttl", "exact_only", "stream_chunk_strategy", "stream_chunk_length"})
#: finish_reason values of a complete answer; anything else is not stored.
STORABLE_FINISH_REASONS: frozenset[str] = frozenset({"stop", "tool_calls", "function_call"})

_UNSET: Any = UNSET
# Cache-layer failures that degrade a lookup to a miss instead of failing the LLM call.
_LOOKUP_DEGRADES = (CacheFileError, EmbedderError, TooLargeError)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class _Options:
    """Per-wrapper settings (from ``wrap(..., **options)``)."""

    namespace: str | None = None
    ttl: Any = _UNSET
    exact_only: bool = False
    stream: tuple[str, int] | None = None  # None: init_cache's (words, 8 by default)


@dataclass(frozen=True)
class _Control:
    """Per-call settings (from ``create(..., semcache={...})``)."""

    no_cache: bool = False
    no_store: bool = False
    ttl: Any = _UNSET
    namespace: str | None = None


def _check_ttl(ttl: Any, where: str) -> None:
    if ttl is not _UNSET:
        check_ttl(ttl, f"{where} 'ttl'")


def _check_namespace(namespace: Any, where: str) -> None:
    if namespace is not None:
        check_namespace(namespace, f"{where} 'namespace'")


def _parse_options(options: dict[str, Any]) -> _Options:
    unknown = sorted(set(options) - WRAP_OPTIONS)
    if unknown:
        raise InvalidInputError(
            f"unknown wrap() option(s) {', '.join(unknown)}; expected {sorted(WRAP_OPTIONS)}"
        )
    _check_namespace(options.get("namespace"), "wrap()")
    _check_ttl(options.get("ttl", _UNSET), "wrap()")
    exact_only = options.get("exact_only", False)
    if not isinstance(exact_only, bool):
        raise InvalidTypeError(f"wrap() 'exact_only' must be a bool, got {exact_only!r}")
    stream = None
    if "stream_chunk_strategy" in options or "stream_chunk_length" in options:
        from semcache.integrations.streaming import check_stream_options

        stream = check_stream_options(options.get("stream_chunk_strategy", "words"),
                                      options.get("stream_chunk_length", 8))
    return _Options(
        namespace=options.get("namespace"),
        ttl=options.get("ttl", _UNSET),
        exact_only=exact_only,
        stream=stream,
    )


def _parse_control(value: Any) -> _Control:
    if value is None:
        return _Control()
    if not isinstance(value, dict):
        raise InvalidTypeError(
            f"semcache= must be a dict of {sorted(CONTROL_KEYS)}, got {type(value).__name__}"
        )
    unknown = sorted(set(value) - CONTROL_KEYS)
    if unknown:
        raise InvalidInputError(
            f"unknown semcache control key(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {sorted(CONTROL_KEYS)}"
        )
    for flag in ("no_cache", "no_store"):
        if flag in value and not isinstance(value[flag], bool):
            raise InvalidTypeError(f"semcache {flag!r} must be a bool, got {value[flag]!r}")
    _check_ttl(value.get("ttl", _UNSET), "semcache")
    _check_namespace(value.get("namespace"), "semcache")
    return _Control(
        no_cache=value.get("no_cache", False),
        no_store=value.get("no_store", False),
        ttl=value.get("ttl", _UNSET),
        namespace=value.get("namespace"),
    )


# ------------------------------------------------------------------------------ plan


@dataclass
class _Plan:
    """Everything decided about one create() call before the cache or API is touched."""

    cache: Any
    keys: RequestKeys
    namespace: str
    text: str | None
    control: _Control
    ttl: Any
    model: str
    stream: bool
    include_usage: bool
    from_default: bool


def _materialize(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn one-shot iterators (generators of messages/tools) into lists.

    The request is read twice - once for the key, once by the SDK - so an iterator would
    arrive empty at the API.
    """
    out = {}
    for name, value in kwargs.items():
        if isinstance(value, Iterator) and not isinstance(value, (str, bytes, dict)):
            value = list(value)
        out[name] = value
    return out


def _resolve_cache(cache: Any) -> Any:
    if cache is not None:
        return cache
    from semcache.defaults import get_default_cache

    return get_default_cache()


def _prepare(
    cache: Any, options: _Options, kwargs: dict[str, Any]
) -> tuple[dict[str, Any], _Plan | None]:
    """Split the caller's kwargs into (what the SDK gets, cache plan or None)."""
    control = _parse_control(kwargs.pop("semcache", None))
    request = _materialize(kwargs)
    from_default = cache is None
    cache = _resolve_cache(cache)
    if cache is None or (control.no_cache and control.no_store):
        return request, None
    if "model" not in request or "messages" not in request:
        return request, None  # let the SDK raise its own error for the malformed call
    keys = analyze_request(request)
    namespace = control.namespace or options.namespace or getattr(cache, "namespace", "default")
    exact_only = options.exact_only or bool(getattr(cache, "hash_only", False))
    ttl = control.ttl if control.ttl is not _UNSET else options.ttl
    stream_options = request.get("stream_options")
    include_usage = bool(
        isinstance(stream_options, dict) and stream_options.get("include_usage", False)
    )
    plan = _Plan(
        cache=cache,
        keys=keys,
        namespace=str(namespace),
        text=None if exact_only else keys.text,
        control=control,
        ttl=ttl,
        model=str(request.get("model")),
        stream=bool(request.get("stream")),
        include_usage=include_usage,
        from_default=from_default,
    )
    return request, plan


def _lookup(plan: _Plan) -> Any | None:
    """Return the cached ChatCompletion for ``plan``, or None on a miss."""
    if plan.control.no_cache:
        return None
    try:
        hit = plan.cache.lookup(
            plan.keys.key, namespace=plan.namespace, scope=plan.keys.scope, text=plan.text
        )
    except (*_LOOKUP_DEGRADES, CacheClosedError) as exc:
        # A default cache closed by another thread's disable_cache()/init_cache() is a
        # race, not a bug: treat it as a miss. An explicit closed cache is a bug.
        if isinstance(exc, CacheClosedError) and not plan.from_default:
            raise
        logger.warning("semcache lookup failed, calling the API instead: %s", exc)
        return None
    if hit is None:
        logger.debug("semcache miss key=%s ns=%s", plan.keys.key.hex()[:12], plan.namespace)
        return None
    from openai.types.chat import ChatCompletion

    try:
        completion = ChatCompletion.model_validate(hit.response)
    except Exception as exc:  # pydantic.ValidationError; the entry is not a completion
        logger.warning(
            "semcache entry %s is not a valid ChatCompletion (%s); calling the API instead",
            getattr(hit, "entry_id", "?"),
            exc,
        )
        return None
    logger.debug(
        "semcache %s hit entry=%s similarity=%.3f ns=%s",
        hit.kind,
        hit.entry_id,
        float(hit.similarity),
        plan.namespace,
    )
    return completion


def _storable(data: dict[str, Any]) -> bool:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(
        isinstance(c, dict) and c.get("finish_reason") in STORABLE_FINISH_REASONS for c in choices
    )


def _store(plan: _Plan, completion: Any) -> None:
    """Store ``completion`` (a ChatCompletion or its JSON dict) under ``plan``."""
    if plan.control.no_store:
        return
    if isinstance(completion, dict):
        data = completion
    elif hasattr(completion, "model_dump"):
        data = completion.model_dump(mode="json")
    else:  # e.g. a raw response object from a custom client: nothing we can rebuild
        return
    if not _storable(data):
        logger.debug(
            "semcache: not storing answer with finish_reason(s) %s",
            [c.get("finish_reason") for c in data.get("choices") or [] if isinstance(c, dict)],
        )
        return
    usage = data.get("usage") or {}
    tokens = (usage.get("total_tokens") or 0) if isinstance(usage, dict) else 0
    extra: dict[str, Any] = {} if plan.ttl is _UNSET else {"ttl": plan.ttl}
    try:
        plan.cache.store(
            plan.keys.key,
            data,
            namespace=plan.namespace,
            scope=plan.keys.scope,
            text=plan.text,
            metadata={"model": plan.model, "api": "chat.completions"},
            tokens=int(tokens),
            **extra,
        )
    except SemcacheError as exc:
        # The caller already paid for this answer; losing the cache write must not
        # lose the answer.
        logger.warning("semcache store failed, answer returned uncached: %s", exc)


# ------------------------------------------------------------------------- streaming


def completion_to_chunks(
    completion: Any,
    strategy: str = "words",
    length: int = 8,
    *,
    include_usage: bool = False,
) -> list[Any]:
    """Replay a ChatCompletion (object or JSON dict) as a list of ``ChatCompletionChunk``.

    Per choice: content pieces from :func:`split_text` (the first carries
    ``role="assistant"``), then refusal / tool calls / function call deltas if any, then
    an empty delta carrying ``finish_reason``. Logprobs and audio are not replayed.
    """
    from openai.types.chat import ChatCompletionChunk

    data = completion.model_dump(mode="json") if hasattr(completion, "model_dump") else completion
    base = {
        "id": data.get("id") or "chatcmpl-semcache",
        "object": "chat.completion.chunk",
        "created": data.get("created") or 0,
        "model": data.get("model") or "",
    }
    for optional in ("system_fingerprint", "service_tier"):
        if data.get(optional) is not None:
            base[optional] = data[optional]
    out: list[dict[str, Any]] = []
    for choice in data.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        deltas: list[dict[str, Any]] = [
            {"content": piece}
            for piece in split_text(message.get("content") or "", strategy, length)
        ]
        if message.get("refusal"):
            deltas.append({"refusal": message["refusal"]})
        tool_calls = [
            {
                "index": i,
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": (call.get("function") or {}).get("name"),
                    "arguments": (call.get("function") or {}).get("arguments", ""),
                },
            }
            for i, call in enumerate(message.get("tool_calls") or [])
            if call.get("type", "function") == "function"
        ]
        if tool_calls:
            deltas.append({"tool_calls": tool_calls})
        if message.get("function_call"):
            deltas.append({"function_call": message["function_call"]})
        if not deltas:
            deltas.append({"content": ""})  # a choice always announces its role
        deltas[0] = {"role": message.get("role") or "assistant", **deltas[0]}
        for delta in deltas:
            out.append({**base, "choices": [{"index": index, "delta": delta}]})
        out.append(
            {
                **base,
                "choices": [
                    {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
                ],
            }
        )
    if include_usage and data.get("usage"):
        out.append({**base, "choices": [], "usage": data["usage"]})
    return [ChatCompletionChunk.model_validate(chunk) for chunk in out]


class ChunkAccumulator:
    """Rebuild a ``chat.completion`` JSON dict from streamed chunks.

    Concatenates content, refusal, tool-call and function-call argument deltas per choice
    index, keeps role, finish_reason, logprobs, and the usage of the usage chunk.
    """

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._usage: Any = None
        self._choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: Any) -> None:
        """Account for one ``ChatCompletionChunk`` (or its JSON dict)."""
        data = chunk.model_dump(mode="json") if hasattr(chunk, "model_dump") else chunk
        for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if self._head.get(name) is None and data.get(name) is not None:
                self._head[name] = data[name]
        if data.get("usage"):
            self._usage = data["usage"]
        for choice in data.get("choices") or []:
            state = self._choices.setdefault(
                int(choice.get("index", 0)),
                {
                    "role": None,
                    "content": None,
                    "refusal": None,
                    "tools": {},
                    "function_call": None,
                    "finish_reason": None,
                    "logprobs": None,
                },
            )
            delta = choice.get("delta") or {}
            if delta.get("role"):
                state["role"] = delta["role"]
            for text_field in ("content", "refusal"):
                if delta.get(text_field) is not None:
                    state[text_field] = (state[text_field] or "") + delta[text_field]
            for call in delta.get("tool_calls") or []:
                slot = state["tools"].setdefault(
                    int(call.get("index", 0)),
                    {"id": None, "type": "function", "name": "", "arguments": ""},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                if call.get("type"):
                    slot["type"] = call["type"]
                fn = call.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if delta.get("function_call"):
                fc = state["function_call"] or {"name": "", "arguments": ""}
                fc["name"] += delta["function_call"].get("name") or ""
                fc["arguments"] += delta["function_call"].get("arguments") or ""
                state["function_call"] = fc
            logprobs = choice.get("logprobs")
            if logprobs:
                acc = state["logprobs"] or {"content": None, "refusal": None}
                for lp_field in ("content", "refusal"):
                    if logprobs.get(lp_field):
                        acc[lp_field] = (acc[lp_field] or []) + list(logprobs[lp_field])
                state["logprobs"] = acc
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]

    @property
    def complete(self) -> bool:
        """True when at least one choice was seen and every choice has a finish_reason."""
        return bool(self._choices) and all(s["finish_reason"] for s in self._choices.values())

    def build(self) -> dict[str, Any]:
        """The assembled completion as ``chat.completion`` JSON."""
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": state["content"],
                "refusal": state["refusal"],
            }
            if state["tools"]:
                message["tool_calls"] = [
                    {
                        "id": slot["id"],
                        "type": slot["type"],
                        "function": {"name": slot["name"], "arguments": slot["arguments"]},
                    }
                    for _, slot in sorted(state["tools"].items())
                ]
            if state["function_call"]:
                message["function_call"] = state["function_call"]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": state["finish_reason"],
                    "logprobs": state["logprobs"],
                }
            )
        return {
            "id": self._head.get("id", "chatcmpl-semcache"),
            "object": "chat.completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "choices": choices,
            "usage": self._usage,
            "system_fingerprint": self._head.get("system_fingerprint"),
            "service_tier": self._head.get("service_tier"),
        }


def _assembled(acc: ChunkAccumulator) -> dict[str, Any] | None:
    """The validated completion JSON of a finished stream, or None if unusable."""
    if not acc.complete:
        logger.debug("semcache: stream ended without finish_reason; not stored")
        return None
    from openai.types.chat import ChatCompletion

    try:
        return ChatCompletion.model_validate(acc.build()).model_dump(mode="json")
    except Exception as exc:  # pydantic.ValidationError
        logger.warning("semcache: streamed answer could not be assembled (%s); not stored", exc)
        return None


class _ReplayStream:
    """Cached answer replayed like ``openai.Stream``: iterable, closable, a context manager."""

    def __init__(self, chunks: list[Any]) -> None:
        self._chunks = iter(chunks)

    def __iter__(self) -> _ReplayStream:
        return self

    def __next__(self) -> Any:
        return next(self._chunks)

    def close(self) -> None:
        """Stop the replay (nothing to release)."""
        self._chunks = iter(())

    def __enter__(self) -> _ReplayStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AsyncReplayStream:
    """Cached answer replayed like ``openai.AsyncStream``."""

    def __init__(self, chunks: list[Any]) -> None:
        self._chunks = iter(chunks)

    def __aiter__(self) -> _AsyncReplayStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Stop the replay (nothing to release)."""
        self._chunks = iter(())

    aclose = close

    async def __aenter__(self) -> _AsyncReplayStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _RecordingStream:
    """Pass a live ``openai.Stream`` through and store the answer once it completed.

    Attributes other than iteration/close (``response``, ...) are the wrapped stream's.
    """

    def __init__(self, stream: Any, on_complete: Callable[[dict[str, Any]], None]) -> None:
        self._stream = stream
        self._iterator = iter(stream)
        self._on_complete = on_complete
        self._acc = ChunkAccumulator()
        self._state = "open"  # open -> done | closed | failed

    def __iter__(self) -> _RecordingStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._iterator)
        except StopIteration:
            if self._state == "open":
                self._state = "done"
                data = _assembled(self._acc)
                if data is not None:
                    self._on_complete(data)
            raise
        except BaseException:
            self._state = "failed"
            raise
        self._acc.add(chunk)
        return chunk

    def close(self) -> None:
        """Close the live stream; an unfinished answer is not stored."""
        if self._state == "open":
            self._state = "closed"
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> _RecordingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _AsyncRecordingStream:
    """Pass a live ``openai.AsyncStream`` through; store the answer once it completed."""

    def __init__(self, stream: Any, on_complete: Callable[[dict[str, Any]], None]) -> None:
        self._stream = stream
        self._iterator = stream.__aiter__()
        self._on_complete = on_complete
        self._acc = ChunkAccumulator()
        self._state = "open"

    def __aiter__(self) -> _AsyncRecordingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            if self._state == "open":
                self._state = "done"
                data = _assembled(self._acc)
                if data is not None:
                    await asyncio.to_thread(self._on_complete, data)
            raise
        except BaseException:
            self._state = "failed"
            raise
        self._acc.add(chunk)
        return chunk

    async def close(self) -> None:
        """Close the live stream; an unfinished answer is not stored."""
        if self._state == "open":
            self._state = "closed"
        close = getattr(self._stream, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result

    aclose = close

    async def __aenter__(self) -> _AsyncRecordingStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _replay_settings(options: _Options) -> tuple[str, int]:
    if options.stream is not None:
        return options.stream
    from semcache.defaults import stream_defaults

    return stream_defaults()


# --------------------------------------------------------------------------- proxies


class _Proxy:
    """Forward every attribute not defined here to the wrapped object."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._target)) | set(super().__dir__()))


class CachedCompletions(_Proxy):
    """``chat.completions`` of a wrapped sync client; ``create`` goes through the cache."""

    def __init__(self, target: Any, cache: Any, options: _Options) -> None:
        super().__init__(target)
        object.__setattr__(self, "_cache", cache)
        object.__setattr__(self, "_options", options)

    def create(self, **kwargs: Any) -> Any:
        """``Completions.create`` with caching; same arguments plus ``semcache={...}``."""
        request, plan = _prepare(self._cache, self._options, kwargs)
        if plan is None:
            return self._target.create(**request)
        cached = _lookup(plan)
        if cached is not None:
            if plan.stream:
                strategy, length = _replay_settings(self._options)
                return _ReplayStream(
                    completion_to_chunks(cached, strategy, length, include_usage=plan.include_usage)
                )
            return cached
        result = self._target.create(**request)
        if plan.stream:
            if plan.control.no_store:
                return result
            return _RecordingStream(result, lambda data: _store(plan, data))
        _store(plan, result)
        return result


class AsyncCachedCompletions(_Proxy):
    """``chat.completions`` of a wrapped async client; ``create`` goes through the cache."""

    def __init__(self, target: Any, cache: Any, options: _Options) -> None:
        super().__init__(target)
        object.__setattr__(self, "_cache", cache)
        object.__setattr__(self, "_options", options)

    async def create(self, **kwargs: Any) -> Any:
        """``AsyncCompletions.create`` with caching; same arguments plus ``semcache={...}``."""
        request, plan = _prepare(self._cache, self._options, kwargs)
        if plan is None:
            return await self._target.create(**request)
        cached = await asyncio.to_thread(_lookup, plan)
        if cached is not None:
            if plan.stream:
                strategy, length = _replay_settings(self._options)
                return _AsyncReplayStream(
                    completion_to_chunks(cached, strategy, length, include_usage=plan.include_usage)
                )
            return cached
        result = await self._target.create(**request)
        if plan.stream:
            if plan.control.no_store:
                return result
            return _AsyncRecordingStream(result, lambda data: _store(plan, data))
        await asyncio.to_thread(_store, plan, result)
        return result


class CachedChat(_Proxy):
    """``client.chat`` of a wrapped client: only ``completions`` is replaced."""

    def __init__(self, target: Any, completions: Any) -> None:
        super().__init__(target)
        object.__setattr__(self, "completions", completions)


class CachedClient(_Proxy):
    """A wrapped OpenAI client (see :func:`wrap`)."""

    def __init__(self, client: Any, cache: Any, options: _Options, is_async: bool) -> None:
        super().__init__(client)
        completions_cls = AsyncCachedCompletions if is_async else CachedCompletions
        chat = CachedChat(client.chat, completions_cls(client.chat.completions, cache, options))
        for name, value in (
            ("__wrapped__", client),
            ("_semcache_cache", cache),
            ("_semcache_options", options),
            ("_semcache_async", is_async),
            ("chat", chat),
        ):
            object.__setattr__(self, name, value)

    def _rewrap(self, client: Any) -> CachedClient:
        return CachedClient(
            client, self._semcache_cache, self._semcache_options, self._semcache_async
        )

    def with_options(self, *args: Any, **kwargs: Any) -> CachedClient:
        """``client.with_options(...)``, still cached with the same cache and options."""
        return self._rewrap(self._target.with_options(*args, **kwargs))

    def copy(self, *args: Any, **kwargs: Any) -> CachedClient:
        """``client.copy(...)``, still cached with the same cache and options."""
        return self._rewrap(self._target.copy(*args, **kwargs))

    def __enter__(self) -> CachedClient:
        self._target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._target.__exit__(*exc)

    async def __aenter__(self) -> CachedClient:
        await self._target.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._target.__aexit__(*exc)

    def __repr__(self) -> str:
        return f"<semcache wrapped {self._target!r}>"


def _is_async_client(client: Any) -> bool:
    try:
        import openai

        if isinstance(client, openai.AsyncOpenAI):
            return True
        if isinstance(client, openai.OpenAI):
            return False
    except ImportError:  # duck-typed client without the openai package
        pass
    # The SDK wraps create() in decorators that hide the coroutine function; unwrap them.
    create = inspect.unwrap(client.chat.completions.create)
    return inspect.iscoroutinefunction(create)


def wrap(client: Any, cache: Any = None, **options: Any) -> CachedClient:
    """Return ``client`` with ``chat.completions.create`` answered from ``cache``.

    Args:
        client: ``openai.OpenAI`` or ``openai.AsyncOpenAI`` (or a subclass such as
            ``AzureOpenAI``, or any object with ``chat.completions.create``).
        cache: a :class:`semcache.Cache`; None uses the process-wide default cache
            of :func:`semcache.init_cache` at each call (no default -> no caching).
        namespace: namespace for this client's entries (default: the cache's).
        ttl: seconds entries written through this client live (default: the cache's).
        exact_only: never do semantic lookups through this client.

    Raises:
        InvalidTypeError: ``client`` has no ``chat.completions.create``.
        InvalidInputError: unknown option.
    """
    parsed = _parse_options(options)
    if isinstance(client, CachedClient):
        client = client.__wrapped__
    completions = getattr(getattr(client, "chat", None), "completions", None)
    if not callable(getattr(completions, "create", None)):
        raise InvalidTypeError(
            f"wrap() expects an openai.OpenAI / openai.AsyncOpenAI client, got "
            f"{type(client).__name__} (no chat.completions.create)"
        )
    if cache is not None and not (callable(getattr(cache, "lookup", None))
                                  and callable(getattr(cache, "store", None))):
        raise InvalidTypeError(
            f"wrap() cache must be a semcache.Cache (or None for the default cache), "
            f"got {type(cache).__name__}"
        )
    return CachedClient(client, cache, parsed, _is_async_client(client))


__all__ = [
    "CONTROL_KEYS",
    "STORABLE_FINISH_REASONS",
    "WRAP_OPTIONS",
    "AsyncCachedCompletions",
    "CachedChat",
    "CachedClient",
    "CachedCompletions",
    "ChunkAccumulator",
    "completion_to_chunks",
    "wrap",
]
