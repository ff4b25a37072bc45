"""LangChain's own standard cache suites, unchanged, against SemcacheLLMCache on both engines
(issue 20, item 18): what is stored comes back unchanged, ``update`` leaves the caller's
generations as they were, and ``semcache.cache_info`` still reads the hit information."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("langchain_tests")

from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, Generation  # noqa: E402
from langchain_tests.integration_tests import (  # noqa: E402
    AsyncCacheTestSuite,
    SyncCacheTestSuite,
)

import semcache  # noqa: E402
from semcache.integrations.langchain import SemcacheLLMCache  # noqa: E402
from tests.engines import ENGINES  # noqa: E402

pytestmark = pytest.mark.engines(*ENGINES)


@pytest.fixture
def llm_cache(location: str) -> Iterator[SemcacheLLMCache]:
    with semcache.open(location, embedder="hashing") as cache:
        yield SemcacheLLMCache(cache)


class TestSemcacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, llm_cache: SemcacheLLMCache) -> SemcacheLLMCache:
        return llm_cache


class TestSemcacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, llm_cache: SemcacheLLMCache) -> SemcacheLLMCache:
        return llm_cache


def test_update_leaves_the_callers_generations_unchanged(llm_cache: SemcacheLLMCache) -> None:
    generation = ChatGeneration(message=AIMessage("hi", response_metadata={"model": "m"}),
                                generation_info={"reason": "stop"})
    before = generation.model_dump()
    llm_cache.update("prompt", "llm", [generation])
    assert generation.model_dump() == before
    assert generation.generation_info == {"reason": "stop"}
    assert generation.message.response_metadata == {"model": "m"}
    info = semcache.cache_info(generation)
    assert info is not None and info.stored  # readable, outside the fields
    assert semcache.cache_info(generation.message) == info


def test_a_hit_equals_what_was_stored_and_carries_its_info(llm_cache: SemcacheLLMCache) -> None:
    stored = [Generation(text="Sample generated text.", generation_info={"reason": "test"}),
              Generation(text="Another generated text.")]
    llm_cache.update("prompt", "llm", stored)
    entry = semcache.cache_info(stored[0]).entry_id
    found = llm_cache.lookup("prompt", "llm")
    assert found == stored
    assert [g.model_dump() for g in found] == [g.model_dump() for g in stored]
    info = semcache.cache_info(found[1])
    assert info is not None and (info.hit, info.kind, info.entry_id) == (True, "exact", entry)
    assert "semcache" not in repr(found) and "semcache" not in str(found[0].generation_info)
