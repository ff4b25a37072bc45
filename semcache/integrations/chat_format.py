"""Chat completions as stream chunks and back, on plain JSON dicts.

* :func:`completion_chunk_dicts` replays a stored ``chat.completion`` as the
  ``chat.completion.chunk`` objects the API would have streamed (what the OpenAI wrapper
  validates into SDK chunks and the proxy sends as ``data: {...}`` events).
* :class:`ChunkAccumulator` rebuilds a ``chat.completion`` from streamed chunks (SDK
  objects or dicts), so a live stream can be stored once it completed. It never raises: a
  chunk it cannot read (``{"choices": [1]}``, ``"index": "x"``) only means the stream is
  relayed as it is and not stored.

No ``openai`` import: the proxy uses this without the SDK.
"""

from __future__ import annotations

import logging
from typing import Any

from semcache.integrations.streaming import split_text

logger = logging.getLogger("semcache")


def as_json(value: Any) -> Any:
    """JSON data of an SDK object, or ``value`` itself.

    Only the fields that were set are dumped (``exclude_unset``): for an object the SDK
    built from the API's JSON that is exactly what the API sent, without the ``None``
    placeholders of fields it omitted.
    """
    dump = getattr(value, "model_dump", None)
    if not callable(dump):
        return value
    try:
        # An object the SDK built from malformed JSON (``"index": "x"``) would print
        # pydantic's serializer warnings at the user: the data is judged by the caller.
        return dump(mode="json", exclude_unset=True, warnings=False)
    except TypeError:  # a model_dump without ``warnings`` (pydantic 1)
        return dump(mode="json", exclude_unset=True)


def _tool_call_deltas(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = []
    for i, call in enumerate(message.get("tool_calls") or []):
        if call.get("type", "function") != "function":
            continue
        function = call.get("function") or {}
        calls.append(
            {
                "index": i,
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": function.get("name"),
                    "arguments": function.get("arguments", ""),
                },
            }
        )
    return calls


def _choice_deltas(message: dict[str, Any], strategy: str, length: int) -> list[dict[str, Any]]:
    """The deltas of one choice: content pieces, refusal, tool calls, function call."""
    deltas: list[dict[str, Any]] = [
        {"content": piece} for piece in split_text(message.get("content") or "", strategy, length)
    ]
    if message.get("refusal"):
        deltas.append({"refusal": message["refusal"]})
    tool_calls = _tool_call_deltas(message)
    if tool_calls:
        deltas.append({"tool_calls": tool_calls})
    if message.get("function_call"):
        deltas.append({"function_call": message["function_call"]})
    if not deltas:
        deltas.append({"content": ""})  # a choice always announces its role
    deltas[0] = {"role": message.get("role") or "assistant", **deltas[0]}
    return deltas


def completion_chunk_dicts(
    completion: Any, strategy: str = "words", length: int = 8, *, include_usage: bool = False
) -> list[dict[str, Any]]:
    """Replay a ``chat.completion`` (object or JSON dict) as ``chat.completion.chunk`` dicts.

    Per choice: content pieces from :func:`split_text` (the first carries
    ``role="assistant"``), then refusal / tool calls / function call deltas if any, then
    an empty delta carrying ``finish_reason``; a usage chunk (``choices=[]``) closes the
    stream when ``include_usage``. The deltas concatenate to the stored text exactly.
    Logprobs and audio are not replayed.
    """
    data = as_json(completion)
    base: dict[str, Any] = {
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
        for delta in _choice_deltas(choice.get("message") or {}, strategy, length):
            entry = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
            out.append({**base, "choices": [entry]})
        last = {"index": index, "delta": {}, "logprobs": None,
                "finish_reason": choice.get("finish_reason")}
        out.append({**base, "choices": [last]})
    if include_usage and data.get("usage"):
        out.append({**base, "choices": [], "usage": data["usage"]})
    return out


def _new_choice_state() -> dict[str, Any]:
    return {
        "role": None,
        "content": None,
        "refusal": None,
        "tools": {},
        "function_call": None,
        "finish_reason": None,
        "logprobs": None,
    }


class MalformedChunkError(ValueError):
    """A streamed chunk that is not a well-formed ``chat.completion.chunk``."""


def _object(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a JSON object (None: empty); anything else is malformed."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedChunkError(f"{what} is not an object: {type(value).__name__}")
    return value


def _array(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedChunkError(f"{what} is not an array: {type(value).__name__}")
    return value


def _text(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise MalformedChunkError(f"{what} is not a string: {type(value).__name__}")
    return value


def _index(value: Any, what: str) -> int:
    # bool is an int to Python, and int("1") would accept a string: neither is an index.
    if type(value) is not int or not 0 <= value < 1_000_000:
        raise MalformedChunkError(f"{what} is not an index: {value!r:.40}")
    return value


class ChunkAccumulator:
    """Rebuild a ``chat.completion`` JSON dict from streamed chunks.

    Concatenates content, refusal, tool-call and function-call argument deltas per choice
    index, keeps role, finish_reason, logprobs, and the usage of the usage chunk.

    :meth:`add` never raises: the stream being recorded is the caller's, and it is relayed
    whatever it holds. A chunk that is not a well-formed ``chat.completion.chunk`` (a choice
    that is not an object, an index that is not a number, text that is not a string...)
    makes :meth:`result` None for good: such a stream is not stored.
    """

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._usage: Any = None
        self._choices: dict[int, dict[str, Any]] = {}
        #: Why the stream cannot be stored (the first malformed chunk), or None.
        self.malformed: str | None = None

    def add(self, chunk: Any) -> None:
        """Account for one ``ChatCompletionChunk`` (or its JSON dict)."""
        if self.malformed is not None:
            return
        try:
            self._add(_object(as_json(chunk), "a chunk"))
        except (MalformedChunkError, TypeError, ValueError, AttributeError) as exc:
            self.malformed = str(exc) or type(exc).__name__
            logger.warning("semcache: a streamed chunk is malformed (%s); the stream is "
                           "passed on as it is and not stored", self.malformed)

    def _add(self, data: dict[str, Any]) -> None:
        for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if self._head.get(name) is None and data.get(name) is not None:
                self._head[name] = data[name]
        if data.get("usage"):
            self._usage = _object(data["usage"], "usage")
        for item in _array(data.get("choices"), "choices"):
            choice = _object(item, "a choice")
            index = _index(choice.get("index", 0), "a choice's index")
            state = self._choices.setdefault(index, _new_choice_state())
            self._add_delta(state, _object(choice.get("delta"), "delta"))
            self._add_logprobs(state, _object(choice.get("logprobs"), "logprobs"))
            finish = _text(choice.get("finish_reason"), "finish_reason")
            if finish:
                state["finish_reason"] = finish

    @staticmethod
    def _add_delta(state: dict[str, Any], delta: dict[str, Any]) -> None:
        role = _text(delta.get("role"), "role")
        if role:
            state["role"] = role
        for text_field in ("content", "refusal"):
            text = _text(delta.get(text_field), text_field)
            if text is not None:
                state[text_field] = (state[text_field] or "") + text
        for item in _array(delta.get("tool_calls"), "tool_calls"):
            call = _object(item, "a tool call")
            slot = state["tools"].setdefault(
                _index(call.get("index", 0), "a tool call's index"),
                {"id": None, "type": "function", "name": "", "arguments": ""},
            )
            call_id, kind = _text(call.get("id"), "id"), _text(call.get("type"), "type")
            if call_id:
                slot["id"] = call_id
            if kind:
                slot["type"] = kind
            function = _object(call.get("function"), "function")
            slot["name"] += _text(function.get("name"), "name") or ""
            slot["arguments"] += _text(function.get("arguments"), "arguments") or ""
        if delta.get("function_call"):
            call = _object(delta["function_call"], "function_call")
            fc = state["function_call"] or {"name": "", "arguments": ""}
            fc["name"] += _text(call.get("name"), "name") or ""
            fc["arguments"] += _text(call.get("arguments"), "arguments") or ""
            state["function_call"] = fc

    @staticmethod
    def _add_logprobs(state: dict[str, Any], logprobs: dict[str, Any]) -> None:
        if not logprobs:
            return
        acc = state["logprobs"] or {"content": None, "refusal": None}
        for lp_field in ("content", "refusal"):
            tokens = _array(logprobs.get(lp_field), f"logprobs.{lp_field}")
            if tokens:
                acc[lp_field] = (acc[lp_field] or []) + list(tokens)
        state["logprobs"] = acc

    @property
    def complete(self) -> bool:
        """True when the chunks were well formed, at least one choice was seen and every
        choice has a finish_reason (whether every choice asked for was seen is the
        store's check: :func:`semcache.integrations.pipeline.store`)."""
        return (self.malformed is None and bool(self._choices)
                and all(s["finish_reason"] for s in self._choices.values()))

    def _message(self, state: dict[str, Any]) -> dict[str, Any]:
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
        return message

    def build(self) -> dict[str, Any]:
        """The assembled completion as ``chat.completion`` JSON."""
        choices = [
            {
                "index": index,
                "message": self._message(state),
                "finish_reason": state["finish_reason"],
                "logprobs": state["logprobs"],
            }
            for index, state in sorted(self._choices.items())
        ]
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

    def result(self) -> dict[str, Any] | None:
        """The completion when the stream completed (every choice finished), else None."""
        return self.build() if self.complete else None


__all__ = ["ChunkAccumulator", "MalformedChunkError", "as_json", "completion_chunk_dicts"]
