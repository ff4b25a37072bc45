"""semcache.wrap(openai.OpenAI(...)): the real SDK against the local stub server.

Every test counts the requests that reach the stub: a cache hit must not call it. The
tests that use a cache run on both engines (an SQLite file, a PostgreSQL schema).
"""

from __future__ import annotations

import threading

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from semcache.demo.openai_stub import StubOpenAIServer
from semcache.errors import InvalidInputError, InvalidTypeError
from semcache.integrations.openai import (
    ChunkAccumulator,
    completion_to_chunks,
    wrap,
)
from semcache.integrations.streaming import STRATEGIES, split_text
from tests.engines import ENGINES
from tests.word_embedder import WordEmbedder

pytestmark = pytest.mark.engines(*ENGINES)

QUESTION = "What is the capital of France?"
PARAPHRASE = "Please tell me: which is the capital of France"
UNRELATED = "How tall is Mount Everest?"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def server():
    with StubOpenAIServer() as stub:
        yield stub


@pytest.fixture
def clock():
    now = [1_000_000.0]
    return now


@pytest.fixture
def raw_client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test-not-a-key", max_retries=0)


@pytest.fixture
def client(raw_client, cache):
    return wrap(raw_client, cache)


def ask(client, text=QUESTION, **kwargs):
    kwargs.setdefault("model", "gpt-test")
    return client.chat.completions.create(messages=user(text), **kwargs)


def content_of(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# -- exact and semantic hits ----------------------------------------------------------------


def test_repeat_is_exact_hit_and_server_sees_one_request(client, server, cache):
    first = ask(client)
    second = ask(client)
    assert isinstance(first, ChatCompletion) and isinstance(second, ChatCompletion)
    assert second == first
    assert second.choices[0].message.content.startswith("You asked: " + QUESTION)
    assert len(server.chat_requests) == 1
    stats = cache.stats()
    assert (stats["hits"], stats["exact_hits"], stats["misses"]) == (1, 1, 1)


def test_paraphrase_is_semantic_hit(client, server, cache):
    first = ask(client, QUESTION)
    second = ask(client, PARAPHRASE)
    assert second.choices[0].message.content == first.choices[0].message.content
    assert len(server.chat_requests) == 1
    assert cache.stats()["semantic_hits"] == 1


def test_unrelated_question_misses(client, server):
    ask(client, QUESTION)
    other = ask(client, UNRELATED)
    assert UNRELATED in other.choices[0].message.content
    assert len(server.chat_requests) == 2


def test_semantic_hit_with_builtin_hashing_embedder(raw_client, server, make_cache):
    cache = make_cache("hashing.db", embedder="hashing", similarity_threshold=0.75)
    client = wrap(raw_client, cache)
    ask(client, "What is the capital city of France?")
    hit = ask(client, "what is the capital city of france")
    assert len(server.chat_requests) == 1
    assert "capital city of France?" in hit.choices[0].message.content
    ask(client, UNRELATED)
    assert len(server.chat_requests) == 2


SYSTEM = {"role": "system", "content": "You are terse."}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    "variant",
    [
        {"model": "gpt-other"},
        {"temperature": 0.9},
        {"max_tokens": 12},
        {"seed": 3},
        {"response_format": {"type": "json_object"}},
        {"tools": TOOLS},
        {"messages": [{"role": "system", "content": "You are verbose."}, *user(QUESTION)]},
        {"messages": user(QUESTION)},  # no system prompt at all
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                *user(QUESTION),
            ]
        },
    ],
    ids=[
        "model",
        "temperature",
        "max_tokens",
        "seed",
        "response_format",
        "tools",
        "system",
        "no-system",
        "earlier-turn",
    ],
)
@pytest.mark.parametrize("second_text", [QUESTION, PARAPHRASE], ids=["same", "paraphrase"])
def test_different_scope_never_hits(client, server, variant, second_text):
    base = {"model": "gpt-test", "messages": [SYSTEM, *user(QUESTION)], "temperature": 0}
    client.chat.completions.create(**base)
    request = {**base, **variant}
    request["messages"] = [*request["messages"][:-1], *user(second_text)]
    client.chat.completions.create(**request)
    assert len(server.chat_requests) == 2


def test_excluded_params_still_hit(client, server):
    ask(client)
    ask(
        client,
        user="someone",
        metadata={"trace": "x"},
        timeout=20,
        extra_headers={"X-Trace": "1"},
        store=False,
    )
    assert len(server.chat_requests) == 1


def test_image_request_is_exact_only(client, server):
    def image_request(text):
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        content = [{"type": "text", "text": text}, image]
        return client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": content}]
        )

    image_request(QUESTION)
    image_request(QUESTION)
    assert len(server.chat_requests) == 1
    image_request(PARAPHRASE)
    assert len(server.chat_requests) == 2


def test_messages_generator_is_materialized(client, server):
    ask(client)
    reply = client.chat.completions.create(model="gpt-test", messages=iter(user(QUESTION)))
    assert len(server.chat_requests) == 1
    reply = client.chat.completions.create(model="gpt-test", messages=iter(user(UNRELATED)))
    assert server.chat_requests[-1]["messages"] == user(UNRELATED)
    assert UNRELATED in reply.choices[0].message.content


# -- streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("length", [1, 2, 8])
def test_stream_replay_after_non_streamed_miss(raw_client, server, make_cache, strategy, length):
    cache = make_cache()
    client = wrap(raw_client, cache, stream_chunk_strategy=strategy, stream_chunk_length=length)
    completion = ask(client)
    text = completion.choices[0].message.content
    stream = ask(client, stream=True)
    chunks = list(stream)
    assert len(server.chat_requests) == 1
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert content_of(chunks) == text
    assert [c.choices[0].delta.content for c in chunks[:-1]] == split_text(text, strategy, length)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert {(c.id, c.model, c.created) for c in chunks} == {
        (completion.id, completion.model, completion.created)
    }
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_stream_replay_is_a_context_manager_and_reports_usage(client, server):
    completion = ask(client)
    with ask(client, stream=True, stream_options={"include_usage": True}) as stream:
        chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage == completion.usage
    assert content_of(chunks) == completion.choices[0].message.content
    assert len(server.chat_requests) == 1


def test_streamed_miss_passes_chunks_and_stores_after_last_chunk(client, server, cache):
    stream = ask(client, stream=True, stream_options={"include_usage": True})
    assert isinstance(stream, openai.Stream) or hasattr(stream, "response")
    received = []
    iterator = iter(stream)
    expected = server.stream_chunks(
        {"model": "gpt-test", "messages": user(QUESTION), "stream_options": {"include_usage": 1}}
    )
    for _ in range(len(expected)):
        received.append(next(iterator))
        assert cache.stats()["entries"] == 0  # not before the stream ended
    with pytest.raises(StopIteration):
        next(iterator)
    assert cache.stats()["entries"] == 1
    assert all(isinstance(c, ChatCompletionChunk) for c in received)
    streamed_text = content_of(received)

    again = ask(client)  # non-streamed: served from what the stream stored
    assert len(server.chat_requests) == 1
    assert again.choices[0].message.content == streamed_text
    assert again.choices[0].finish_reason == "stop"
    assert again.usage is not None and again.usage.total_tokens == received[-1].usage.total_tokens
    assert again.id == received[0].id


def test_stream_failing_midway_stores_nothing(client, server, cache):
    server.fail_stream_after = 3
    stream = ask(client, stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert 1 <= len(received) <= 4
    assert cache.stats()["entries"] == 0
    server.fail_stream_after = None
    ask(client)
    assert len(server.chat_requests) == 2


def test_stream_closed_early_stores_nothing(client, server, cache):
    with ask(client, stream=True) as stream:
        for i, _chunk in enumerate(stream):
            if i == 2:
                break
    assert cache.stats()["entries"] == 0
    stream = ask(client, stream=True)
    next(iter(stream))
    stream.close()
    assert cache.stats()["entries"] == 0
    ask(client)
    assert len(server.chat_requests) == 3


def test_stream_hit_for_streamed_entry(client, server):
    first = list(ask(client, stream=True))
    second = list(ask(client, PARAPHRASE, stream=True))
    assert len(server.chat_requests) == 1
    assert content_of(second) == content_of(first)


def test_server_error_is_not_cached(client, server, cache):
    server.fail_requests = 1
    with pytest.raises(openai.InternalServerError):
        ask(client)
    assert cache.stats()["entries"] == 0
    ask(client)
    assert len(server.chat_requests) == 2


# -- what is (not) stored -------------------------------------------------------------------


def test_truncated_answer_is_not_stored(raw_client, server, cache):
    server.responder = lambda req: {"content": "Paris is the", "finish_reason": "length"}
    client = wrap(raw_client, cache)
    ask(client)
    ask(client)
    list(ask(client, stream=True))
    assert len(server.chat_requests) == 3
    assert cache.stats()["entries"] == 0


TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup", "arguments": '{"city": "Paris", "units": "metric"}'},
}


def test_tool_call_answer_cached_and_replayed(raw_client, server, cache):
    server.responder = lambda req: {"content": None, "tool_calls": [TOOL_CALL]}
    client = wrap(raw_client, cache)
    first = ask(client, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    chunks = list(ask(client, tools=TOOLS, stream=True))
    assert len(server.chat_requests) == 1
    acc = ChunkAccumulator()
    for chunk in chunks:
        acc.add(chunk)
    rebuilt = ChatCompletion.model_validate(acc.build())
    assert rebuilt.choices[0].message.tool_calls == first.choices[0].message.tool_calls
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_streamed_tool_call_is_assembled_and_stored(raw_client, server, cache):
    server.responder = lambda req: {"content": None, "tool_calls": [TOOL_CALL]}
    client = wrap(raw_client, cache)
    list(ask(client, tools=TOOLS, stream=True))
    stored = ask(client, tools=TOOLS)
    assert len(server.chat_requests) == 1
    call = stored.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1",
        "lookup",
        TOOL_CALL["function"]["arguments"],
    )


def test_n_greater_than_one_is_cached_per_n(client, server):
    three = ask(client, n=3)
    assert len(three.choices) == 3
    again = ask(client, n=3)
    assert again == three
    assert len(server.chat_requests) == 1
    one = ask(client)  # n is part of the key: never answered with three choices
    assert len(one.choices) == 1
    assert len(server.chat_requests) == 2
    chunks = list(ask(client, n=3, stream=True))
    for index in range(3):
        text = "".join(
            c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == index
        )
        assert text == three.choices[index].message.content
    assert len(server.chat_requests) == 2


# -- per-call control -------------------------------------------------------------------------


def test_control_key_is_never_sent(client, server):
    ask(client, semcache={"ttl": 60, "namespace": "tenant-7"})
    ask(client, UNRELATED, stream=True, semcache={"no_store": True}).close()
    assert len(server.chat_requests) == 2
    assert all("semcache" not in body for body in server.chat_requests)


def test_no_cache_reads_nothing_but_stores(client, server, cache):
    first = ask(client)
    refreshed = ask(client, semcache={"no_cache": True})
    assert len(server.chat_requests) == 2
    assert refreshed.id != first.id
    assert ask(client).id == refreshed.id  # the refreshed answer replaced the old one
    assert len(server.chat_requests) == 2


def test_no_store_writes_nothing(client, server, cache):
    ask(client, semcache={"no_store": True})
    list(ask(client, stream=True, semcache={"no_store": True}))
    assert cache.stats()["entries"] == 0
    ask(client)
    ask(client, semcache={"no_store": True})  # reading still works
    assert len(server.chat_requests) == 3


def test_ttl_control(client, server, clock):
    ask(client, semcache={"ttl": 60})
    ask(client, UNRELATED)  # the cache's default ttl (a day)
    clock[0] += 61
    ask(client)
    assert len(server.chat_requests) == 3
    ask(client, UNRELATED)
    assert len(server.chat_requests) == 3


def test_namespace_control_isolates_tenants(client, server):
    ask(client, semcache={"namespace": "tenant-7"})
    ask(client, semcache={"namespace": "tenant-7"})
    assert len(server.chat_requests) == 1
    ask(client, semcache={"namespace": "tenant-8"})
    ask(client, PARAPHRASE, semcache={"namespace": "tenant-8"})
    ask(client)
    assert len(server.chat_requests) == 3


@pytest.mark.parametrize(
    "control, error",
    [
        ({"nocache": True}, InvalidInputError),
        ({"no_cache": True, "bogus": 1}, InvalidInputError),
        ({"no_cache": "yes"}, InvalidTypeError),
        ({"ttl": -1}, InvalidInputError),
        ({"ttl": "60"}, InvalidTypeError),
        ({"namespace": 7}, InvalidTypeError),
        ("no_cache", InvalidTypeError),
    ],
)
def test_bad_control_rejected_before_any_call(client, server, control, error):
    with pytest.raises(error):
        ask(client, semcache=control)
    assert server.chat_requests == []


def test_wrap_options(raw_client, server, cache):
    with pytest.raises(InvalidInputError, match="bogus"):
        wrap(raw_client, cache, bogus=True)
    with pytest.raises(InvalidTypeError):
        wrap(object(), cache)
    with pytest.raises(InvalidTypeError):
        wrap(raw_client, "llm.db")
    exact = wrap(raw_client, cache, namespace="exact", exact_only=True)
    ask(exact)
    ask(exact, PARAPHRASE)
    assert len(server.chat_requests) == 2
    ask(exact)
    assert len(server.chat_requests) == 2
    assert cache.stats()["semantic_hits"] == 0


# -- pass-through ---------------------------------------------------------------------------------


def test_everything_else_passes_through(client, raw_client, server):
    assert [m.id for m in client.models.list().data] == ["stub-model"]
    assert client.api_key == raw_client.api_key
    assert client.base_url == raw_client.base_url
    assert client.embeddings is raw_client.embeddings
    assert client.chat.completions.retrieve == raw_client.chat.completions.retrieve
    assert server.requests[0].method == "GET"
    assert "sk-test-not-a-key" not in repr(client)


def test_with_options_stays_cached(client, server):
    ask(client)
    faster = client.with_options(timeout=5)
    assert isinstance(
        faster.chat.completions.create(model="gpt-test", messages=user(QUESTION)), ChatCompletion
    )
    assert len(server.chat_requests) == 1
    assert wrap(client, None) is not client  # re-wrapping unwraps first


def test_default_cache_used_when_none_given(raw_client, server, make_location):
    from semcache.defaults import disable_cache, init_cache

    client = wrap(raw_client)  # no cache given, no default yet: plain pass-through
    ask(client)
    ask(client)
    assert len(server.chat_requests) == 2
    try:
        # init_cache(path="postgresql://...") on the PostgreSQL run
        init_cache(make_location("default.db"), embedder=WordEmbedder(),
                   similarity_threshold=0.9)
        ask(client)
        ask(client)
        assert len(server.chat_requests) == 3
        disable_cache()
        ask(client)
        assert len(server.chat_requests) == 4
    finally:
        disable_cache()


def test_cache_stats_and_tokens_saved_add_up(raw_client, server, make_location):
    from semcache.defaults import cache_stats, disable_cache, init_cache

    try:
        init_cache(make_location("stats.db"), embedder=WordEmbedder(),
                   similarity_threshold=0.9)
        client = wrap(raw_client)
        first = ask(client)
        ask(client)
        ask(client, PARAPHRASE)
        list(ask(client, stream=True))
        other = ask(client, UNRELATED)
        stats = cache_stats()
        assert len(server.chat_requests) == 2
        assert stats["hits"] == 3 and stats["misses"] == 2
        assert stats["exact_hits"] == 2 and stats["semantic_hits"] == 1
        assert stats["puts"] == 2 and stats["entries"] == 2
        assert stats["hit_rate"] == pytest.approx(3 / 5)
        assert stats["tokens_saved"] == 3 * first.usage.total_tokens
        assert other.usage.total_tokens > 0
    finally:
        disable_cache()


def test_concurrent_threads_share_the_cache(client, server):
    ask(client)
    errors = []

    def worker():
        try:
            for _ in range(5):
                assert ask(client).choices[0].message.content.startswith("You asked")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(server.chat_requests) == 1


# -- chunking and chunk conversion (no server) ----------------------------------------------------


TEXTS = [
    "",
    "one",
    "  leading and trailing  ",
    "Hello,   world.\tTabs!\n\nNew paragraph? Yes...\n\n\n  Indented.  3.14 is pi.",
    "no terminal punctuation\nline two\r\nline three",
    "Émoji 😀 and ünïcödé. Second sentence!",
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("length", [1, 2, 3, 100])
def test_split_text_concatenates_exactly(text, strategy, length):
    pieces = split_text(text, strategy, length)
    assert "".join(pieces) == text
    assert all(pieces)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab .!?\n\t,é")), max_size=80),
    strategy=st.sampled_from(STRATEGIES),
    length=st.integers(min_value=1, max_value=5),
)
def test_split_text_property(text, strategy, length):
    pieces = split_text(text, strategy, length)
    assert "".join(pieces) == text and all(pieces)
    if strategy == "characters":
        assert all(len(p) <= length for p in pieces)


def test_split_text_units():
    assert split_text("a b c d e", "words", 2) == ["a b ", "c d ", "e"]
    assert split_text("One. Two! Three? Four", "sentences", 1) == [
        "One. ",
        "Two! ",
        "Three? ",
        "Four",
    ]
    assert split_text("p1\n\np2\n\n\np3", "paragraphs", 1) == ["p1\n\n", "p2\n\n\n", "p3"]
    assert split_text("abcdefg", "characters", 3) == ["abc", "def", "g"]


@pytest.mark.parametrize(
    "strategy, length, error",
    [
        ("tokens", 8, InvalidInputError),
        ("words", 0, InvalidInputError),
        ("words", 1.5, InvalidTypeError),
    ],
)
def test_split_text_rejects_bad_settings(strategy, length, error):
    with pytest.raises(error):
        split_text("text", strategy, length)


def test_completion_to_chunks_round_trips_through_accumulator(server):
    request = {"model": "m", "messages": user(QUESTION)}
    completion = ChatCompletion.model_validate(server.completion(request))
    chunks = completion_to_chunks(completion, "sentences", 1, include_usage=True)
    acc = ChunkAccumulator()
    for chunk in chunks:
        acc.add(chunk)
    assert acc.complete
    rebuilt = ChatCompletion.model_validate(acc.build())
    assert rebuilt.choices[0].message.content == completion.choices[0].message.content
    assert rebuilt.usage == completion.usage
    assert rebuilt.id == completion.id


def test_accumulator_incomplete_without_finish_reason(server):
    chunks = server.stream_chunks({"model": "m", "messages": user(QUESTION)})
    acc = ChunkAccumulator()
    for chunk in chunks[:-1]:
        acc.add(ChatCompletionChunk.model_validate(chunk))
    assert not acc.complete


def test_malformed_call_gets_the_sdks_own_error(client, server):
    with pytest.raises(TypeError):
        client.chat.completions.create(model="gpt-test")
    assert server.chat_requests == []
