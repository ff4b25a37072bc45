"""The request rules every integration shares: what is cached, under which key, and when.

One module decides, for the OpenAI wrapper (:mod:`semcache.integrations.openai`) and the
caching proxy (:mod:`semcache.integrations.proxy`) alike:

* which requests are cached at all (:class:`ApiRules`: chat completions and the Responses
  API; a Responses request with ``background`` or a server-side ``conversation`` is
  passed through, because its answer depends on state the cache cannot see);
* the per-call controls (``semcache={"no_cache", "no_store", "ttl", "namespace"}``),
  validated with the same rules as ``Cache.put`` (:mod:`semcache.validation`);
* the exact key, scope and embedded text (:mod:`semcache.keys`);
* which answers are stored (a natural end: ``finish_reason`` in
  :data:`STORABLE_FINISH_REASONS` on every choice - and every choice the request's ``n``
  asked for -, or a Responses ``status`` of ``"completed"``), with which metadata and
  token count;
* that the cache never costs the caller an answer: a failed lookup is a miss, a failed
  store is logged and skipped.

Everything here works on plain JSON dicts; nothing imports the ``openai`` package.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from semcache.errors import (
    CacheClosedError,
    CacheFileError,
    EmbedderError,
    InvalidInputError,
    InvalidTypeError,
    TooLargeError,
)
from semcache.integrations.base import CachedAnswer, RequestCache
from semcache.keys import RequestKeys, analyze_request, analyze_responses_request
from semcache.settings import UNSET
from semcache.validation import check_namespace, check_ttl

logger = logging.getLogger("semcache")

#: Keys accepted in the per-call ``semcache={...}`` control dict.
CONTROL_KEYS: frozenset[str] = frozenset({"no_cache", "no_store", "ttl", "namespace"})
#: finish_reason values of a complete chat answer; anything else is not stored.
STORABLE_FINISH_REASONS: frozenset[str] = frozenset({"stop", "tool_calls", "function_call"})

#: Runs ``func(*args)`` for a coroutine (``asyncio.to_thread``'s signature).
AsyncCall = Callable[..., Awaitable[Any]]

#: Cache-layer failures that degrade a lookup to a miss instead of failing the LLM call.
LOOKUP_DEGRADES = (CacheFileError, EmbedderError, TooLargeError)


# ----------------------------------------------------------------------------- checks


def _checked(check: Callable[[Any], Any], value: Any, where: str) -> Any:
    """``check(value)``, its error's message prefixed with where the value came from."""
    try:
        return check(value)
    except (InvalidInputError, InvalidTypeError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


def check_ttl_option(value: Any, where: str) -> Any:
    """``value`` checked like ``Cache.put(ttl=...)``; UNSET passes through unchanged."""
    return UNSET if value is UNSET else _checked(check_ttl, value, where)


def check_namespace_option(value: Any, where: str) -> str | None:
    """``value`` checked like ``Cache.put(namespace=...)``; None passes through."""
    return None if value is None else _checked(check_namespace, value, where)


def check_integration_options(where: str, cache: Any, cache_type: type, namespace: Any,
                              ttl: Any, exact_only: Any) -> tuple[str | None, Any]:
    """The options every cache integration takes (``where`` names it in messages): the
    cache must be a ``cache_type`` (a Protocol of the public Cache API), ``exact_only`` a
    bool; returns ``(namespace, ttl)`` checked like ``Cache.put``'s."""
    if not isinstance(cache, cache_type):
        raise InvalidTypeError(f"{where} needs a semcache.Cache, got {type(cache).__name__}")
    if not isinstance(exact_only, bool):
        raise InvalidTypeError(f"exact_only must be a bool, got {exact_only!r}")
    return check_namespace_option(namespace, where), check_ttl_option(ttl, where)


@dataclass(frozen=True)
class Control:
    """Per-call settings (``create(..., semcache={...})``, or the proxy's headers)."""

    no_cache: bool = False
    no_store: bool = False
    ttl: Any = UNSET
    namespace: str | None = None


def parse_control(value: Any, where: str = "semcache") -> Control:
    """Validate a ``semcache={...}`` control dict; None means no control.

    Raises:
        InvalidTypeError: not a dict, or a value of the wrong type.
        InvalidInputError: an unknown key, or a value ``Cache.put`` would refuse.
    """
    if value is None:
        return Control()
    if not isinstance(value, dict):
        raise InvalidTypeError(
            f"{where} must be a dict of {sorted(CONTROL_KEYS)}, got {type(value).__name__}"
        )
    unknown = sorted(set(value) - CONTROL_KEYS, key=str)
    if unknown:
        raise InvalidInputError(
            f"unknown {where} control key(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {sorted(CONTROL_KEYS)}"
        )
    for flag in ("no_cache", "no_store"):
        if flag in value and not isinstance(value[flag], bool):
            raise InvalidTypeError(f"{where} {flag!r} must be a bool, got {value[flag]!r}")
    return Control(
        no_cache=value.get("no_cache", False),
        no_store=value.get("no_store", False),
        ttl=check_ttl_option(value.get("ttl", UNSET), where),
        namespace=check_namespace_option(value.get("namespace"), where),
    )


# ------------------------------------------------------------------------------ rules


def _chat_storable(data: Mapping[str, Any]) -> bool:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(
        isinstance(c, dict) and isinstance(c.get("finish_reason"), str)
        and c["finish_reason"] in STORABLE_FINISH_REASONS for c in choices
    )


def _requested_choices(request: Mapping[str, Any]) -> int:
    """How many choices the answer to a chat request has (its ``n``; 1 by default)."""
    n = request.get("n")
    return n if type(n) is int and n >= 1 else 1


def _has_every_choice(data: Mapping[str, Any], expected: int) -> bool:
    """True when ``data["choices"]`` holds choice 0 .. expected-1, each once: a stream
    that ended after choice 0 of an ``n=2`` request is not an answer to it."""
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != expected:
        return False
    indexes = {c.get("index", i) if isinstance(c, dict) else None
               for i, c in enumerate(choices)}
    return indexes == set(range(expected))


def _responses_storable(data: Mapping[str, Any]) -> bool:
    output = data.get("output")
    return (
        data.get("status") == "completed"
        and not data.get("error")
        and isinstance(output, list)
        and bool(output)
    )


def _total_tokens(data: Mapping[str, Any]) -> int:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    return total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else 0


def _never_bypassed(request: Mapping[str, Any]) -> str | None:
    return None


def _responses_bypass(request: Mapping[str, Any]) -> str | None:
    if request.get("background"):
        return "background responses are jobs, not answers"
    if request.get("conversation") is not None:
        return "a server-side conversation changes between calls"
    return None


@dataclass(frozen=True)
class ApiRules:
    """How one API's requests are keyed, and which of its answers are stored."""

    name: str
    """``"chat.completions"`` or ``"responses"`` (also the stored metadata's ``api``)."""
    required: tuple[str, ...]
    """Parameters without which the request is passed through (the API reports the error)."""
    analyze: Callable[[Mapping[str, Any]], RequestKeys]
    bypass_reason: Callable[[Mapping[str, Any]], str | None]
    storable: Callable[[Mapping[str, Any]], bool]
    answer_field: str
    """The list every answer of this API has (``choices`` / ``output``)."""
    tokens: Callable[[Mapping[str, Any]], int] = _total_tokens

    def is_answer(self, data: Any) -> bool:
        """True when a stored value looks like an answer of this API (else: a miss)."""
        return isinstance(data, dict) and isinstance(data.get(self.answer_field), list)

    def cacheable(self, request: Mapping[str, Any]) -> bool:
        """True when ``request`` has what is required and nothing that forces a bypass."""
        if any(name not in request for name in self.required):
            return False
        reason = self.bypass_reason(request)
        if reason is not None:
            logger.debug("semcache: %s request passed through: %s", self.name, reason)
            return False
        return True


CHAT = ApiRules(
    name="chat.completions",
    required=("model", "messages"),
    analyze=analyze_request,
    bypass_reason=_never_bypassed,
    storable=_chat_storable,
    answer_field="choices",
)
RESPONSES = ApiRules(
    name="responses",
    required=("input",),
    analyze=analyze_responses_request,
    bypass_reason=_responses_bypass,
    storable=_responses_storable,
    answer_field="output",
)


# ------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    """Everything decided about one request before the cache or the model is called."""

    cache: RequestCache
    rules: ApiRules
    keys: RequestKeys
    namespace: str | None
    """None: the cache's default namespace."""
    exact_only: bool
    control: Control
    ttl: Any
    model: str | None
    from_default: bool = False
    """The cache is the process-wide default one (a concurrent disable may close it)."""
    choices: int = 1
    """Choices a complete chat answer has (the request's ``n``)."""

    @property
    def text(self) -> str | None:
        """What the semantic tier embeds (None: exact tier only)."""
        return None if self.exact_only else self.keys.text

    def entry_namespace(self) -> str:
        """The namespace entries of this request live in."""
        return self.namespace if self.namespace is not None else self.cache.namespace


def plan_request(
    cache: RequestCache | None,
    rules: ApiRules,
    request: Mapping[str, Any],
    control: Control,
    *,
    namespace: str | None = None,
    ttl: Any = UNSET,
    exact_only: bool = False,
    from_default: bool = False,
) -> Plan | None:
    """Decide how ``request`` goes through ``cache``; None means "pass it through".

    ``namespace`` / ``ttl`` / ``exact_only`` are the integration's defaults (e.g. the
    options of ``wrap``); the per-call ``control`` overrides them.

    Raises:
        SemcacheError: the request holds values that cannot be keyed (NaN, bytes...).
    """
    if cache is None or (control.no_cache and control.no_store):
        return None
    if not rules.cacheable(request):
        return None
    model = request.get("model")
    return Plan(
        cache=cache,
        rules=rules,
        keys=rules.analyze(request),
        namespace=control.namespace or namespace,
        exact_only=exact_only or bool(getattr(cache, "hash_only", False)),
        control=control,
        ttl=control.ttl if control.ttl is not UNSET else ttl,
        model=model if isinstance(model, str) else None,
        from_default=from_default,
        choices=_requested_choices(request) if rules.answer_field == "choices" else 1,
    )


# ------------------------------------------------------------------- failure policy


def lookup_or_miss(cache: RequestCache, keys: RequestKeys, *, text: str | None,
                   namespace: str | None, exact_only: bool,
                   from_default: bool = False) -> CachedAnswer | None:
    """``cache.lookup`` for an integration: a cache failure is a miss (logged), so the
    cache never costs the caller an answer. A default cache closed by another thread's
    ``disable_cache()``/``init_cache()`` (``from_default``) is a race, not a bug: a miss
    too; an explicit closed cache is a bug and raises."""
    try:
        hit = cache.lookup(keys.key, text=text, scope=keys.scope, namespace=namespace,
                           exact_only=exact_only)
    except (*LOOKUP_DEGRADES, CacheClosedError) as exc:
        if isinstance(exc, CacheClosedError) and not from_default:
            raise
        logger.warning("semcache lookup failed, calling the model instead: %s", exc)
        return None
    if hit is None:
        logger.debug("semcache miss key=%s", keys.key.hex()[:12])
    else:
        logger.debug(
            "semcache %s hit entry=%s similarity=%.3f", hit.kind, hit.entry_id, hit.similarity
        )
    return hit


def store_or_log(cache: RequestCache, keys: RequestKeys, data: Any, *, text: str | None,
                 namespace: str | None, ttl: Any, metadata: dict[str, Any],
                 tokens: int = 0) -> int | None:
    """``cache.store`` for an integration; returns the entry id, or None when it failed:
    the caller already paid for this answer, and losing the cache write must not lose it
    (the failure is logged as a warning)."""
    try:
        return cache.store(keys.key, data, text=text, scope=keys.scope, namespace=namespace,
                           ttl=ttl, metadata=metadata, tokens=tokens)
    except Exception as exc:  # noqa: BLE001 - any cache failure: keep the paid answer
        logger.warning(
            "semcache store failed, answer returned uncached: %s: %s", type(exc).__name__, exc
        )
        return None


def lookup(plan: Plan) -> CachedAnswer | None:
    """The cached answer for ``plan``, or None (a miss, ``no_cache``, or a cache failure)."""
    if plan.control.no_cache:
        return None
    return lookup_or_miss(plan.cache, plan.keys, text=plan.keys.text, namespace=plan.namespace,
                          exact_only=plan.exact_only, from_default=plan.from_default)


#: How long a miss waits for an identical request another caller is already fetching.
COALESCE_WAIT_S = 60.0
_ASYNC_POLL_FIRST_S = 0.005
_ASYNC_POLL_MAX_S = 0.05


def claim_for(plan: Plan, wait: float = COALESCE_WAIT_S) -> Any | None:
    """Claim the right to fetch ``plan``'s answer, waiting for an identical request that
    another caller (thread, process, host) is fetching (``Cache.claim``); None when the
    answer will not be both read and stored, or the cache cannot coalesce. Never raises."""
    if plan.control.no_cache or plan.control.no_store:
        return None
    claim = getattr(plan.cache, "claim", None)
    if claim is None:
        return None
    try:
        return claim(plan.keys.key, namespace=plan.namespace, wait=wait)
    except Exception as exc:  # noqa: BLE001 - coalescing saves money, never an answer
        logger.warning("semcache: could not coalesce this miss (%s); calling the model", exc)
        return None


def recheck(plan: Plan, claim: Any) -> CachedAnswer | None:
    """Look again once a claim is taken, when another caller fetched the same request
    meanwhile (``claim.waited``: it held the claim, or its answer was stored between our
    miss and our claim)."""
    if claim is None or not claim.waited:
        return None
    return lookup(plan)


async def claim_for_async(plan: Plan, call: AsyncCall | None = None) -> Any | None:
    """:func:`claim_for` for the event loop: polls without waiting (``wait=0``) and sleeps
    with ``asyncio.sleep`` in between, so that waiting tasks never occupy the worker
    threads the claim holder needs to store its answer. ``call`` runs each poll
    (``await call(claim_for, plan, 0.0)``; default: in a worker thread)."""
    run: AsyncCall = call or asyncio.to_thread
    deadline = time.monotonic() + COALESCE_WAIT_S
    pause, waited = _ASYNC_POLL_FIRST_S, False
    while True:
        claim = await run(claim_for, plan, 0.0)
        if claim is None or claim.held:
            if claim is not None:
                claim.waited = claim.waited or waited
            return claim
        waited = True
        if time.monotonic() >= deadline:
            return claim  # not held: fetch anyway
        await asyncio.sleep(pause)
        pause = min(pause * 2, _ASYNC_POLL_MAX_S)


def store(plan: Plan, data: Mapping[str, Any]) -> int | None:
    """Store the answer ``data`` (JSON) under ``plan``; returns the entry id or None.

    Nothing is stored with ``no_store``, nor an answer that did not end naturally. Never
    raises (:func:`store_or_log`).
    """
    if plan.control.no_store:
        return None
    if not plan.rules.storable(data):
        logger.debug("semcache: %s answer did not end naturally; not stored", plan.rules.name)
        return None
    if plan.rules.answer_field == "choices" and not _has_every_choice(data, plan.choices):
        logger.debug("semcache: %s answer lacks some of the %d choices asked for; not stored",
                     plan.rules.name, plan.choices)
        return None
    model = plan.model or data.get("model")
    return store_or_log(plan.cache, plan.keys, dict(data), text=plan.text,
                        namespace=plan.namespace, ttl=plan.ttl,
                        metadata={"model": model, "api": plan.rules.name},
                        tokens=plan.rules.tokens(data))


__all__ = [
    "CHAT",
    "CONTROL_KEYS",
    "LOOKUP_DEGRADES",
    "RESPONSES",
    "STORABLE_FINISH_REASONS",
    "ApiRules",
    "Control",
    "Plan",
    "check_namespace_option",
    "check_ttl_option",
    "lookup",
    "lookup_or_miss",
    "parse_control",
    "plan_request",
    "store",
    "store_or_log",
]
