"""Responses API answers as stream events and back, on plain JSON dicts.

A stored ``response`` object requested again with ``stream=True`` is replayed as the
typed events the API streams, in the order the SDK's stream helpers expect::

    response.created, response.in_progress,
    per output item: response.output_item.added,
        message:  per content part: response.content_part.added,
                  response.output_text.delta... (split by the replay strategy),
                  response.output_text.done, response.content_part.done
                  (refusals: response.refusal.delta / .done)
        function_call: response.function_call_arguments.delta / .done
    response.output_item.done, ...,
    response.completed (carrying the full response)

``sequence_number`` counts from 0. :class:`ResponseCollector` does the reverse for a live
stream: the ``response.completed`` event carries the whole answer.

No ``openai`` import: the proxy uses this without the SDK.
"""

from __future__ import annotations

from typing import Any

from semcache.integrations.chat_format import as_json
from semcache.integrations.streaming import split_text


class _Sequencer:
    """Numbers events in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, kind: str, **fields: Any) -> None:
        self.events.append({"type": kind, "sequence_number": len(self.events), **fields})


def _text_part(out: _Sequencer, item_id: str, where: dict[str, int], part: dict[str, Any],
               strategy: str, length: int) -> None:
    text = part.get("text") or ""
    logprobs = part.get("logprobs") or []
    empty = {**part, "text": "", "annotations": [], "logprobs": []}
    out.emit("response.content_part.added", item_id=item_id, part=empty, **where)
    for piece in split_text(text, strategy, length):
        out.emit("response.output_text.delta", item_id=item_id, delta=piece, logprobs=[], **where)
    out.emit("response.output_text.done", item_id=item_id, text=text, logprobs=logprobs, **where)
    out.emit("response.content_part.done", item_id=item_id, part=part, **where)


def _refusal_part(out: _Sequencer, item_id: str, where: dict[str, int],
                  part: dict[str, Any]) -> None:
    refusal = part.get("refusal") or ""
    out.emit("response.content_part.added", item_id=item_id,
             part={**part, "refusal": ""}, **where)
    out.emit("response.refusal.delta", item_id=item_id, delta=refusal, **where)
    out.emit("response.refusal.done", item_id=item_id, refusal=refusal, **where)
    out.emit("response.content_part.done", item_id=item_id, part=part, **where)


def _message_item(out: _Sequencer, index: int, item: dict[str, Any],
                  strategy: str, length: int) -> None:
    item_id = item.get("id") or ""
    out.emit("response.output_item.added", output_index=index,
             item={**item, "status": "in_progress", "content": []})
    for content_index, part in enumerate(item.get("content") or []):
        where = {"output_index": index, "content_index": content_index}
        if part.get("type") == "output_text":
            _text_part(out, item_id, where, part, strategy, length)
        elif part.get("type") == "refusal":
            _refusal_part(out, item_id, where, part)
        else:
            out.emit("response.content_part.added", item_id=item_id, part=part, **where)
            out.emit("response.content_part.done", item_id=item_id, part=part, **where)
    out.emit("response.output_item.done", output_index=index, item=item)


def _function_call_item(out: _Sequencer, index: int, item: dict[str, Any]) -> None:
    item_id = item.get("id") or ""
    arguments = item.get("arguments") or ""
    out.emit("response.output_item.added", output_index=index,
             item={**item, "arguments": "", "status": "in_progress"})
    out.emit("response.function_call_arguments.delta", item_id=item_id, output_index=index,
             delta=arguments)
    out.emit("response.function_call_arguments.done", item_id=item_id, output_index=index,
             arguments=arguments)
    out.emit("response.output_item.done", output_index=index, item=item)


def response_event_dicts(
    response: Any, strategy: str = "words", length: int = 8
) -> list[dict[str, Any]]:
    """Replay a stored ``response`` (object or JSON dict) as Responses stream event dicts.

    The ``output_text.delta`` pieces come from :func:`split_text` and concatenate to the
    stored text exactly; the last event, ``response.completed``, carries the stored
    response unchanged.
    """
    data = as_json(response)
    in_progress = {
        **data,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
    }
    if "completed_at" in data:
        in_progress["completed_at"] = None
    out = _Sequencer()
    out.emit("response.created", response=in_progress)
    out.emit("response.in_progress", response=in_progress)
    for index, item in enumerate(data.get("output") or []):
        if item.get("type") == "message":
            _message_item(out, index, item, strategy, length)
        elif item.get("type") == "function_call":
            _function_call_item(out, index, item)
        else:  # reasoning, tool results...: announced whole
            out.emit("response.output_item.added", output_index=index, item=item)
            out.emit("response.output_item.done", output_index=index, item=item)
    out.emit("response.completed", response=data)
    return out.events


class ResponseCollector:
    """Keep the final response of a live Responses stream (from ``response.completed``)."""

    def __init__(self) -> None:
        self._final: dict[str, Any] | None = None
        self.last_type: str | None = None

    def add(self, event: Any) -> None:
        """Account for one stream event (SDK object or JSON dict)."""
        data = as_json(event)
        if not isinstance(data, dict):
            return
        self.last_type = data.get("type")
        if self.last_type == "response.completed" and isinstance(data.get("response"), dict):
            self._final = data["response"]

    def result(self) -> dict[str, Any] | None:
        """The completed response, or None when the stream did not complete."""
        return self._final


def output_text(response: Any) -> str:
    """Concatenated ``output_text`` of a response (what ``Response.output_text`` gives)."""
    data = as_json(response)
    return "".join(
        part.get("text") or ""
        for item in data.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    )


__all__ = ["ResponseCollector", "output_text", "response_event_dicts"]
