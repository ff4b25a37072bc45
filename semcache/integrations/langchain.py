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
* ``semcache.cache_info(result)`` works on what a model returns (``AIMessage``,
  ``LLMResult``, ``Generation``): LangChain's objects carry it as a dict under
  ``response_metadata["semcache"]`` / ``generation_info["semcache"]``. A hit adds it to
  the generations it returns; a miss adds it (with the new entry id) to the generations
  LangChain hands to :meth:`update`, which are the ones the caller gets. ``BaseLLM.invoke``
  returns a bare ``str``, which cannot carry it: use ``generate`` for that.

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

from semcache.errors import InvalidTypeError
from semcache.integrations.base import ClearableCache
from semcache.integrations.info import (
    METADATA_KEY,
    CacheInfo,
    info_from_hit,
    miss_info,
)
from semcache.integrations.pipeline import (
    check_namespace_option,
    check_ttl_option,
    lookup_or_miss,
    store_or_log,
)
from semcache.keys import analyze_langchain
from semcache.validation import UNSET

logger = logging.getLogger("semcache")

DEFAULT_NAMESPACE = "langchain"
_ALLOWED: list[type[Serializable]] = [Generation, GenerationChunk, ChatGeneration,
                                      ChatGenerationChunk, AIMessage, AIMessageChunk]


def _without_info(data: Any) -> Any:
    """A serialized generation without semcache's own info dicts (never stored)."""
    if isinstance(data, dict):
        return {k: _without_info(v) for k, v in data.items()
                if not (k == METADATA_KEY and isinstance(v, dict) and "hit" in v)}
    if isinstance(data, list):
        return [_without_info(v) for v in data]
    return data


def _serialize(generations: Sequence[Generation]) -> dict[str, Any] | None:
    dumped = [_without_info(dumpd(g)) for g in generations]
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
    """Put ``info`` where LangChain users (and ``semcache.cache_info``) can read it."""
    data = info.to_dict()
    for generation in generations:
        generation.generation_info = {**(generation.generation_info or {}), METADATA_KEY: data}
        message = getattr(generation, "message", None)
        if message is not None:
            message.response_metadata = {**message.response_metadata, METADATA_KEY: data}


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
        if not isinstance(cache, ClearableCache):
            raise InvalidTypeError(
                f"SemcacheLLMCache needs a semcache.Cache, got {type(cache).__name__}")
        if not isinstance(exact_only, bool):
            raise InvalidTypeError(f"exact_only must be a bool, got {exact_only!r}")
        self.cache = cache
        self.namespace = check_namespace_option(namespace, "SemcacheLLMCache") or namespace
        self.ttl = check_ttl_option(ttl, "SemcacheLLMCache")
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
