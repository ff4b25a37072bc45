"""semcache as LiteLLM's cache: the real ``litellm`` package against the local stub server.

LiteLLM calls the stub as an OpenAI-compatible provider (``openai/<model>`` with
``api_base``); every test counts the requests that reach it: a cache hit must not call it.
The tests that use a cache run on both engines (an SQLite file, a PostgreSQL schema).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map download

import litellm  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402
from litellm.caching.caching import Cache as LiteLLMCache  # noqa: E402

import semcache  # noqa: E402
from semcache.demo.openai_stub import StubOpenAIServer  # noqa: E402
from semcache.embedders import minilm_available  # noqa: E402
from semcache.errors import InvalidInputError, InvalidTypeError  # noqa: E402
from semcache.integrations import litellm as semcache_litellm  # noqa: E402
from semcache.integrations.litellm import SemcacheLiteLLMCache, litellm_request  # noqa: E402
from tests.engines import ENGINES  # noqa: E402

pytestmark = [
    pytest.mark.engines(*ENGINES),
    # LiteLLM's own pydantic models warn when it builds them; nothing of semcache's
    pytest.mark.filterwarnings("ignore:Items? .* `ReadOnly` qualifier:UserWarning"),
]

QUESTION = "What is the capital of France?"
PARAPHRASE = "Please tell me: which is the capital of France"
UNRELATED = "How tall is Mount Everest?"
API_KEY = "sk-test-litellm-secret-0123456789"
MODEL = "openai/stub-model"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def clock() -> list[float]:
    return [1_000_000.0]


@pytest.fixture
def server() -> Iterator[StubOpenAIServer]:
    with StubOpenAIServer() as stub:
        yield stub


@pytest.fixture(autouse=True)
def litellm_cache_restored() -> Iterator[None]:
    """Every test leaves LiteLLM's global cache setting as it found it."""
    before = (litellm.cache, list(litellm.input_callback), list(litellm.success_callback),
              list(litellm._async_success_callback))
    yield
    semcache_litellm.disable()
    litellm.cache = before[0]
    litellm.input_callback[:] = before[1]
    litellm.success_callback[:] = before[2]
    litellm._async_success_callback[:] = before[3]


@pytest.fixture
def enabled(cache: semcache.Cache) -> SemcacheLiteLLMCache:
    return semcache_litellm.enable(cache)


def request(server: StubOpenAIServer, text: str = QUESTION, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", user(text))
    return {"api_base": server.base_url, "api_key": API_KEY, "max_retries": 0, **kwargs}


def ask(server: StubOpenAIServer, text: str = QUESTION, **kwargs: Any) -> Any:
    return litellm.completion(**request(server, text, **kwargs))


async def aask(server: StubOpenAIServer, text: str = QUESTION, **kwargs: Any) -> Any:
    return await litellm.acompletion(**request(server, text, **kwargs))


def content(response: Any) -> str:
    return str(response.choices[0].message.content)


def streamed(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def stored(response: Any) -> semcache.CacheInfo:
    """The info of an ``acompletion`` miss once LiteLLM's write task stored its answer."""
    deadline = time.monotonic() + 20
    info = semcache.cache_info(response)
    while (info is None or info.entry_id is None) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        info = semcache.cache_info(response)
    assert info is not None and info.stored, info
    return info


# -- hits -------------------------------------------------------------------------------------


def test_repeat_is_an_exact_hit(enabled, server, cache):
    first = ask(server)
    again = ask(server)
    assert len(server.chat_requests) == 1
    assert isinstance(again, litellm.ModelResponse)
    assert content(again) == content(first) and content(first).startswith("You asked: " + QUESTION)
    assert again._hidden_params["cache_hit"] is True  # LiteLLM's own mark
    miss, hit = semcache.cache_info(first), semcache.cache_info(again)
    assert miss.stored and not miss.hit and miss.status == "miss"
    assert (hit.hit, hit.kind, hit.similarity, hit.entry_id) == (True, "exact", 1.0,
                                                                 miss.entry_id)
    # the key LiteLLM shows is semcache's exact key of the request
    assert again._hidden_params["cache_key"] == enabled.get_cache_key(**request(server))
    stats = cache.stats()
    assert (stats["puts"], stats["exact_hits"], stats["misses"]) == (1, 1, 1)


def test_paraphrase_is_a_semantic_hit(enabled, server, cache):
    first = ask(server)
    metadata: dict[str, Any] = {}
    para = ask(server, PARAPHRASE, metadata=metadata)
    assert len(server.chat_requests) == 1
    assert content(para) == content(first)
    info = semcache.cache_info(para)
    assert info.kind == "semantic" and info.similarity == pytest.approx(1.0, abs=1e-6)
    assert metadata["semantic-similarity"] == pytest.approx(info.similarity)  # LiteLLM's mark
    ask(server, UNRELATED)
    assert len(server.chat_requests) == 2
    assert cache.stats()["semantic_hits"] == 1


@pytest.mark.minilm
@pytest.mark.skipif(not minilm_available(), reason="the MiniLM runtime or weights are missing")
def test_paraphrase_hit_with_minilm(server, make_location):
    with semcache.open(make_location("minilm.db")) as cache:  # the default embedder
        semcache_litellm.enable(cache)
        first = ask(server, "What is the capital of France?")
        para = ask(server, "What's the capital city of France?")
        other = ask(server, "What is the capital of Spain?")
        assert len(server.chat_requests) == 2
        info = semcache.cache_info(para)
        assert info.kind == "semantic" and cache.similarity_threshold <= info.similarity < 1
        assert content(para) == content(first) and content(other) != content(first)


def test_the_near_miss_guard_applies(server, make_cache):
    cache = make_cache(similarity_threshold=0.7)
    semcache_litellm.enable(cache)
    ask(server, "Convert 5 miles to km")
    ask(server, "Convert 6 miles to km")  # cosine 0.8 on the word embedder: above 0.7
    assert len(server.chat_requests) == 2
    assert cache.stats()["guard_rejections"] == 1


def scope_variants(text: str) -> list[Any]:
    """Requests that differ from ``ask(server, text)`` in everything but the last user text."""
    return [pytest.param(variant, id=name) for name, variant in [
        ("model", {"model": "openai/other-model"}),
        ("temperature", {"temperature": 0.2}),
        ("max_tokens", {"max_tokens": 50}),
        ("system", {"messages": [{"role": "system", "content": "Answer in French."},
                                 {"role": "user", "content": text}]}),
        ("earlier-turns", {"messages": [{"role": "user", "content": "Hi"},
                                        {"role": "assistant", "content": "Hello"},
                                        {"role": "user", "content": text}]}),
        ("namespace", {"cache": {"namespace": "tenant-7"}}),
        ("provider", {"custom_llm_provider": "openai", "model": "stub-model"}),
    ]]


@pytest.mark.parametrize("variant", scope_variants(PARAPHRASE))
def test_a_paraphrase_never_crosses_scopes(enabled, server, variant):
    ask(server)
    crossed = ask(server, PARAPHRASE, **variant)
    assert len(server.chat_requests) == 2 and not semcache.cache_info(crossed).hit
    assert semcache.cache_info(ask(server)).kind == "exact"  # the first scope still serves


@pytest.mark.parametrize("variant", scope_variants(QUESTION))
def test_the_same_question_never_crosses_scopes(enabled, server, variant):
    ask(server)
    crossed = ask(server, QUESTION, **variant)
    assert len(server.chat_requests) == 2 and not semcache.cache_info(crossed).hit


def test_litellm_own_parameters_are_not_in_the_key(enabled, server):
    ask(server)
    again = ask(server, api_key="sk-another-key", metadata={"run": 7}, num_retries=0,
                timeout=30, litellm_call_id="call-42", user="alice")
    assert len(server.chat_requests) == 1 and semcache.cache_info(again).kind == "exact"


def test_the_key_never_holds_the_api_key(enabled, server, cache, engine, caplog):
    caplog.set_level(logging.DEBUG, logger="semcache")
    ask(server)
    ask(server)
    request_seen = litellm_request(request(server))
    assert "api_key" not in request_seen and "api_base" not in request_seen
    assert API_KEY not in caplog.text
    if engine == "sqlite":
        cache.flush()
        for suffix in ("", "-wal"):
            if os.path.exists(cache.path + suffix):
                with open(cache.path + suffix, "rb") as f:
                    assert API_KEY.encode() not in f.read()


# -- streaming -------------------------------------------------------------------------------


def test_a_cached_answer_is_replayed_as_litellm_chunks(enabled, server):
    first = ask(server)
    stream = ask(server, stream=True)
    chunks = list(stream)
    assert len(server.chat_requests) == 1
    # LiteLLM's own replay: a chunk per word (1.10x), or the whole text then the finish (1.80)
    assert all(isinstance(c, litellm.ModelResponseStream) for c in chunks) and len(chunks) >= 2
    assert streamed(chunks) == content(first)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert semcache.cache_info(stream).kind == "exact"


def test_a_live_stream_is_stored_once_complete(enabled, server, cache):
    stream = ask(server, stream=True)
    chunks = [next(stream), next(stream)]
    assert cache.stats()["entries"] == 0 and semcache.cache_info(stream).entry_id is None
    chunks += list(stream)
    info = semcache.cache_info(stream)
    assert info.stored and cache.stats()["entries"] == 1
    again = ask(server)
    assert len(server.chat_requests) == 1 and content(again) == streamed(chunks)
    assert semcache.cache_info(again).entry_id == info.entry_id


def test_an_interrupted_stream_is_not_stored(enabled, cache):
    with StubOpenAIServer(fail_stream_after=2) as broken:
        stream = ask(broken, stream=True)
        received = [next(stream), next(stream)]
        with pytest.raises(openai.APIError):  # LiteLLM's error for the broken connection
            received += list(stream)
        assert streamed(received)  # part of the answer came through
    assert cache.stats()["puts"] == 0 and semcache.cache_info(stream).entry_id is None


def test_a_stream_closed_early_is_not_stored(enabled, server, cache):
    stream = ask(server, stream=True)
    next(stream), next(stream)
    close = getattr(stream, "close", None)  # the caller stops reading (LiteLLM >= 1.10x: close)
    if close is not None:
        close()
    del stream
    assert cache.stats()["puts"] == 0
    ask(server)
    assert len(server.chat_requests) == 2


# -- async -----------------------------------------------------------------------------------


async def test_acompletion_exact_and_paraphrase_hits(enabled, server, cache):
    first = await aask(server)
    miss = await stored(first)
    again, para = await aask(server), await aask(server, PARAPHRASE)
    assert len(server.chat_requests) == 1
    assert content(again) == content(para) == content(first)
    assert semcache.cache_info(again).entry_id == miss.entry_id
    assert semcache.cache_info(para).kind == "semantic"


async def test_async_streams_both_ways(enabled, server, cache):
    stream = await aask(server, stream=True)
    chunks = [chunk async for chunk in stream]
    info = await stored(stream)
    replay = await aask(server, PARAPHRASE, stream=True)
    replayed = [chunk async for chunk in replay]
    assert len(server.chat_requests) == 1
    assert streamed(replayed) == streamed(chunks)
    assert semcache.cache_info(replay).entry_id == info.entry_id


async def test_the_cache_runs_off_the_event_loop(enabled, server, monkeypatch):
    on_loop: list[bool] = []

    def recording(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            on_loop.append(_on_event_loop())
            return method(*args, **kwargs)
        return call

    for name in ("lookup", "store"):
        monkeypatch.setattr(enabled.semcache, name, recording(getattr(enabled.semcache, name)))
    await stored(await aask(server))
    assert on_loop == [False, False]  # one lookup, one store, both in worker threads


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# -- what is never stored --------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 429])
def test_upstream_errors_are_never_cached(enabled, cache, status):
    with StubOpenAIServer(fail_requests=1, fail_status=status) as failing:
        with pytest.raises(litellm.exceptions.InternalServerError if status == 500
                           else litellm.exceptions.RateLimitError):
            ask(failing)
        assert cache.stats()["puts"] == 0
        answer = ask(failing)
        assert semcache.cache_info(answer).status == "miss"
        assert len(failing.chat_requests) == 2 and cache.stats()["puts"] == 1


async def test_async_upstream_errors_are_never_cached(enabled, cache):
    with StubOpenAIServer(fail_requests=1) as failing:
        with pytest.raises(litellm.exceptions.InternalServerError):
            await aask(failing)
        await asyncio.sleep(0.1)  # a write task, if any had been started, runs meanwhile
        assert cache.stats()["puts"] == 0


def test_a_truncated_answer_is_not_stored(enabled, cache):
    def truncated(request: dict[str, Any]) -> dict[str, Any]:
        return {"content": "The capital of", "finish_reason": "length"}

    with StubOpenAIServer(truncated) as stub:
        ask(stub)
        ask(stub)
        assert len(stub.chat_requests) == 2 and cache.stats()["puts"] == 0


# -- per-call controls -----------------------------------------------------------------------


def test_no_cache_no_store_and_caching_false(enabled, server, cache):
    first = ask(server, cache={"no-store": True})
    assert semcache.cache_info(first).status == "miss" and cache.stats()["puts"] == 0
    fresh = ask(server, cache={"no-cache": True})  # not read, but stored
    assert semcache.cache_info(fresh).status == "bypass" and semcache.cache_info(fresh).stored
    assert semcache.cache_info(ask(server, cache={"no-store": True})).kind == "exact"
    ask(server, UNRELATED, caching=False)  # neither read nor written
    neither = ask(server, cache={"no-cache": True, "no-store": True})
    assert semcache.cache_info(neither) is None
    assert len(server.chat_requests) == 4 and cache.stats()["puts"] == 1


def test_ttl_and_namespace_controls(enabled, server, cache, clock):
    ask(server, cache={"ttl": 60, "namespace": "tenant-7"})
    assert semcache.cache_info(ask(server, cache={"namespace": "tenant-7"})).hit
    assert not semcache.cache_info(ask(server)).hit  # the default namespace: a miss
    clock[0] += 61
    assert not semcache.cache_info(ask(server, cache={"namespace": "tenant-7"})).hit
    assert len(server.chat_requests) == 3


def test_s_maxage_serves_only_younger_answers(server, make_cache):
    semcache_litellm.enable(make_cache(clock=time.time))  # ages are wall-clock seconds
    ask(server)
    assert semcache.cache_info(ask(server, cache={"s-maxage": 3600})).hit
    assert not semcache.cache_info(ask(server, cache={"s-maxage": 0})).hit
    assert len(server.chat_requests) == 2


def test_enable_options_are_defaults(server, cache, clock):
    semcache_litellm.enable(cache, namespace="app", ttl=10)
    first = semcache.cache_info(ask(server))
    assert first.namespace == "app"
    clock[0] += 11
    assert not semcache.cache_info(ask(server)).hit
    semcache_litellm.enable(cache, exact_only=True)
    ask(server)
    assert not semcache.cache_info(ask(server, PARAPHRASE)).hit


@pytest.mark.parametrize("control, error, named", [
    ({"ttl": float("inf")}, InvalidInputError, "inf"),
    ({"ttl": "soon"}, InvalidTypeError, "soon"),
    ({"namespace": "n" * 300}, InvalidInputError, "namespace"),
    ({"no-cache": "yes"}, InvalidTypeError, "yes"),
    ({"s-maxage": -1}, InvalidInputError, "-1"),
    ({"nocache": True}, InvalidInputError, "nocache"),
    ({"use-cache": "always"}, InvalidTypeError, "always"),
])
def test_bad_controls_are_refused_before_the_model_is_called(enabled, server, cache,
                                                             control, error, named):
    with pytest.raises(error, match=named):
        ask(server, cache=control)
    assert server.chat_requests == [] and cache.stats()["puts"] == 0


def test_a_bad_control_seen_only_at_store_time_never_costs_the_answer(enabled, server, cache,
                                                                     caplog):
    # no-cache: LiteLLM skips the lookup, so the bad ttl is first seen by the store
    answer = ask(server, cache={"no-cache": True, "ttl": float("inf")})
    assert content(answer).startswith("You asked:") and len(server.chat_requests) == 1
    assert cache.stats()["puts"] == 0 and "answer not stored" in caplog.text


async def test_a_bad_control_is_refused_by_acompletion_too(enabled, server, cache):
    with pytest.raises(InvalidInputError, match="inf"):
        await aask(server, cache={"ttl": float("inf")})
    assert server.chat_requests == [] and cache.stats()["puts"] == 0


def test_a_mock_response_is_never_served_to_a_real_call(enabled, server):
    mocked = ask(server, mock_response="A canned answer.")
    assert content(mocked) == "A canned answer." and server.chat_requests == []
    assert semcache.cache_info(ask(server, mock_response="A canned answer.")).hit
    real = ask(server)
    assert len(server.chat_requests) == 1 and not semcache.cache_info(real).hit


def test_a_request_that_cannot_be_keyed_passes_through(enabled, caplog):
    kwargs = {"model": MODEL, "messages": user(QUESTION), "extra_body": {"tags": {1, 2}}}
    assert enabled.get_cache(**kwargs) is None
    enabled.add_cache('{"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}',
                      **kwargs)
    assert enabled.semcache.stats()["puts"] == 0
    assert "passed through uncached" in caplog.text


# -- enable / disable ------------------------------------------------------------------------


def test_disable_restores_litellm_previous_cache(server, cache):
    own = LiteLLMCache()  # LiteLLM's in-memory cache, with its callbacks
    litellm.cache = own
    callbacks = list(litellm.success_callback)
    semcache_litellm.enable(cache)
    semcache_litellm.enable(cache, namespace="again")  # enabling twice keeps the first "before"
    assert isinstance(litellm.cache, SemcacheLiteLLMCache)
    semcache_litellm.disable()
    assert litellm.cache is own and litellm.success_callback == callbacks
    semcache_litellm.disable()  # twice: nothing more to restore
    assert litellm.cache is own


def test_disable_from_no_cache_removes_the_callbacks(server, cache):
    litellm.cache = None
    for name in ("input_callback", "success_callback", "_async_success_callback"):
        while "cache" in getattr(litellm, name):
            getattr(litellm, name).remove("cache")
    semcache_litellm.enable(cache)
    ask(server)
    semcache_litellm.disable()
    assert litellm.cache is None
    assert "cache" not in litellm.input_callback + litellm.success_callback
    again = ask(server)
    assert len(server.chat_requests) == 2 and semcache.cache_info(again) is None
    assert cache.stats()["puts"] == 1  # the semcache cache stays open: it is the caller's


def test_disable_leaves_a_cache_set_since_alone(cache):
    semcache_litellm.enable(cache)
    other = LiteLLMCache()
    litellm.cache = other
    semcache_litellm.disable()
    assert litellm.cache is other


@pytest.mark.parametrize("options, error", [
    ({"namespace": "n" * 300}, InvalidInputError),
    ({"ttl": float("inf")}, InvalidInputError),
    ({"exact_only": "yes"}, InvalidTypeError),
])
def test_enable_refuses_bad_options_and_changes_nothing(cache, options, error):
    litellm.cache = None
    callbacks = list(litellm.success_callback)
    with pytest.raises(error):
        semcache_litellm.enable(cache, **options)
    assert litellm.cache is None and litellm.success_callback == callbacks
    with pytest.raises(InvalidTypeError):
        semcache_litellm.enable("llm.db")  # type: ignore[arg-type]


_WITHOUT_FASTAPI = """
import sys
sys.modules["fastapi"] = None  # as after a plain `pip install litellm`
import litellm, semcache
from semcache.integrations import litellm as semcache_litellm
from tests.word_embedder import WordEmbedder
cache = semcache.open(sys.argv[1], embedder=WordEmbedder())
try:
    semcache_litellm.enable(cache)
except ImportError as exc:
    print("refused:", exc)
print("litellm.cache:", litellm.cache)
"""


@pytest.mark.engines("sqlite")
def test_enable_says_what_litellm_hit_path_lacks(tmp_path):
    # LiteLLM 1.10x imports its proxy (fastapi) on every cache hit: enable() says so up
    # front instead of letting the first hit fail (BerriAI/litellm#42195).
    if importlib.util.find_spec("litellm.llms.anthropic.messages.native.response_cache") is None:
        pytest.skip("this LiteLLM's hit path does not import its proxy")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _WITHOUT_FASTAPI, str(tmp_path / "c.db")],
                         capture_output=True, text=True, timeout=300, env=env, check=True)
    assert "refused:" in out.stdout and "'fastapi'" in out.stdout, out.stdout + out.stderr
    assert "pip install 'semcache-sqlite[litellm]'" in out.stdout
    assert "litellm.cache: None" in out.stdout  # nothing was changed
