"""wrap(): cache_info, parse(), with_raw_response, option checks shared with put(), and
store failures that must not cost the caller the answer. Real SDK, local stub."""

from __future__ import annotations

import logging

import openai
import pytest
from openai.types.chat import ChatCompletion, ParsedChatCompletion
from pydantic import BaseModel

import semcache
from semcache.demo.openai_stub import StubOpenAIServer
from semcache.errors import InvalidInputError, InvalidTypeError, SemcacheError
from semcache.integrations import RequestCache
from semcache.integrations.openai import CachedRawResponse, wrap
from semcache.integrations.streaming import split_text

QUESTION = "What is the capital of France?"
PARAPHRASE = "Please tell me: which is the capital of France"


@pytest.fixture
def server():
    with StubOpenAIServer() as stub:
        yield stub


@pytest.fixture
def clock():
    return [4_000_000.0]


@pytest.fixture
def raw_client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def client(raw_client, cache):
    return wrap(raw_client, cache)


def ask(client, text=QUESTION, **kwargs):
    kwargs.setdefault("model", "gpt-test")
    return client.chat.completions.create(messages=[{"role": "user", "content": text}], **kwargs)


# -- cache_info -------------------------------------------------------------------------


def test_cache_info_of_miss_exact_and_semantic_hits(client, cache):
    miss = ask(client)
    info = semcache.cache_info(miss)
    assert info is not None and not info.hit and info.stored and info.status == "miss"
    assert info.kind is None and info.similarity is None and info.namespace == "default"
    exact = semcache.cache_info(ask(client))
    assert (exact.hit, exact.kind, exact.similarity, exact.entry_id) == (
        True, "exact", 1.0, info.entry_id)
    semantic = semcache.cache_info(ask(client, PARAPHRASE))
    assert semantic.hit and semantic.kind == "semantic" and semantic.status == "hit-semantic"
    assert semantic.similarity == pytest.approx(1.0, abs=1e-6)
    assert semantic.entry_id == info.entry_id
    # The entry id is the cache's own: an app can act on it (report, delete).
    assert cache.delete(info.entry_id)


def test_cache_info_of_streams_and_bypasses(client, server, cache):
    live = ask(client, stream=True)
    assert semcache.cache_info(live).entry_id is None  # not stored before it completed
    list(live)
    stored = semcache.cache_info(live)
    assert stored.stored
    replay = ask(client, stream=True)
    assert semcache.cache_info(replay).entry_id == stored.entry_id
    refreshed = ask(client, semcache={"no_cache": True})
    bypass = semcache.cache_info(refreshed)
    assert bypass.status == "bypass" and bypass.stored and bypass.entry_id != stored.entry_id
    assert semcache.cache_info(ask(client, semcache={"no_store": True})).hit
    untouched = ask(client, semcache={"no_cache": True, "no_store": True})
    assert semcache.cache_info(untouched) is None
    assert semcache.cache_info(object()) is None and semcache.cache_info("text") is None


def test_cache_info_is_exported():
    assert "cache_info" in semcache.__all__ and "CacheInfo" in semcache.__all__
    assert semcache.cache_info is semcache.integrations.cache_info


# -- a store failure never costs the answer ----------------------------------------------


def test_store_failure_returns_the_paid_answer_and_logs(raw_client, server, make_cache,
                                                         caplog):
    make_cache("ro.db").close()
    cache = make_cache("ro.db", readonly=True)  # every store fails: ReadOnlyCacheError
    client = wrap(raw_client, cache)
    with caplog.at_level(logging.WARNING, logger="semcache"):
        reply = ask(client)
    assert isinstance(reply, ChatCompletion) and reply.choices[0].message.content
    assert "semcache store failed" in caplog.text
    info = semcache.cache_info(reply)
    assert not info.hit and info.entry_id is None
    assert cache.stats()["entries"] == 0
    with caplog.at_level(logging.WARNING, logger="semcache"):
        chunks = list(ask(client, "streamed", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("You asked")
    assert len(server.chat_requests) == 2


def test_store_failure_of_a_closed_cache_keeps_the_answer(raw_client, server, make_cache):
    cache = make_cache("closing.db")
    client = wrap(raw_client, cache)
    stream = ask(client, stream=True)
    cache.close()  # closed while the answer streams: the store fails, the answer does not
    assert "You asked" in "".join(c.choices[0].delta.content or "" for c in stream)


# -- options and controls are checked exactly like put() ------------------------------------


BAD_TTLS = [float("inf"), float("nan"), 0, -5, "60", True]
BAD_NAMESPACES = ["x" * 300, "", "a\x00b", 7]


def put_error(cache, **kwargs) -> type[BaseException]:
    before = cache.stats()["entries"]
    with pytest.raises(SemcacheError) as err:
        cache.put("probe", "value", **kwargs)
    assert cache.stats()["entries"] == before
    return type(err.value)


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
def test_ttl_refused_like_put(raw_client, server, cache, ttl):
    error = put_error(cache, ttl=ttl)
    with pytest.raises(error):
        wrap(raw_client, cache, ttl=ttl)
    with pytest.raises(error):
        ask(wrap(raw_client, cache), semcache={"ttl": ttl})
    assert server.chat_requests == []


@pytest.mark.parametrize("namespace", BAD_NAMESPACES, ids=repr)
def test_namespace_refused_like_put(raw_client, server, cache, namespace):
    error = put_error(cache, namespace=namespace)
    with pytest.raises(error):
        wrap(raw_client, cache, namespace=namespace)
    with pytest.raises(error):
        ask(wrap(raw_client, cache), semcache={"namespace": namespace})
    assert server.chat_requests == []


def test_values_put_accepts_are_accepted(raw_client, server, cache):
    odd = " tenant 7 / ü "
    cache.put("probe", "value", namespace=odd, ttl=None)
    client = wrap(raw_client, cache, namespace=odd, ttl=None)
    info = semcache.cache_info(ask(client))
    assert info.namespace == odd and info.stored
    assert semcache.cache_info(ask(client)).hit
    assert semcache.cache_info(ask(wrap(raw_client, cache), semcache={"namespace": odd})).hit


def test_stream_chunking_is_a_wrap_option(raw_client, server, cache):
    client = wrap(raw_client, cache, stream_chunk_strategy="sentences", stream_chunk_length=1)
    text = ask(client).choices[0].message.content
    chunks = list(ask(client, stream=True))
    assert [c.choices[0].delta.content for c in chunks[:-1]] == split_text(text, "sentences", 1)
    with pytest.raises(InvalidInputError):
        wrap(raw_client, cache, stream_chunk_strategy="tokens")
    with pytest.raises(InvalidInputError):
        wrap(raw_client, cache, stream_chunk_length=0)
    with pytest.raises(InvalidTypeError):
        wrap(raw_client, cache, stream_chunk_length=1.5)


def test_cache_is_typed_by_the_protocol(raw_client, cache):
    assert isinstance(cache, RequestCache)
    with pytest.raises(InvalidTypeError):
        wrap(raw_client, object())  # type: ignore[arg-type]


# -- parse() and with_raw_response ---------------------------------------------------------


class Capital(BaseModel):
    city: str
    country: str


def test_parse_is_cached_and_parsed_again_on_hits(client, server):
    server.responder = lambda req: '{"city": "Paris", "country": "France"}'
    messages = [{"role": "user", "content": QUESTION}]
    first = client.chat.completions.parse(model="gpt-test", messages=messages,
                                          response_format=Capital)
    second = client.chat.completions.parse(model="gpt-test", messages=messages,
                                           response_format=Capital)
    assert isinstance(second, ParsedChatCompletion)
    assert second.choices[0].message.parsed == Capital(city="Paris", country="France")
    assert semcache.cache_info(second).hit and len(server.chat_requests) == 1
    assert first.choices[0].message.parsed == second.choices[0].message.parsed
    # The schema the SDK sends is the key: create() with the same body shares the entry.
    schema = server.chat_requests[0]["response_format"]
    plain = ask(client, response_format=schema)
    assert semcache.cache_info(plain).hit and plain.choices[0].message.content.startswith("{")


def test_parse_with_another_model_is_another_request(client, server):
    class City(BaseModel):
        city: str

    server.responder = lambda req: '{"city": "Paris", "country": "France"}'
    messages = [{"role": "user", "content": QUESTION}]
    client.chat.completions.parse(model="gpt-test", messages=messages, response_format=Capital)
    client.chat.completions.parse(model="gpt-test", messages=messages, response_format=City)
    assert len(server.chat_requests) == 2


def test_with_raw_response_miss_then_hit(client, server):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": QUESTION}])
    assert raw.headers.get("x-request-id", "").startswith("req_stub")  # the API's response
    completion = raw.parse()
    assert semcache.cache_info(completion).stored
    cached = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": PARAPHRASE}])
    assert isinstance(cached, CachedRawResponse)
    assert cached.headers["X-Semcache"] == "hit-semantic"
    assert cached.headers["x-semcache-entry"] == str(semcache.cache_info(completion).entry_id)
    assert cached.parse().choices[0].message.content == completion.choices[0].message.content
    assert cached.json()["id"] == completion.id and cached.status_code == 200
    assert len(server.chat_requests) == 1
    streamed = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": QUESTION}], stream=True)
    assert not isinstance(streamed, CachedRawResponse)  # raw streams pass through
    assert len(server.chat_requests) == 2


def test_responses_with_raw_response(client, server):
    miss = client.responses.with_raw_response.create(model="gpt-test", input=QUESTION)
    hit = client.responses.with_raw_response.create(model="gpt-test", input=QUESTION)
    assert isinstance(hit, CachedRawResponse) and hit.headers["x-semcache"] == "hit-exact"
    assert hit.parse().output_text == miss.parse().output_text
    assert len(server.responses_requests) == 1


async def test_async_parse_and_raw(server, cache):
    raw_client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    client = wrap(raw_client, cache)
    server.responder = lambda req: '{"city": "Paris", "country": "France"}'
    messages = [{"role": "user", "content": QUESTION}]
    for _ in range(2):
        parsed = await client.chat.completions.parse(model="gpt-test", messages=messages,
                                                     response_format=Capital)
        assert parsed.choices[0].message.parsed.city == "Paris"
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "raw"}])
    cached = await client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "raw"}])
    assert isinstance(cached, CachedRawResponse)
    assert cached.parse().id == raw.parse().id
    assert len(server.chat_requests) == 2
    await raw_client.close()
