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
import hashlib
import inspect
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import Serializable, dumpd, load
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from semcache.errors import CacheFileError, EmbedderError, InvalidTypeError, TooLargeError
from semcache.integrations.base import CachedAnswer, ClearableCache
from semcache.integrations.info import CacheInfo, attach_info, info_from_hit, miss_info
from semcache.integrations.pipeline import check_namespace_option, check_ttl_option
from semcache.settings import UNSET

logger = logging.getLogger("semcache")

DEFAULT_NAMESPACE = "langchain"
_KEY_VERSION = 1
_LOOKUP_DEGRADES = (CacheFileError, EmbedderError, TooLargeError)
_ALLOWED: list[type[Serializable]] = [Generation, GenerationChunk, ChatGeneration,
                                      ChatGenerationChunk, AIMessage, AIMessageChunk]
_HUMAN = ("HumanMessage", "HumanMessageChunk")


@dataclass(frozen=True)
class PromptKeys:
    """Exact key, semantic scope and embedded text of one LangChain lookup."""

    key: bytes
    scope: str
    text: str | None


def _digest(payload: dict[str, Any]) -> bytes:
    data = json.dumps({"v": _KEY_VERSION, "api": "langchain", **payload}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).digest()


def _decode_messages(prompt: str) -> list[dict[str, Any]] | None:
    """The message list of a chat prompt (LangChain's JSON), None for a plain prompt."""
    if not prompt.startswith("["):
        return None
    try:
        data = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(data, list) or not data:
        return None
    if not all(isinstance(m, dict) and m.get("lc") == 1 and isinstance(m.get("kwargs"), dict)
               for m in data):
        return None
    return data


def _is_human(message: dict[str, Any]) -> bool:
    ident = message.get("id") or []
    return (bool(ident) and ident[-1] in _HUMAN) or message["kwargs"].get("type") == "human"


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content if content.strip() else None
    if not isinstance(content, list):
        return None
    texts = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(
                block.get("text"), str):
            texts.append(block["text"])
        else:
            return None  # an image, audio, a file...: exact-only
    text = "\n".join(texts)
    return text if text.strip() else None


def prompt_keys(prompt: str, llm_string: str) -> PromptKeys:
    """Key, scope and embedded text of LangChain's ``(prompt, llm_string)``."""
    if not isinstance(prompt, str) or not isinstance(llm_string, str):
        raise InvalidTypeError(
            f"LangChain cache keys are strings; got {type(prompt).__name__} prompt and "
            f"{type(llm_string).__name__} llm_string")
    key = _digest({"llm": llm_string, "prompt": prompt})
    messages = _decode_messages(prompt)
    if messages is None:  # a plain LLM prompt: embedded whole
        scope = _digest({"llm": llm_string, "prompt": {"semcache": "embedded"}}).hex()
        return PromptKeys(key, scope, _text_of(prompt))
    index = next((i for i in range(len(messages) - 1, -1, -1) if _is_human(messages[i])), None)
    if index is None:
        return PromptKeys(key, _digest({"llm": llm_string, "messages": messages}).hex(), None)
    last = messages[index]
    placeholder = {**last, "kwargs": {**last["kwargs"], "content": {"semcache": "embedded"}}}
    scoped = [*messages[:index], placeholder, *messages[index + 1:]]
    scope = _digest({"llm": llm_string, "messages": scoped}).hex()
    return PromptKeys(key, scope, _text_of(last["kwargs"].get("content")))


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
        if not isinstance(cache, ClearableCache):
            raise InvalidTypeError(
                f"SemcacheLLMCache needs a semcache.Cache, got {type(cache).__name__}")
        if not isinstance(exact_only, bool):
            raise InvalidTypeError(f"exact_only must be a bool, got {exact_only!r}")
        self.cache = cache
        self.namespace = check_namespace_option(namespace, "SemcacheLLMCache") or namespace
        self.ttl = check_ttl_option(ttl, "SemcacheLLMCache")
        self.exact_only = exact_only

    def _hit(self, keys: PromptKeys) -> CachedAnswer | None:
        try:
            return self.cache.lookup(keys.key, text=keys.text, scope=keys.scope,
                                     namespace=self.namespace, exact_only=self.exact_only)
        except _LOOKUP_DEGRADES as exc:
            logger.warning("semcache lookup failed, calling the model instead: %s", exc)
            return None

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations of ``(prompt, llm_string)``, or None on a miss."""
        hit = self._hit(prompt_keys(prompt, llm_string))
        if hit is None:
            return None
        generations = _deserialize(hit.response)
        if generations is not None:
            _mark(generations, info_from_hit(hit))
        return generations

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations LangChain got from the model; mark them with the entry id."""
        keys = prompt_keys(prompt, llm_string)
        data = _serialize(return_val)
        entry = None
        if data is not None:
            text = None if self.exact_only else keys.text
            try:
                entry = self.cache.store(keys.key, data, text=text, scope=keys.scope,
                                         namespace=self.namespace, ttl=self.ttl,
                                         metadata={"api": "langchain"})
            except Exception as exc:  # noqa: BLE001 - the answer was paid for: keep it
                logger.warning("semcache store failed, answer returned uncached: %s: %s",
                               type(exc).__name__, exc)
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


__all__ = ["DEFAULT_NAMESPACE", "PromptKeys", "SemcacheLLMCache", "prompt_keys"]
