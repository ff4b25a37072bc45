"""A LangChain cache on semcache: ``set_llm_cache(SemcacheLLMCache(cache))`` (extra ``[langchain]``).

Every LLM and chat model of LangChain then answers repeated and paraphrased prompts from
the semcache file, across processes and restarts::

    import semcache
    from langchain_core.globals import set_llm_cache
    from semcache.integrations.langchain import SemcacheLLMCache

    set_llm_cache(SemcacheLLMCache(semcache.open("llm.db")))

How LangChain's ``(prompt, llm_string)`` maps onto the cache:

* ``llm_string`` (the model and its parameters, as LangChain serializes them) is part of
  the exact key and of the semantic scope: an answer is never served across models or
  parameters.
* Chat models pass the conversation as LangChain's JSON serialization of the message
  list. It is decoded: the last human message is what the semantic tier embeds, and every
  other message (system prompt, earlier turns, and the other fields of the last human
  message) is scope. A last human message holding images or other non-text blocks makes
  the lookup exact-only. Plain LLMs pass a string prompt: it is embedded whole.
* Generations and ChatGenerations (with their ``AIMessage``: content, tool calls,
  metadata) are stored as langchain-core's own JSON serialization (``dumpd``) and loaded
  back with ``load`` restricted to output and AI-message classes - JSON, never pickle.
* Entries live in namespace ``"langchain"`` unless told otherwise, so :meth:`clear` (what
  ``llm_cache.clear()`` calls) drops LangChain's entries only.
* What is stored comes back unchanged (LangChain's standard cache suites pass):
  :meth:`update` never changes the caller's generations, and :meth:`lookup` returns
  generations equal to those stored.
* ``semcache.cache_info(result)`` works on what a model returns (``AIMessage``,
  ``LLMResult``, ``Generation``) without entering any of their fields: the info rides on
  the objects themselves, outside the model's fields (the attribute the SDK results
  carry too; not in ``generation_info``, ``response_metadata``, ``==``, ``model_dump``
  or LangChain's serialization). A hit marks the generations (and messages) it returns; a
  miss marks the generations LangChain hands to :meth:`update`, which are the ones the
  caller gets. ``BaseLLM.invoke`` returns a bare ``str``, which cannot carry it: use
  ``generate`` for that.

Failures of the cache never fail the model call: a failed lookup is a miss, a failed
store is logged and skipped. The async twins run the cache in a worker thread.

Where the miss path lives: LangChain itself calls :meth:`lookup`, then the model, then
:meth:`update`; coalescing identical concurrent misses would take a lease in ``lookup``
on a miss and release it in ``update`` (LangChain never calls ``update`` when the model
call failed, so the lease needs a timeout).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import warnings
from collections.abc import Sequence
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import Serializable, dumpd, load
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from semcache.integrations.base import ClearableCache
from semcache.integrations.info import CacheInfo, attach_info, info_from_hit, miss_info
from semcache.integrations.pipeline import (
    check_integration_options,
    lookup_or_miss,
    store_or_log,
)
from semcache.keys import analyze_langchain
from semcache.validation import UNSET

logger = logging.getLogger("semcache")

DEFAULT_NAMESPACE = "langchain"
_ALLOWED: list[type[Serializable]] = [Generation, GenerationChunk, ChatGeneration,
                                      ChatGenerationChunk, AIMessage, AIMessageChunk]


def _serialize(generations: Sequence[Generation]) -> dict[str, Any] | None:
    dumped = [dumpd(g) for g in generations]
    if '"not_implemented"' in json.dumps(dumped):
        logger.debug("semcache: generation holds objects LangChain cannot serialize; not stored")
        return None
    return {"generations": dumped}


@functools.lru_cache(maxsize=1)
def _load_options() -> dict[str, Any]:
    """Restrict ``load`` to output and AI-message classes where langchain-core can."""
    if "allowed_objects" in inspect.signature(load).parameters:
        return {"allowed_objects": _ALLOWED}
    return {}  # older langchain-core: load() has no allow-list (still JSON only)


def _deserialize(data: Any) -> list[Generation] | None:
    if not isinstance(data, dict) or not isinstance(data.get("generations"), list):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # load() is flagged beta by langchain-core
            out = [load(g, **_load_options()) for g in data["generations"]]
    except Exception as exc:  # a value LangChain no longer loads: a miss
        logger.warning("semcache: cached LangChain generations could not be loaded (%s)", exc)
        return None
    return out if all(isinstance(g, Generation) for g in out) else None


def _mark(generations: Sequence[Generation], info: CacheInfo) -> None:
    """Let ``semcache.cache_info`` read ``info`` from the generations and their messages,
    changing none of their fields (the caller's objects stay equal to what was stored)."""
    for generation in generations:
        attach_info(generation, info)
        message = getattr(generation, "message", None)
        if message is not None:
            attach_info(message, info)


class SemcacheLLMCache(BaseCache):
    """LangChain ``BaseCache`` backed by a semcache cache (see the module docstring).

    Args:
        cache: a :class:`semcache.Cache` (any :class:`~semcache.integrations.ClearableCache`).
        namespace: namespace of LangChain's entries (``"langchain"``).
        ttl: seconds entries live (default: the cache's; None: never expire).
        exact_only: no semantic lookups.
    """

    def __init__(self, cache: ClearableCache, *, namespace: str = DEFAULT_NAMESPACE,
                 ttl: Any = UNSET, exact_only: bool = False) -> None:
        checked_namespace, self.ttl = check_integration_options(
            "SemcacheLLMCache", cache, ClearableCache, namespace, ttl, exact_only)
        self.cache = cache
        self.namespace = checked_namespace or namespace
        self.exact_only = exact_only

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations of ``(prompt, llm_string)``, or None on a miss."""
        keys = analyze_langchain(prompt, llm_string)
        hit = lookup_or_miss(self.cache, keys, text=keys.text, namespace=self.namespace,
                             exact_only=self.exact_only)
        if hit is None:
            return None
        generations = _deserialize(hit.response)
        if generations is not None:
            _mark(generations, info_from_hit(hit))
        return generations

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations LangChain got from the model; mark them with the entry id."""
        keys = analyze_langchain(prompt, llm_string)
        data = _serialize(return_val)
        entry = None
        if data is not None:
            entry = store_or_log(self.cache, keys, data,
                                 text=None if self.exact_only else keys.text,
                                 namespace=self.namespace, ttl=self.ttl,
                                 metadata={"api": "langchain"})
        _mark(return_val, miss_info(entry, self.namespace))

    def clear(self, **kwargs: Any) -> None:
        """Delete every entry of this cache's namespace (other namespaces stay)."""
        self.cache.clear(namespace=self.namespace)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """:meth:`lookup` in a worker thread."""
        return await asyncio.to_thread(self.lookup, prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """:meth:`update` in a worker thread."""
        await asyncio.to_thread(self.update, prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        """:meth:`clear` in a worker thread."""
        await asyncio.to_thread(self.clear, **kwargs)


__all__ = ["DEFAULT_NAMESPACE", "SemcacheLLMCache"]
