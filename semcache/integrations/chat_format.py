"""Chat completions as stream chunks and back, on plain JSON dicts.

* :func:`completion_chunk_dicts` replays a stored ``chat.completion`` as the
  ``chat.completion.chunk`` objects the API would have streamed (what the OpenAI wrapper
  validates into SDK chunks and the proxy sends as ``data: {...}`` events).
* :class:`ChunkAccumulator` rebuilds a ``chat.completion`` from streamed chunks (SDK
  objects or dicts), so a live stream can be stored once it completed.

No ``openai`` import: the proxy uses this without the SDK.
"""

from __future__ import annotations

from typing import Any

from semcache.integrations.streaming import split_text


def as_json(value: Any) -> Any:
    """JSON data of an SDK object, or ``value`` itself.

    Only the fields that were set are dumped (``exclude_unset``): for an object the SDK
    built from the API's JSON that is exactly what the API sent, without the ``None``
    placeholders of fields it omitted.
    """
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_unset=True) if callable(dump) else value


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
        data = as_json(chunk)
        for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if self._head.get(name) is None and data.get(name) is not None:
                self._head[name] = data[name]
        if data.get("usage"):
            self._usage = data["usage"]
        for choice in data.get("choices") or []:
            state = self._choices.setdefault(int(choice.get("index", 0)), _new_choice_state())
            self._add_delta(state, choice.get("delta") or {})
            self._add_logprobs(state, choice.get("logprobs"))
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]

    @staticmethod
    def _add_delta(state: dict[str, Any], delta: dict[str, Any]) -> None:
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
            function = call.get("function") or {}
            slot["name"] += function.get("name") or ""
            slot["arguments"] += function.get("arguments") or ""
        if delta.get("function_call"):
            fc = state["function_call"] or {"name": "", "arguments": ""}
            fc["name"] += delta["function_call"].get("name") or ""
            fc["arguments"] += delta["function_call"].get("arguments") or ""
            state["function_call"] = fc

    @staticmethod
    def _add_logprobs(state: dict[str, Any], logprobs: Any) -> None:
        if not logprobs:
            return
        acc = state["logprobs"] or {"content": None, "refusal": None}
        for lp_field in ("content", "refusal"):
            if logprobs.get(lp_field):
                acc[lp_field] = (acc[lp_field] or []) + list(logprobs[lp_field])
        state["logprobs"] = acc

    @property
    def complete(self) -> bool:
        """True when at least one choice was seen and every choice has a finish_reason."""
        return bool(self._choices) and all(s["finish_reason"] for s in self._choices.values())

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


__all__ = ["ChunkAccumulator", "as_json", "completion_chunk_dicts"]
