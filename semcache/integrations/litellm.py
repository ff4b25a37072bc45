"""LiteLLM with a persistent semantic cache: ``enable(cache)`` (extra ``[litellm]``).

::

    import litellm, semcache
    from semcache.integrations import litellm as semcache_litellm

    semcache_litellm.enable(semcache.open("llm.db"))
    litellm.completion(model="openai/gpt-4o-mini", messages=[...])   # and acompletion

It follows LiteLLM's own convention for custom caches: :class:`SemcacheLiteLLMCache` is a
``litellm.caching.caching.Cache`` whose ``get_cache`` / ``add_cache`` (and their async
twins, which run the cache in a worker thread) are semcache's, and ``enable`` sets it as
``litellm.cache`` (``litellm.cache = SemcacheLiteLLMCache(cache)`` does the same). LiteLLM's
caching handler then calls it around every ``completion`` / ``acompletion``:

* **Keys and scopes** are those of ``semcache.wrap`` (:mod:`semcache.keys`), computed from
  the request LiteLLM received: the model as given (``"openai/gpt-4o-mini"``), the messages
  and every generation parameter. LiteLLM's own parameters (``api_key``, ``api_base``,
  ``metadata``, ``num_retries``, callbacks...) are left out, except those that change what
  the model is asked or answers (:data:`KEYED_LITELLM_PARAMS`). Only the last user message
  is embedded; the system prompt and earlier turns are scope.
* **Hits** are returned as the chat completion JSON; LiteLLM turns it into its
  ``ModelResponse`` (``_hidden_params["cache_hit"]`` is True), or with ``stream=True``
  replays it as its own stream chunks (LiteLLM's replay, a chunk per word in 1.10x: the
  ``stream_chunk_*`` settings of ``wrap`` do not apply). A semantic hit also sets
  ``metadata["semantic-similarity"]`` when the call passed a ``metadata`` dict, as
  LiteLLM's own semantic caches do.
* **Stores**: LiteLLM hands over the answer after the call (a stream once it completed);
  answers that did not end naturally are not stored (the rules of
  :mod:`semcache.integrations.pipeline`), nor upstream errors (LiteLLM never hands those
  over). ``acompletion`` answers are stored by a task LiteLLM starts after returning them.
* **Per-call controls**, LiteLLM's: ``cache={"no-cache": True}`` (don't read),
  ``{"no-store": True}`` (don't write), ``{"ttl": 60}``, ``{"namespace": "tenant-7"}``,
  ``{"s-maxage": 600}`` (accept only answers younger than that); ``caching=False`` skips the
  cache entirely. Values are checked like ``Cache.put`` checks them.
* **Hit info**: ``semcache.cache_info(response)`` works on what ``completion`` returns,
  streams included: LiteLLM builds those objects itself, so the info is kept per
  ``litellm_call_id`` (which LiteLLM puts in ``_hidden_params``) for the last
  :data:`CALLS_KEPT` calls of the process.
* **Failures** never cost an answer: a failed lookup is a miss, a failed store is logged.
  A request that cannot be keyed (a value that is not JSON) is passed through uncached.

Identical concurrent misses are not coalesced: LiteLLM calls the lookup and the store
separately, and does not call the store when the model call failed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from semcache.errors import InvalidInputError, InvalidTypeError, SemcacheError
from semcache.integrations.base import CachedAnswer, RequestCache
from semcache.integrations.info import CacheInfo, info_from_hit, miss_info
from semcache.integrations.pipeline import (
    CHAT,
    Control,
    Plan,
    check_integration_options,
    lookup,
    parse_control,
    plan_request,
    store,
)
from semcache.keys import analyze_request
from semcache.settings import UNSET

try:
    import litellm
    from litellm.caching.caching import Cache as _LiteLLMCache
    from litellm.types.caching import CachingSupportedCallTypes, LiteLLMCacheType
    from litellm.types.utils import all_litellm_params
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"semcache.integrations.litellm needs the litellm package ({exc}): "
        "pip install 'semcache-sqlite[litellm]'") from exc

logger = logging.getLogger("semcache")

#: LiteLLM's own call parameters that change what the model is asked or what it answers:
#: part of the key although LiteLLM owns them (its other parameters are transport,
#: credentials, routing, logging or pricing, and are left out).
KEYED_LITELLM_PARAMS: frozenset[str] = frozenset({
    "custom_llm_provider",  # the same model name at another provider
    "mock_response",  # LiteLLM's canned answer (tests): never served to a real call
    "litellm_system_prompt",
    "prompt_id", "prompt_variables", "prompt_version", "prompt_label", "prompt_environment",
    "custom_prompt_dict", "initial_prompt_value", "final_prompt_value", "roles",
    "bos_token", "eos_token", "assistant_continue_message", "user_continue_message",
    "ensure_alternating_roles", "supports_system_message",
    "merge_reasoning_content_in_choices",
})
#: Added to the call's arguments by LiteLLM's caching handler, never by the caller.
_HANDLER_ADDED: frozenset[str] = frozenset({"parent_otel_span"})
#: The keys of LiteLLM's per-call ``cache={...}`` control (its ``DynamicCacheControl``).
CACHE_CONTROL_KEYS: frozenset[str] = frozenset(
    {"no-cache", "no-store", "ttl", "namespace", "s-maxage", "s-max-age", "use-cache"})
#: How many recent calls ``semcache.cache_info`` can answer for (per process).
CALLS_KEPT = 10_000
#: The call types this cache serves: LiteLLM's chat completions.
CALL_TYPES: tuple[CachingSupportedCallTypes, ...] = ("completion", "acompletion")


def _litellm_owned(name: str) -> bool:
    # LiteLLM's own parameters are listed in all_litellm_params; its internal ones start
    # with "_" (a provider's generation parameter never does).
    return name in all_litellm_params or name.startswith("_")


def litellm_request(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The request to key: the arguments of a LiteLLM call without LiteLLM's own ones
    (:data:`KEYED_LITELLM_PARAMS` stay); :mod:`semcache.keys` then drops ``stream``,
    ``timeout``, ``user``... like for every integration."""
    return {name: value for name, value in kwargs.items()
            if name not in _HANDLER_ADDED
            and (name in KEYED_LITELLM_PARAMS or not _litellm_owned(name))}


@dataclass(frozen=True)
class CallControl:
    """What one call's ``cache={...}`` (and ``caching=``) asks for."""

    control: Control
    max_age: float | None = None
    """``s-maxage``: serve only answers younger than this many seconds."""
    bypass: bool = False
    """``caching=False``: neither read nor write."""


def _max_age(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidInputError(
            f"cache 's-maxage' must be a number of seconds >= 0, got {value!r}")
    return float(value)


def parse_cache_control(kwargs: Mapping[str, Any]) -> CallControl:
    """The controls of one LiteLLM call (``cache={...}``, ``caching=``), checked.

    Raises:
        InvalidTypeError: ``cache`` is not a dict, or a value has the wrong type.
        InvalidInputError: an unknown key, or a value ``Cache.put`` would refuse.
    """
    value = kwargs.get("cache")
    bypass = kwargs.get("caching") is False
    if value is None:
        return CallControl(Control(), bypass=bypass)
    if not isinstance(value, dict):
        raise InvalidTypeError(
            f"cache must be a dict of {sorted(CACHE_CONTROL_KEYS)}, got {type(value).__name__}")
    unknown = sorted(set(value) - CACHE_CONTROL_KEYS, key=str)
    if unknown:
        raise InvalidInputError(
            f"unknown cache control key(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {sorted(CACHE_CONTROL_KEYS)}")
    ours = {name: value[key] for key, name in
            (("no-cache", "no_cache"), ("no-store", "no_store"), ("ttl", "ttl"),
             ("namespace", "namespace")) if value.get(key) is not None}
    use_cache = value.get("use-cache")
    if use_cache is not None and not isinstance(use_cache, bool):
        raise InvalidTypeError(f"cache 'use-cache' must be a bool, got {use_cache!r}")
    max_age = value.get("s-maxage")
    return CallControl(parse_control(ours, where="cache"),
                       _max_age(value.get("s-max-age") if max_age is None else max_age), bypass)


class CallInfos:
    """The :class:`CacheInfo` of the most recent calls, by ``litellm_call_id``.

    LiteLLM builds the response (or stream) it returns from what the cache handed it; the
    cache never sees that object, but LiteLLM stamps the call id on it.
    """

    def __init__(self, size: int = CALLS_KEPT) -> None:
        self._items: OrderedDict[str, CacheInfo] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, call_id: Any, info: CacheInfo) -> None:
        """Remember ``info`` for the call ``call_id`` (ignored if it is not a str)."""
        if not isinstance(call_id, str):
            return
        with self._lock:
            self._items[call_id] = info
            self._items.move_to_end(call_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, call_id: str) -> CacheInfo | None:
        """The info of call ``call_id``, None if unknown (or forgotten)."""
        with self._lock:
            return self._items.get(call_id)


_CALLS = CallInfos()


def info_for_call(call_id: str) -> CacheInfo | None:
    """What the cache did for the LiteLLM call ``call_id`` (``semcache.cache_info`` asks)."""
    return _CALLS.get(call_id)


def _answer_json(result: Any) -> dict[str, Any] | None:
    """The chat completion JSON of what LiteLLM hands to ``add_cache``."""
    if isinstance(result, (str, bytes)):
        try:
            result = json.loads(result)
        except ValueError:
            return None
    else:
        dump = getattr(result, "model_dump_json", None)
        if callable(dump):
            result = json.loads(dump(exclude_unset=True))
    return result if CHAT.is_answer(result) else None


def _too_old(hit: CachedAnswer, max_age: float | None) -> bool:
    created = getattr(hit, "created_at", None)
    return (max_age is not None and isinstance(created, (int, float))
            and time.time() - created > max_age)


class SemcacheLiteLLMCache(_LiteLLMCache):
    """``litellm.cache`` backed by a semcache cache (see the module docstring).

    Args:
        cache: a :class:`semcache.Cache` (any :class:`~semcache.integrations.RequestCache`).
        namespace: namespace of the entries (default: the cache's).
        ttl: seconds entries live (default: the cache's; None: never expire).
        exact_only: no semantic lookups.
    """

    def __init__(self, cache: RequestCache, *, namespace: str | None = None,
                 ttl: Any = UNSET, exact_only: bool = False) -> None:
        checked_namespace, checked_ttl = check_integration_options(
            "SemcacheLiteLLMCache", cache, RequestCache, namespace, ttl, exact_only)
        # LiteLLM's part: chat completions only; its in-memory store stays empty.
        super().__init__(type=LiteLLMCacheType.LOCAL, supported_call_types=list(CALL_TYPES))
        self.semcache = cache
        self.semcache_namespace = checked_namespace
        self.semcache_ttl = checked_ttl
        self.semcache_exact_only = exact_only

    def _plan(self, kwargs: Mapping[str, Any], control: Control) -> Plan | None:
        try:
            return plan_request(self.semcache, CHAT, litellm_request(kwargs), control,
                                namespace=self.semcache_namespace, ttl=self.semcache_ttl,
                                exact_only=self.semcache_exact_only)
        except SemcacheError as exc:
            logger.warning("semcache: LiteLLM request passed through uncached: %s", exc)
            return None

    # -- LiteLLM's custom-cache interface ---------------------------------------------------

    def get_cache_key(self, **kwargs: Any) -> str:
        """The request's exact key (hex), what LiteLLM shows as ``_hidden_params["cache_key"]``."""
        try:
            return analyze_request(litellm_request(kwargs)).key.hex()
        except SemcacheError:
            return ""

    def get_cache(self, dynamic_cache_object: Any = None, **kwargs: Any) -> Any:
        """The cached chat completion (JSON) for a call, or None.

        Raises:
            SemcacheError: a ``cache={...}`` control is malformed (before any model call).
        """
        call = parse_cache_control(kwargs)
        plan = None if call.bypass else self._plan(kwargs, call.control)
        if plan is None:
            return None
        hit = lookup(plan)
        if hit is not None and (_too_old(hit, call.max_age) or not CHAT.is_answer(hit.response)):
            hit = None
        call_id = kwargs.get("litellm_call_id")
        if hit is None:
            _CALLS.put(call_id, miss_info(None, plan.entry_namespace()))
            return None
        _CALLS.put(call_id, info_from_hit(hit))
        metadata = kwargs.get("metadata")
        if hit.kind == "semantic" and isinstance(metadata, dict):
            metadata["semantic-similarity"] = hit.similarity  # LiteLLM's convention
        return hit.response

    def add_cache(self, result: Any, **kwargs: Any) -> None:
        """Store the answer of a call. Never raises: LiteLLM calls this before it returns
        the answer, which is already paid for (failures are logged as warnings)."""
        try:
            call = parse_cache_control(kwargs)
            plan = None if call.bypass else self._plan(kwargs, call.control)
            data = None if plan is None else _answer_json(result)
        except Exception as exc:  # noqa: BLE001 - keep the paid answer
            logger.warning("semcache: LiteLLM answer not stored: %s: %s",
                           type(exc).__name__, exc)
            return
        if plan is None or data is None:
            return
        entry_id = store(plan, data)
        _CALLS.put(kwargs.get("litellm_call_id"),
                   miss_info(entry_id, plan.entry_namespace(),
                             looked_up=not plan.control.no_cache))

    async def async_get_cache(self, dynamic_cache_object: Any = None, **kwargs: Any) -> Any:
        """:meth:`get_cache` in a worker thread: embedding and SQLite never block the loop."""
        return await asyncio.to_thread(self.get_cache, **kwargs)

    async def async_add_cache(self, result: Any, dynamic_cache_object: Any = None,
                              **kwargs: Any) -> None:
        """:meth:`add_cache` in a worker thread."""
        await asyncio.to_thread(self.add_cache, result, **kwargs)


# -- enable / disable ---------------------------------------------------------------------

#: LiteLLM's callback lists into which ``litellm.caching.caching.Cache()`` adds "cache".
_CALLBACK_LISTS = ("input_callback", "success_callback", "_async_success_callback")


@dataclass(frozen=True)
class _Previous:
    """LiteLLM's cache setting before :func:`enable`, and what enable installed."""

    cache: Any
    had_callback: dict[str, bool]
    installed: SemcacheLiteLLMCache


_lock = threading.Lock()
_previous: _Previous | None = None


#: Modules that the cache-hit path of some LiteLLM versions imports: they pull LiteLLM's
#: proxy, whose packages a plain ``pip install litellm`` lacks (BerriAI/litellm#42195).
_HIT_PATH_MODULES = ("litellm.llms.anthropic.messages.native.response_cache",)


def _check_hit_path() -> None:
    """Fail now, with the fix, rather than on the first cache hit when LiteLLM's hit path
    cannot import what it needs (the extra ``[litellm]`` installs it)."""
    for name in _HIT_PATH_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing = exc.name or ""
            if missing and (name == missing or name.startswith(missing + ".")):
                continue  # this LiteLLM has no such module: its hit path does not need it
            raise ImportError(
                f"this LiteLLM ({getattr(litellm, 'version', '?')}) needs the {missing!r} "
                "package to serve cache hits: pip install 'semcache-sqlite[litellm]'",
                name=missing) from exc


def enable(cache: RequestCache, *, namespace: str | None = None, ttl: Any = UNSET,
           exact_only: bool = False) -> SemcacheLiteLLMCache:
    """Give LiteLLM a persistent semantic cache: ``litellm.cache`` becomes ``cache``.

    ``completion`` and ``acompletion`` (streamed or not) then answer repeated and
    paraphrased requests from ``cache``, across processes and restarts. :func:`disable`
    puts back LiteLLM's previous setting. Returns the installed ``litellm.cache``.

    Raises:
        SemcacheError: a bad option (LiteLLM's setting is left as it was).
        ImportError: this LiteLLM cannot serve cache hits without packages that are missing.
    """
    global _previous
    _check_hit_path()
    with _lock:
        if _previous is not None and litellm.cache is _previous.installed:
            before, had = _previous.cache, _previous.had_callback  # enabled again
        else:
            before = litellm.cache
            had = {name: "cache" in getattr(litellm, name) for name in _CALLBACK_LISTS}
        # LiteLLM's Cache() adds its "cache" callbacks: read them before building ours.
        installed = SemcacheLiteLLMCache(cache, namespace=namespace, ttl=ttl,
                                         exact_only=exact_only)
        litellm.cache = installed
        _previous = _Previous(before, had, installed)
    return installed


def disable() -> None:
    """Put back LiteLLM's cache setting from before :func:`enable` (if enable's cache is
    still the one installed; a cache set since is left alone). The semcache cache stays
    open: it is the caller's."""
    global _previous
    with _lock:
        previous, _previous = _previous, None
        if previous is None or litellm.cache is not previous.installed:
            return
        litellm.cache = previous.cache
        for name, had in previous.had_callback.items():
            callbacks = getattr(litellm, name)
            while not had and "cache" in callbacks:
                callbacks.remove("cache")


__all__ = [
    "CACHE_CONTROL_KEYS",
    "CALLS_KEPT",
    "CALL_TYPES",
    "KEYED_LITELLM_PARAMS",
    "CallControl",
    "CallInfos",
    "SemcacheLiteLLMCache",
    "disable",
    "enable",
    "info_for_call",
    "litellm_request",
    "parse_cache_control",
]
