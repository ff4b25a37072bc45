"""semcache as LangChain's LLM cache, with langchain-core's own fake chat and LLM models."""

from __future__ import annotations

import logging

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    FakeMessagesListChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, Generation

import semcache
from semcache.errors import InvalidInputError, InvalidTypeError
from semcache.integrations.langchain import SemcacheLLMCache
from semcache.keys import analyze_langchain as prompt_keys

QUESTION = "What is the capital of France?"
PARAPHRASE = "Please tell me: which is the capital of France"
UNRELATED = "How tall is Mount Everest?"
ANSWERS = [f"answer {i}" for i in range(10)]


@pytest.fixture
def clock():
    return [5_000_000.0]


@pytest.fixture
def llm_cache(cache):
    llm_cache = SemcacheLLMCache(cache)
    set_llm_cache(llm_cache)
    yield llm_cache
    set_llm_cache(None)


def chat_model(**kwargs):
    return FakeListChatModel(responses=list(ANSWERS), **kwargs)


def test_chat_exact_and_paraphrase_hits(llm_cache, cache):
    model = chat_model()
    first = model.invoke(QUESTION)
    again = model.invoke(QUESTION)
    paraphrase = model.invoke(PARAPHRASE)
    assert model.i == 1  # one model call
    assert first.content == again.content == paraphrase.content == "answer 0"
    assert semcache.cache_info(first).stored
    exact, semantic = semcache.cache_info(again), semcache.cache_info(paraphrase)
    assert (exact.hit, exact.kind, exact.entry_id) == (True, "exact",
                                                       semcache.cache_info(first).entry_id)
    assert semantic.kind == "semantic" and semantic.similarity == pytest.approx(1.0, abs=1e-6)
    assert model.invoke(UNRELATED).content == "answer 1" and model.i == 2
    stats = cache.stats()
    assert (stats["exact_hits"], stats["semantic_hits"]) == (1, 1)


@pytest.mark.parametrize(
    "second",
    [
        [SystemMessage("Answer in French."), HumanMessage(PARAPHRASE)],
        [HumanMessage("Hi"), AIMessage("Hello"), HumanMessage(PARAPHRASE)],
        [HumanMessage(PARAPHRASE, name="bob")],
    ],
    ids=["system", "earlier-turns", "human-fields"],
)
def test_chat_scope_is_every_message_but_the_last_human_text(llm_cache, second):
    model = chat_model()
    model.invoke([HumanMessage(QUESTION)])
    model.invoke(second)
    assert model.i == 2


def test_llm_string_is_never_crossed(llm_cache):
    one = chat_model()
    other = FakeListChatModel(responses=["other model"])
    one.invoke(QUESTION)
    assert other.invoke(QUESTION).content == "other model"
    assert other.invoke(PARAPHRASE).content == "other model" and other.i == 0
    stopped = chat_model()
    stopped.invoke(QUESTION, stop=["\n"])  # the stop sequence is in llm_string
    assert stopped.i == 1


def test_chat_generation_round_trips_with_tool_calls(llm_cache):
    reply = AIMessage(
        content="",
        tool_calls=[{"name": "lookup", "args": {"city": "Paris"}, "id": "call_1"}],
        response_metadata={"model_name": "fake", "finish_reason": "tool_calls"},
        usage_metadata={"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
    )
    model = FakeMessagesListChatModel(responses=[reply, AIMessage("second")])
    first = model.invoke(QUESTION)
    cached = model.invoke(QUESTION)
    assert model.i == 1
    assert cached.tool_calls == first.tool_calls == reply.tool_calls
    assert cached.response_metadata["model_name"] == "fake"
    assert cached.usage_metadata["total_tokens"] == 8
    assert semcache.cache_info(cached).hit


def test_stored_as_langchain_json_never_pickle(llm_cache, cache):
    model = chat_model()
    model.invoke(QUESTION)
    keys = prompt_keys(_chat_prompt(model, QUESTION), model._get_llm_string())
    hit = cache.lookup(keys.key, scope=keys.scope, namespace="langchain")
    generation = hit.response["generations"][0]
    assert generation["lc"] == 1 and generation["id"][-1] == "ChatGeneration"
    assert "semcache" not in str(generation)  # the info dict is never stored


def _chat_prompt(model, text):
    from langchain_core.load import dumps

    return dumps([HumanMessage(text)])


def test_llm_exact_and_paraphrase_hits(llm_cache):
    llm = FakeListLLM(responses=list(ANSWERS))
    assert llm.invoke(QUESTION) == llm.invoke(QUESTION) == llm.invoke(PARAPHRASE) == "answer 0"
    assert llm.i == 1
    result = llm.generate([QUESTION, UNRELATED])
    assert llm.i == 2
    hit, miss = result.generations[0][0], result.generations[1][0]
    assert isinstance(hit, Generation) and semcache.cache_info(hit).hit
    assert semcache.cache_info(miss).stored and miss.text == "answer 1"
    assert semcache.cache_info(result).hit  # the first generation's


async def test_async_twins(llm_cache, cache):
    model = chat_model()
    first = await model.ainvoke(QUESTION)
    paraphrase = await model.ainvoke(PARAPHRASE)
    assert model.i == 1 and paraphrase.content == first.content
    assert semcache.cache_info(paraphrase).kind == "semantic"
    llm = FakeListLLM(responses=list(ANSWERS))
    assert await llm.ainvoke(UNRELATED) == await llm.ainvoke(UNRELATED)
    assert llm.i == 1
    await llm_cache.aclear()
    await model.ainvoke(QUESTION)
    assert model.i == 2


def test_clear_drops_only_langchain_entries(llm_cache, cache):
    cache.put("kept", "value")
    chat_model().invoke(QUESTION)
    assert cache.stats()["entries"] == 2
    llm_cache.clear()
    assert cache.stats()["entries"] == 1 and cache.get("kept").response == "value"


def test_store_failure_keeps_the_answer(make_cache, caplog):
    make_cache("ro.db").close()
    readonly = make_cache("ro.db", readonly=True)  # every store fails: ReadOnlyCacheError
    set_llm_cache(SemcacheLLMCache(readonly))
    try:
        model = chat_model()
        with caplog.at_level(logging.WARNING, logger="semcache"):
            reply = model.invoke(QUESTION)
        assert reply.content == "answer 0" and "semcache store failed" in caplog.text
        assert semcache.cache_info(reply).entry_id is None
    finally:
        set_llm_cache(None)


def test_options_checked_like_put(cache):
    with pytest.raises(InvalidInputError):
        SemcacheLLMCache(cache, ttl=float("inf"))
    with pytest.raises(InvalidInputError):
        SemcacheLLMCache(cache, namespace="x" * 300)
    with pytest.raises(InvalidTypeError):
        SemcacheLLMCache("llm.db")  # type: ignore[arg-type]
    exact = SemcacheLLMCache(cache, namespace="exact", exact_only=True)
    set_llm_cache(exact)
    try:
        model = chat_model()
        model.invoke(QUESTION)
        model.invoke(PARAPHRASE)
        assert model.i == 2
    finally:
        set_llm_cache(None)


def test_prompt_keys():
    from langchain_core.load import dumps

    llm = "[('_type', 'fake')]"
    plain = prompt_keys(QUESTION, llm)
    assert plain.text == QUESTION and len(plain.key) == 32
    chat = prompt_keys(dumps([SystemMessage("s"), HumanMessage(QUESTION)]), llm)
    assert chat.text == QUESTION and chat.key != plain.key and chat.scope != plain.scope
    paraphrase = prompt_keys(dumps([SystemMessage("s"), HumanMessage(PARAPHRASE)]), llm)
    assert paraphrase.scope == chat.scope and paraphrase.key != chat.key
    other_llm = prompt_keys(dumps([SystemMessage("s"), HumanMessage(QUESTION)]), llm + "x")
    assert other_llm.scope != chat.scope and other_llm.key != chat.key
    image = HumanMessage(content=[{"type": "text", "text": QUESTION},
                                  {"type": "image_url", "image_url": {"url": "data:,"}}])
    assert prompt_keys(dumps([image]), llm).text is None
    assert prompt_keys(dumps([AIMessage("only an AI turn")]), llm).text is None
    assert prompt_keys("[not json", llm).text == "[not json"  # a plain prompt after all


def test_generations_serialized_by_langchain_round_trip(llm_cache):
    generations = [ChatGeneration(message=AIMessage("hi", id="run-1"),
                                  generation_info={"finish_reason": "stop"})]
    llm_cache.update("prompt", "llm", generations)
    assert semcache.cache_info(generations[0]).stored  # the caller's objects are marked
    cached = llm_cache.lookup("prompt", "llm")
    assert cached[0].message.content == "hi" and cached[0].generation_info["finish_reason"] == (
        "stop")
    assert isinstance(cached[0], ChatGeneration) and isinstance(cached[0].message, AIMessage)
