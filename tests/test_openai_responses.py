"""semcache.wrap(...).responses.create: the Responses API through the real SDK and the stub."""

from __future__ import annotations

import openai
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseTextDeltaEvent

import semcache
from semcache.demo.openai_stub import StubOpenAIServer
from semcache.integrations.openai import response_to_events, wrap
from semcache.integrations.streaming import split_text

QUESTION = "What is the capital of France?"
PARAPHRASE = "Please tell me: which is the capital of France"
UNRELATED = "How tall is Mount Everest?"
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup", "arguments": '{"city": "Paris"}'},
}


@pytest.fixture
def server():
    with StubOpenAIServer() as stub:
        yield stub


@pytest.fixture
def clock():
    return [3_000_000.0]


@pytest.fixture
def raw_client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def client(raw_client, cache):
    return wrap(raw_client, cache)


def ask(client, text=QUESTION, **kwargs):
    kwargs.setdefault("model", "gpt-test")
    return client.responses.create(input=text, **kwargs)


def deltas(events) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def test_repeat_is_exact_hit_and_paraphrase_semantic(client, server, cache):
    first = ask(client)
    assert isinstance(first, Response) and first.output_text.startswith("You asked: " + QUESTION)
    again = ask(client)
    paraphrase = ask(client, PARAPHRASE)
    assert again == first and paraphrase.output_text == first.output_text
    assert len(server.responses_requests) == 1
    stats = cache.stats()
    assert (stats["exact_hits"], stats["semantic_hits"], stats["misses"]) == (1, 1, 1)
    assert stats["tokens_saved"] == 2 * first.usage.total_tokens
    ask(client, UNRELATED)
    assert len(server.responses_requests) == 2


def test_input_items_and_string_input_share_entries(client, server):
    ask(client)
    ask(client, [{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}])
    ask(client, [{"role": "user", "content": QUESTION}])
    # The parts form differs from the plain string in the request: a new exact key, but the
    # same scope and embedded text, so it is a semantic hit; the plain form is exact.
    assert len(server.responses_requests) == 1


@pytest.mark.parametrize(
    "variant",
    [
        {"model": "gpt-other"},
        {"instructions": "Be verbose."},
        {"temperature": 0.3},
        {"max_output_tokens": 50},
        {"text": {"format": {"type": "json_object"}}},
        {"tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]},
        {"previous_response_id": "resp_earlier"},
    ],
)
def test_different_scope_never_hits(client, server, variant):
    base = {"model": "gpt-test", "instructions": "Be terse."}
    client.responses.create(input=QUESTION, **base)
    client.responses.create(input=PARAPHRASE, **{**base, **variant})
    assert len(server.responses_requests) == 2


def test_chat_and_responses_never_share_entries(client, server):
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": QUESTION}])
    ask(client)
    assert len(server.chat_requests) == 1 and len(server.responses_requests) == 1


@pytest.mark.parametrize("extra", [{"background": True}, {"conversation": "conv_1"}])
def test_stateful_requests_pass_through(client, server, cache, extra):
    ask(client, **extra)
    ask(client, **extra)
    assert len(server.responses_requests) == 2
    assert cache.stats()["entries"] == 0


def test_stream_replay_matches_what_the_api_streams(raw_client, server, make_cache):
    cache = make_cache()
    client = wrap(raw_client, cache, stream_chunk_strategy="words", stream_chunk_length=1)
    live = list(ask(client, stream=True))  # miss: the stub's own events, relayed
    stream = ask(client, stream=True)
    replay = list(stream)
    assert len(server.responses_requests) == 1
    assert semcache.cache_info(stream).kind == "exact"
    assert [e.type for e in replay] == [e.type for e in live]
    assert [e.sequence_number for e in replay] == list(range(len(replay)))
    assert all(type(r) is type(lv) for r, lv in zip(replay, live, strict=True))
    assert deltas(replay) == deltas(live)
    assert replay[-1].response == live[-1].response


@pytest.mark.parametrize("strategy, length", [("sentences", 1), ("characters", 7), ("words", 3)])
def test_stream_replay_after_non_streamed_miss(raw_client, server, make_cache, strategy, length):
    client = wrap(raw_client, make_cache(), stream_chunk_strategy=strategy,
                  stream_chunk_length=length)
    response = ask(client)
    events = list(ask(client, stream=True))
    assert len(server.responses_requests) == 1
    pieces = [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert pieces == split_text(response.output_text, strategy, length)
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    assert events[-1].type == "response.completed" and events[-1].response == response
    # The SDK's own stream state machine accepts the sequence and rebuilds the answer.
    state = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    handled = [out for event in events for out in state.handle_event(event)]
    assert handled[-1].response.output_text == response.output_text


def test_streamed_miss_stored_only_after_completion(client, server, cache):
    stream = ask(client, stream=True)
    iterator = iter(stream)
    expected = len(server.response_events({"model": "gpt-test", "input": QUESTION}))
    for _ in range(expected):
        next(iterator)
        assert cache.stats()["entries"] == 0
    with pytest.raises(StopIteration):
        next(iterator)
    info = semcache.cache_info(stream)
    assert cache.stats()["entries"] == 1 and info.stored and info.entry_id is not None
    hit = ask(client, PARAPHRASE)
    assert semcache.cache_info(hit).entry_id == info.entry_id
    assert len(server.responses_requests) == 1


def test_interrupted_or_closed_streams_store_nothing(client, server, cache):
    server.fail_stream_after = 2
    with pytest.raises(openai.APIConnectionError):
        list(ask(client, stream=True))
    server.fail_stream_after = None
    with ask(client, stream=True) as stream:
        next(iter(stream))
    assert cache.stats()["entries"] == 0
    ask(client)
    assert len(server.responses_requests) == 3


def test_incomplete_answers_are_not_stored(client, server, cache):
    server.responder = lambda req: {"content": "Paris is", "finish_reason": "length"}
    first = ask(client)
    assert first.status == "incomplete"
    list(ask(client, stream=True))
    ask(client)
    assert len(server.responses_requests) == 3 and cache.stats()["entries"] == 0


def test_function_call_answer_cached_and_replayed(client, server):
    server.responder = lambda req: {"content": None, "tool_calls": [TOOL_CALL]}
    first = ask(client)
    assert first.output[0].type == "function_call"
    events = list(ask(client, stream=True))
    assert len(server.responses_requests) == 1
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == TOOL_CALL["function"]["arguments"]
    assert events[-1].response.output[0].call_id == "call_1"


def test_controls_and_pass_through(client, server, cache):
    ask(client, semcache={"namespace": "tenant-7", "ttl": 60})
    ask(client, semcache={"namespace": "tenant-7"})
    ask(client)
    assert len(server.responses_requests) == 2
    assert all("semcache" not in body for body in server.responses_requests)
    retrieved = client.responses.retrieve  # not cached: the SDK's own method
    assert retrieved == client.responses._target.retrieve


def test_response_to_events_is_public_and_round_trips(server):
    response = server.response({"model": "m", "input": QUESTION})
    events = response_to_events(response, "sentences", 1)
    assert events[-1].response.output_text == Response.construct(**response).output_text


@pytest.fixture
async def async_client(server, cache):
    raw = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    yield wrap(raw, cache)
    await raw.close()


async def test_async_hits_streams_and_recording(async_client, server, cache):
    first = await async_client.responses.create(model="gpt-test", input=QUESTION)
    hit = await async_client.responses.create(model="gpt-test", input=PARAPHRASE)
    assert hit.output_text == first.output_text
    stream = await async_client.responses.create(model="gpt-test", input=QUESTION, stream=True)
    events = [event async for event in stream]
    assert deltas(events) == first.output_text
    assert len(server.responses_requests) == 1
    live = await async_client.responses.create(model="gpt-test", input=UNRELATED, stream=True)
    received = [event async for event in live]
    assert received[-1].type == "response.completed"
    assert semcache.cache_info(live).stored
    again = await async_client.responses.create(model="gpt-test", input=UNRELATED)
    assert semcache.cache_info(again).hit and len(server.responses_requests) == 2
    assert cache.stats()["entries"] == 2
