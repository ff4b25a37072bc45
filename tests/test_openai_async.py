"""semcache.wrap(openai.AsyncOpenAI(...)): same rules as the sync client, async all the way."""

from __future__ import annotations

import asyncio
import threading

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from semcache.demo.openai_stub import StubOpenAIServer
from semcache.errors import InvalidInputError
from semcache.integrations.openai import wrap
from semcache.integrations.streaming import STRATEGIES, split_text
from tests.word_embedder import WordEmbedder

QUESTION = "What is the capital of France?"
PARAPHRASE = "Please tell me: which is the capital of France"
UNRELATED = "How tall is Mount Everest?"
SYSTEM = {"role": "system", "content": "You are terse."}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def server():
    with StubOpenAIServer() as stub:
        yield stub


@pytest.fixture
def clock():
    return [2_000_000.0]


@pytest.fixture
async def raw_client(server):
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
def client(raw_client, cache):
    return wrap(raw_client, cache)


async def ask(client, text=QUESTION, **kwargs):
    kwargs.setdefault("model", "gpt-test")
    return await client.chat.completions.create(messages=user(text), **kwargs)


async def collect(stream) -> list:
    return [chunk async for chunk in stream]


def content_of(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_repeat_is_exact_hit(client, server, cache):
    first = await ask(client)
    second = await ask(client)
    assert isinstance(second, ChatCompletion) and second == first
    assert len(server.chat_requests) == 1
    assert cache.stats()["exact_hits"] == 1


async def test_paraphrase_is_semantic_hit(client, server, cache):
    first = await ask(client)
    second = await ask(client, PARAPHRASE)
    assert second.choices[0].message.content == first.choices[0].message.content
    assert len(server.chat_requests) == 1
    assert cache.stats()["semantic_hits"] == 1
    await ask(client, UNRELATED)
    assert len(server.chat_requests) == 2


@pytest.mark.parametrize(
    "variant",
    [
        {"model": "gpt-other"},
        {"temperature": 1.5},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"messages": [{"role": "system", "content": "Be verbose."}, *user(PARAPHRASE)]},
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                *user(PARAPHRASE),
            ]
        },
    ],
    ids=["model", "temperature", "tools", "system", "earlier-turn"],
)
async def test_different_scope_never_hits(client, server, variant):
    base = {"model": "gpt-test", "messages": [SYSTEM, *user(QUESTION)]}
    await client.chat.completions.create(**base)
    await client.chat.completions.create(**{**base, **variant})
    assert len(server.chat_requests) == 2


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_stream_replay_after_non_streamed_miss(raw_client, server, make_cache, strategy):
    cache = make_cache()
    client = wrap(raw_client, cache, stream_chunk_strategy=strategy, stream_chunk_length=2)
    completion = await ask(client)
    text = completion.choices[0].message.content
    stream = await ask(client, stream=True)
    chunks = await collect(stream)
    assert len(server.chat_requests) == 1
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert content_of(chunks) == text
    assert [c.choices[0].delta.content for c in chunks[:-1]] == split_text(text, strategy, 2)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_stream_replay_async_context_manager(client, server):
    completion = await ask(client)
    async with await ask(client, stream=True, stream_options={"include_usage": True}) as stream:
        chunks = await collect(stream)
    assert chunks[-1].usage == completion.usage
    assert len(server.chat_requests) == 1


async def test_streamed_miss_stored_only_after_last_chunk(client, server, cache):
    stream = await ask(client, stream=True)
    expected = len(server.stream_chunks({"model": "gpt-test", "messages": user(QUESTION)}))
    iterator = stream.__aiter__()
    received = []
    for _ in range(expected):
        received.append(await iterator.__anext__())
        assert cache.stats()["entries"] == 0
    with pytest.raises(StopAsyncIteration):
        await iterator.__anext__()
    assert cache.stats()["entries"] == 1
    again = await ask(client, PARAPHRASE)
    assert again.choices[0].message.content == content_of(received)
    assert len(server.chat_requests) == 1


async def test_stream_failing_midway_stores_nothing(client, server, cache):
    server.fail_stream_after = 2
    stream = await ask(client, stream=True)
    with pytest.raises(openai.APIConnectionError):
        await collect(stream)
    assert cache.stats()["entries"] == 0
    server.fail_stream_after = None
    await ask(client)
    assert len(server.chat_requests) == 2


async def test_stream_closed_early_stores_nothing(client, server, cache):
    async with await ask(client, stream=True) as stream:
        async for _chunk in stream:
            break
    assert cache.stats()["entries"] == 0
    stream = await ask(client, stream=True)
    await stream.__anext__()
    await stream.close()
    assert cache.stats()["entries"] == 0


async def test_per_call_controls(client, server, cache, clock):
    await ask(client, semcache={"no_store": True})
    assert cache.stats()["entries"] == 0
    await ask(client, semcache={"namespace": "tenant-7", "ttl": 30})
    await ask(client, semcache={"namespace": "tenant-7"})
    assert len(server.chat_requests) == 2
    await ask(client, semcache={"namespace": "tenant-7", "no_cache": True, "ttl": 30})
    assert len(server.chat_requests) == 3
    clock[0] += 31
    await ask(client, semcache={"namespace": "tenant-7"})
    assert len(server.chat_requests) == 4
    assert all("semcache" not in body for body in server.chat_requests)
    with pytest.raises(InvalidInputError):
        await ask(client, semcache={"no_cahce": True})
    assert len(server.chat_requests) == 4


async def test_cache_calls_run_off_the_event_loop(client, server, cache, monkeypatch):
    loop_thread = threading.current_thread()
    seen = []
    for name in ("lookup", "store"):
        original = getattr(cache, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            seen.append((_name, threading.current_thread()))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cache, name, spy)
    await ask(client)
    await collect(await ask(client, UNRELATED, stream=True))
    await ask(client)
    assert [name for name, _ in seen] == ["lookup", "store", "lookup", "store", "lookup"]
    assert all(thread is not loop_thread for _, thread in seen)


async def test_concurrent_tasks(client, server):
    await ask(client)
    results = await asyncio.gather(*(ask(client, PARAPHRASE) for _ in range(10)))
    assert {r.choices[0].message.content for r in results} == {
        (await ask(client)).choices[0].message.content
    }
    assert len(server.chat_requests) == 1


async def test_pass_through_and_no_default_cache(raw_client, server):
    client = wrap(raw_client)  # no cache, no default: plain pass-through
    await ask(client)
    await ask(client)
    assert len(server.chat_requests) == 2
    models = await client.models.list()
    assert [m.id for m in models.data] == ["stub-model"]


async def test_default_cache_and_stats(raw_client, server, tmp_path):
    from semcache.defaults import cache_stats, disable_cache, init_cache

    try:
        init_cache(tmp_path / "default.db", embedder=WordEmbedder(), similarity_threshold=0.9)
        client = wrap(raw_client)
        first = await ask(client)
        await ask(client)
        await collect(await ask(client, PARAPHRASE, stream=True))
        stats = cache_stats()
        assert (stats["hits"], stats["misses"]) == (2, 1)
        assert stats["tokens_saved"] == 2 * first.usage.total_tokens
        assert len(server.chat_requests) == 1
    finally:
        disable_cache()
