"""What the local stub server (:mod:`semcache.demo.openai_stub`) answers, as JSON payloads.

Builds ``chat.completion`` objects and their stream chunks, and Responses API
``response`` objects and their stream events, the way the OpenAI API does, from the
stub's answer (content, tool calls, finish reason). Written apart from semcache's own
replay code (:mod:`semcache.integrations.chat_format`, ``responses_format``) on purpose:
tests compare what semcache replays against what this "upstream" sends.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any


def count_tokens(text: str) -> int:
    """A crude but deterministic token count: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def stream_pieces(text: str) -> list[str]:
    """Split ``text`` into word-sized stream deltas that concatenate back to ``text``."""
    return re.findall(r"\s*\S+|\s+$", text)


def _chat_usage(request: dict[str, Any], message: dict[str, Any], n: int) -> dict[str, int]:
    prompt_tokens = count_tokens(json.dumps(request.get("messages", [])))
    completion_tokens = n * count_tokens(
        (message["content"] or "") + json.dumps(message["tool_calls"] or "")
    )
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(request: dict[str, Any], message: dict[str, Any], completion_id: str,
                    model: str) -> dict[str, Any]:
    """A full ``chat.completion`` object answering ``request`` with ``message``."""
    n = int(request.get("n") or 1)
    msg: dict[str, Any] = {"role": "assistant", "content": message["content"]}
    if message["tool_calls"]:
        msg["tool_calls"] = message["tool_calls"]
    choices = [
        {"index": i, "message": msg, "finish_reason": message["finish_reason"], "logprobs": None}
        for i in range(n)
    ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", model),
        "choices": choices,
        "usage": _chat_usage(request, message, n),
        "system_fingerprint": "fp_stub",
    }


def _tool_call_chunks(call: dict[str, Any], t_index: int) -> list[dict[str, Any]]:
    """A tool call streamed in two deltas: id and name with half the arguments, the rest."""
    fn = call.get("function", {})
    args = fn.get("arguments", "")
    half = len(args) // 2
    head = {"index": t_index, "id": call.get("id"), "type": "function",
            "function": {"name": fn.get("name"), "arguments": args[:half]}}
    tail = {"index": t_index, "function": {"arguments": args[half:]}}
    return [{"tool_calls": [head]}, {"tool_calls": [tail]}]


def chat_chunks(request: dict[str, Any], message: dict[str, Any], completion_id: str,
                model: str) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer (``message``) to ``request``."""
    n = int(request.get("n") or 1)
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": request.get("model", model), "system_fingerprint": "fp_stub"}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**base, "choices": [choice]}

    chunks = []
    for i in range(n):
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in stream_pieces(message["content"] or "")]
        for t_index, call in enumerate(message["tool_calls"] or []):
            deltas += _tool_call_chunks(call, t_index)
        chunks += [chunk(i, delta) for delta in deltas]
        chunks.append(chunk(i, {}, message["finish_reason"]))
    options = request.get("stream_options") or {}
    if options.get("include_usage"):
        chunks.append({**base, "choices": [], "usage": _chat_usage(request, message, n)})
    return chunks


def _usage(request: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    input_tokens = count_tokens(json.dumps([request.get("instructions"), request.get("input")]))
    output_tokens = count_tokens(
        (message["content"] or "") + json.dumps(message["tool_calls"] or "")
    )
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _output(message: dict[str, Any], ids: str) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    if message["content"] is not None:
        part = {"type": "output_text", "text": message["content"], "annotations": [],
                "logprobs": []}
        output.append({"type": "message", "id": f"msg_{ids}", "status": "completed",
                       "role": "assistant", "content": [part]})
    for i, call in enumerate(message["tool_calls"] or []):
        function = call.get("function", {})
        output.append({"type": "function_call", "id": f"fc_{ids}_{i}",
                       "call_id": call.get("id") or f"call_{i}", "name": function.get("name"),
                       "arguments": function.get("arguments", ""), "status": "completed"})
    return output


def response_object(request: dict[str, Any], message: dict[str, Any], response_id: str,
                    model: str) -> dict[str, Any]:
    """A full ``response`` object answering ``request`` with ``message``."""
    truncated = message["finish_reason"] == "length"
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if truncated else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request.get("model", model),
        "output": _output(message, response_id.rsplit("-", 1)[-1]),
        "parallel_tool_calls": True,
        "previous_response_id": request.get("previous_response_id"),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": _usage(request, message),
        "metadata": request.get("metadata") or {},
    }


def _item_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    if item["type"] == "function_call":
        return [
            {"type": "response.output_item.added", "output_index": index,
             "item": {**item, "arguments": "", "status": "in_progress"}},
            {"type": "response.function_call_arguments.delta", "item_id": item["id"],
             "output_index": index, "delta": item["arguments"]},
            {"type": "response.function_call_arguments.done", "item_id": item["id"],
             "output_index": index, "arguments": item["arguments"]},
            {"type": "response.output_item.done", "output_index": index, "item": item},
        ]
    part = item["content"][0]
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": index,
         "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **where,
         "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}},
    ]
    for piece in stream_pieces(part["text"]):
        events.append({"type": "response.output_text.delta", **where, "delta": piece,
                       "logprobs": []})
    events.append({"type": "response.output_text.done", **where, "text": part["text"],
                   "logprobs": []})
    events.append({"type": "response.content_part.done", **where, "part": part})
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return events


def response_events(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream events of ``response``, numbered, as the API sends them."""
    pending = {**response, "status": "in_progress", "output": [], "usage": None,
               "incomplete_details": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
    ]
    for index, item in enumerate(response["output"]):
        events.extend(_item_events(index, item))
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    events.append({"type": final, "response": response})
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


__all__ = [
    "chat_chunks",
    "chat_completion",
    "count_tokens",
    "response_events",
    "response_object",
    "stream_pieces",
]
