"""@memoize over str -> JSON functions, sync and async."""

from __future__ import annotations

import asyncio

import pytest

import semcache
from semcache.errors import InvalidTypeError, SerializationError
from tests.engines import ENGINES
from tests.word_embedder import WordEmbedder

# Every test that uses the cache runs on an SQLite file and on a PostgreSQL schema.
pytestmark = pytest.mark.engines(*ENGINES)


@pytest.fixture
def clock():
    return [3_000_000.0]


@pytest.fixture
def cache(location, clock):
    c = semcache.open(
        location,
        embedder=WordEmbedder(),
        similarity_threshold=0.9,
        clock=lambda: clock[0],
    )
    yield c
    c.close()


class Counter:
    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, text: str) -> str:
        self.calls.append(text)
        return f"summary of {text!r}"


def test_repeat_and_paraphrase_hit(cache):
    calls = []

    @cache.memoize(semantic=True)
    def summarize(text: str) -> str:
        calls.append(text)
        return f"summary #{len(calls)}"

    assert summarize("What is the capital of France?") == "summary #1"
    assert summarize("What is the capital of France?") == "summary #1"
    assert summarize("Tell me the capital of France") == "summary #1"
    assert summarize(text="What is the capital of France?") == "summary #1"
    assert calls == ["What is the capital of France?"]
    stats = cache.stats()
    assert stats["exact_hits"] == 2 and stats["semantic_hits"] == 1
    assert summarize("How tall is Everest?") == "summary #2"


def test_exact_matching_is_the_default(cache):
    # A summary of another text is a wrong answer: paraphrase matching is opt-in.
    counter = Counter()
    summarize = cache.memoize()(counter)
    summarize("What is the capital of France?")
    summarize("Tell me the capital of France")
    summarize("What is the capital of France?")
    assert len(counter.calls) == 2
    assert cache.stats()["semantic_hits"] == 0


def test_default_namespace_is_module_and_qualname(cache):
    @cache.memoize()
    def first(text: str) -> str:
        return "first"

    @cache.memoize()
    def second(text: str) -> str:
        return "second"

    assert (
        first.namespace
        == f"memoize:{__name__}.test_default_namespace_is_module_and_qualname.<locals>.first"
    )
    assert first("same prompt") == "first"
    assert second("same prompt") == "second"  # functions never answer for each other
    assert first.__name__ == "first" and first.cache is cache


def test_explicit_namespace_is_shared(cache):
    a = cache.memoize(namespace="summaries")(lambda text: "from a")
    b = cache.memoize(namespace="summaries")(lambda text: "from b")
    assert a("hello world") == "from a"
    assert b("hello world") == "from a"
    assert cache.get("hello world", namespace="summaries").response == "from a"


def test_json_results_round_trip(cache):
    @cache.memoize()
    def classify(text: str) -> dict:
        return {"label": "geo", "scores": [0.9, 0.1], "text": text}

    first = classify("capital of France")
    assert classify("capital of France") == first


def test_non_str_argument_rejected(cache):
    counter = Counter()
    summarize = cache.memoize()(counter)
    for bad in (42, b"bytes", None, ["a"]):
        with pytest.raises(InvalidTypeError):
            summarize(bad)
    with pytest.raises(InvalidTypeError):
        summarize("a", "b")
    with pytest.raises(InvalidTypeError):
        summarize()
    assert counter.calls == []


def test_blank_argument_is_called_uncached(cache):
    counter = Counter()
    summarize = cache.memoize()(counter)
    summarize("")
    summarize("   ")
    summarize("")
    assert len(counter.calls) == 3
    assert cache.stats()["entries"] == 0


def test_none_is_not_stored(cache):
    calls = []

    @cache.memoize()
    def maybe(text: str):
        calls.append(text)
        return None

    maybe("question")
    maybe("question")
    assert len(calls) == 2


def test_unserializable_result_raises(cache):
    @cache.memoize()
    def bad(text: str):
        return object()

    with pytest.raises(SerializationError):
        bad("question")


def test_ttl(cache, clock):
    counter = Counter()
    summarize = cache.memoize(ttl=10)(counter)
    summarize("question one")
    clock[0] += 11
    summarize("question one")
    assert len(counter.calls) == 2


async def test_async_function(cache):
    calls = []

    @cache.memoize(semantic=True)
    async def summarize(text: str) -> str:
        calls.append(text)
        await asyncio.sleep(0)
        return f"async summary of {text}"

    first = await summarize("What is the capital of France?")
    assert await summarize("What is the capital of France?") == first
    assert await summarize("Tell me the capital of France") == first
    assert len(calls) == 1
    with pytest.raises(InvalidTypeError):
        await summarize(3)


def test_cache_memoize_method_delegates(cache):
    if not hasattr(cache, "memoize"):
        pytest.skip("Cache.memoize not wired yet")
    counter = Counter()
    summarize = cache.memoize(namespace="m")(counter)
    summarize("hello there")
    summarize("hello there")
    assert len(counter.calls) == 1
    assert summarize.namespace == "m"


def test_bad_decorator_arguments(cache):
    with pytest.raises(semcache.ConfigurationError):
        cache.memoize(semantic="yes")
    with pytest.raises(InvalidTypeError):
        cache.memoize(namespace=3)
    with pytest.raises(InvalidTypeError):
        cache.memoize()("not callable")
