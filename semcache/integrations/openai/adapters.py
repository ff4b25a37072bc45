"""How each cached SDK method turns stored JSON into SDK objects and back.

Stored JSON becomes SDK objects the way the SDK itself builds them from the API's JSON
(``Model.construct``: lenient, nested): an answer the API sent is served back as the same
object, even when the API omits a field this SDK version declares required. A stored
value that is not an answer of the right API at all is treated as a miss.

An adapter pairs the API's rules (:mod:`semcache.integrations.pipeline`) with the SDK
types: ``chat.completions.create`` (``ChatCompletion`` / ``ChatCompletionChunk``),
``chat.completions.parse`` (``ParsedChatCompletion``: stored as the plain completion,
parsed again on every hit with the caller's ``response_format``), and
``responses.create`` (``Response`` / typed ``ResponseStreamEvent``). ``openai`` is
imported lazily, when the first call is made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from semcache.integrations.chat_format import ChunkAccumulator, as_json, completion_chunk_dicts
from semcache.integrations.openai.streams import Accumulator
from semcache.integrations.pipeline import CHAT, RESPONSES, ApiRules
from semcache.integrations.responses_format import ResponseCollector, response_event_dicts

logger = logging.getLogger("semcache")


def _invalid(kind: str, exc: Exception) -> None:
    logger.warning("semcache entry is not a valid %s (%s); calling the API instead", kind, exc)


class ChatAdapter:
    """``chat.completions.create``."""

    rules: ApiRules = CHAT
    #: The SDK type of an answer, for messages.
    answer_name = "ChatCompletion"
    #: Logged when a live stream ends without a complete answer (nothing is stored).
    unfinished = "semcache: stream ended without finish_reason; not stored"

    def key_request(self, request: dict[str, Any]) -> Mapping[str, Any]:
        """The request as the API receives it (what the key is computed from)."""
        return request

    def from_data(self, data: Any) -> Any | None:
        """The SDK answer of a stored entry; None if the entry is not one."""
        if not self.rules.is_answer(data):
            _invalid(self.answer_name, ValueError(f"no {self.rules.answer_field!r} list"))
            return None
        return self.answer_type().construct(**data)

    @staticmethod
    def answer_type() -> Any:
        """``ChatCompletion`` (``openai`` is imported on the first call)."""
        from openai.types.chat import ChatCompletion

        return ChatCompletion

    def replay(self, data: Any, strategy: str, length: int, request: Mapping[str, Any]) -> list[Any]:
        """The stored completion as ``ChatCompletionChunk`` objects."""
        from openai.types.chat import ChatCompletionChunk

        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = completion_chunk_dicts(data, strategy, length, include_usage=include_usage)
        return [ChatCompletionChunk.construct(**chunk) for chunk in chunks]

    def new_accumulator(self) -> Accumulator:
        """Collector of a live stream's chunks."""
        return ChunkAccumulator()

    def finish(self, accumulator: Accumulator) -> dict[str, Any] | None:
        """The assembled answer of a finished stream, or None if it did not finish."""
        data = accumulator.result()
        if data is None:
            logger.debug(self.unfinished)
        return data

    def dump(self, result: Any) -> dict[str, Any] | None:
        """JSON of an SDK result; None for objects that cannot be rebuilt from JSON."""
        data = as_json(result)
        return data if isinstance(data, dict) else None


def _construct_event(event: dict[str, Any]) -> Any:
    """A typed Responses stream event, built like the SDK builds streamed ones."""
    from openai._models import construct_type
    from openai.types.responses import ResponseStreamEvent

    return construct_type(type_=ResponseStreamEvent, value=event)


class ResponsesAdapter(ChatAdapter):
    """``responses.create``."""

    rules: ApiRules = RESPONSES
    answer_name = "Response"
    unfinished = "semcache: Responses stream ended without response.completed"

    @staticmethod
    def answer_type() -> Any:
        """``Response`` (``openai`` is imported on the first call)."""
        from openai.types.responses import Response

        return Response

    def replay(self, data: Any, strategy: str, length: int, request: Mapping[str, Any]) -> list[Any]:
        """The stored response as typed Responses stream events."""
        return [_construct_event(e) for e in response_event_dicts(data, strategy, length)]

    def new_accumulator(self) -> Accumulator:
        """Keeps the ``response.completed`` event's response."""
        return ResponseCollector()


def _parsing_helpers() -> tuple[Any, Any, Any] | None:
    """The SDK's own structured-output helpers, or None if this SDK lacks them."""
    try:
        from openai.lib._parsing import (
            parse_chat_completion,
            type_to_response_format_param,
            validate_input_tools,
        )
    except ImportError:
        return None
    return parse_chat_completion, type_to_response_format_param, validate_input_tools


def parse_supported() -> bool:
    """True when ``chat.completions.parse`` can be cached with this SDK."""
    return _parsing_helpers() is not None


class ParsedChatAdapter(ChatAdapter):
    """``chat.completions.parse``: cached as the plain completion the API returned.

    The key is computed from the request as the SDK sends it (``response_format`` turned
    into its JSON schema), so it equals the key of the same ``create`` call; a hit is
    parsed again with the caller's ``response_format`` and tools by the SDK's own code.
    """

    def __init__(self, request: Mapping[str, Any]) -> None:
        helpers = _parsing_helpers()
        assert helpers is not None, "check parse_supported() first"
        # The SDK validates the tools itself when the call reaches it (a miss); a hit
        # implies an earlier call with the same tools passed that validation.
        self._parse, self._to_format, _ = helpers
        self._response_format = request.get("response_format")
        self._tools = request.get("tools")

    def key_request(self, request: dict[str, Any]) -> Mapping[str, Any]:
        """The body the SDK sends: ``response_format`` as its JSON schema form."""
        if self._response_format is None:
            return request
        return {**request, "response_format": self._to_format(self._response_format)}

    def from_data(self, data: Any) -> Any | None:
        """A ``ParsedChatCompletion`` of the stored completion; None if it does not parse."""
        completion = super().from_data(data)
        if completion is None:
            return None
        from openai import omit

        try:
            return self._parse(
                response_format=self._response_format if self._response_format else omit,
                chat_completion=completion,
                input_tools=self._tools if self._tools is not None else omit,
            )
        except Exception as exc:  # the stored JSON no longer fits the caller's model
            _invalid("parsed completion", exc)
            return None

    def dump(self, result: Any) -> dict[str, Any] | None:
        """The plain completion: the ``parsed`` fields are rebuilt on every hit."""
        dump = getattr(result, "model_dump", None)
        if not callable(dump):
            return None
        # ``parsed`` holds the caller's model, which pydantic warns about when dumping.
        data = dump(mode="json", exclude_unset=True, warnings=False)
        for choice in data.get("choices") or []:
            message = choice.get("message") or {}
            message.pop("parsed", None)
            for call in message.get("tool_calls") or []:
                (call.get("function") or {}).pop("parsed_arguments", None)
        return data


CHAT_ADAPTER = ChatAdapter()
RESPONSES_ADAPTER = ResponsesAdapter()

__all__ = [
    "CHAT_ADAPTER",
    "RESPONSES_ADAPTER",
    "ChatAdapter",
    "ParsedChatAdapter",
    "ResponsesAdapter",
    "parse_supported",
]
