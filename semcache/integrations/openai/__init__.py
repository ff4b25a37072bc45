"""Drop-in caching for the OpenAI Python SDK (``openai.OpenAI`` and ``openai.AsyncOpenAI``).

``wrap(client, cache)`` returns a proxy of ``client`` on which ``chat.completions.create``
(and ``.parse``), ``responses.create`` and their ``with_raw_response`` twins are answered
from the cache when possible; everything else (``client.models``, ``client.embeddings``,
``client.api_key``, ``with_options`` ...) is the client's own object, untouched.

Rules (shared with the caching proxy, :mod:`semcache.integrations.pipeline`):

* The exact key, semantic scope and embedded text come from :mod:`semcache.keys`: a hit
  is only ever served for the same model, generation parameters, system prompt or
  instructions, tools and earlier turns; the semantic tier compares the last user message
  only. Chat and Responses requests never share entries.
* A hit returns a real SDK object (``ChatCompletion``, ``ParsedChatCompletion``,
  ``Response``). With ``stream=True`` it is replayed as real ``ChatCompletionChunk`` /
  typed Responses stream events, split by ``stream_chunk_strategy`` /
  ``stream_chunk_length`` (wrap options); the deltas concatenate to the cached text
  exactly. Chat: role on the first chunk of a choice, ``finish_reason`` on its last one,
  a usage chunk (``choices=[]``) when ``stream_options={"include_usage": True}``.
  Responses: ``response.created`` ... ``response.output_text.delta`` ...
  ``response.completed``.
* A miss calls the API. Non-streamed answers are stored at once; streamed ones are
  passed through as they arrive and stored only when the stream ended normally - never
  when the caller stopped early, closed it, or it raised midway.
* What is stored: the answer's JSON with ``tokens = usage.total_tokens`` (so
  ``stats()["tokens_saved"]`` grows by it on every hit) and metadata
  ``{"model": ..., "api": "chat.completions" | "responses"}``.
* Not stored: chat answers whose ``finish_reason`` is not a natural end (``"length"``,
  ``"content_filter"``, missing), Responses whose ``status`` is not ``"completed"``.
  ``n > 1`` answers ARE stored (``n`` is part of the key). Responses requests with
  ``background=True`` or a server-side ``conversation`` are passed through uncached.
* Per-call control: ``semcache={"no_cache": True}`` (don't read),
  ``{"no_store": True}`` (don't write), ``{"ttl": 60}``, ``{"namespace": "tenant-7"}``;
  the key is removed before the SDK sees the call; values are checked like
  ``Cache.put``'s; unknown keys raise InvalidInputError.
* ``semcache.cache_info(result)`` tells whether a result came from the cache, the kind,
  the similarity and the entry id (of the entry served, or the one a miss was stored as).
* ``cache=None`` uses the process-wide default cache (:func:`semcache.init_cache`),
  looked up on every call: calls made while no default cache is set (or after
  ``disable_cache()``) go straight to the API.
* Failures of the cache itself never fail the LLM call: a failed lookup is a miss and
  a failed store is skipped, both logged as warnings.
* Async clients: cache lookups and stores run in ``asyncio.to_thread``.

Passed through uncached: ``with_streaming_response``, streamed ``with_raw_response``
calls, ``responses.parse`` / ``responses.stream``, ``chat.completions.stream``.
``openai`` is imported lazily, so importing this package does not require it.
"""

from __future__ import annotations

from semcache.integrations.chat_format import ChunkAccumulator
from semcache.integrations.openai.client import CachedClient, wrap
from semcache.integrations.openai.options import WRAP_OPTIONS, WrapOptions
from semcache.integrations.openai.raw import CachedRawResponse
from semcache.integrations.openai.resources import (
    AsyncCachedCompletions,
    AsyncCachedResponses,
    CachedChat,
    CachedCompletions,
    CachedResponses,
)
from semcache.integrations.pipeline import CONTROL_KEYS, STORABLE_FINISH_REASONS


def completion_to_chunks(
    completion: object, strategy: str = "words", length: int = 8, *, include_usage: bool = False
) -> list[object]:
    """Replay a ChatCompletion (object or JSON dict) as a list of ``ChatCompletionChunk``."""
    from semcache.integrations.openai.adapters import CHAT_ADAPTER

    request = {"stream_options": {"include_usage": include_usage}}
    return CHAT_ADAPTER.replay(completion, strategy, length, request)


def response_to_events(response: object, strategy: str = "words", length: int = 8) -> list[object]:
    """Replay a Response (object or JSON dict) as typed Responses stream events."""
    from semcache.integrations.openai.adapters import RESPONSES_ADAPTER

    return RESPONSES_ADAPTER.replay(response, strategy, length, {})


__all__ = [
    "CONTROL_KEYS",
    "STORABLE_FINISH_REASONS",
    "WRAP_OPTIONS",
    "AsyncCachedCompletions",
    "AsyncCachedResponses",
    "CachedChat",
    "CachedClient",
    "CachedCompletions",
    "CachedRawResponse",
    "CachedResponses",
    "ChunkAccumulator",
    "WrapOptions",
    "completion_to_chunks",
    "response_to_events",
    "wrap",
]
