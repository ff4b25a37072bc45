"""The wrapped client and :func:`wrap`."""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

from semcache.errors import InvalidTypeError
from semcache.integrations.base import RequestCache
from semcache.integrations.openai.options import WrapOptions, parse_wrap_options
from semcache.integrations.openai.resources import (
    AsyncCachedCompletions,
    AsyncCachedResponses,
    CachedChat,
    CachedCompletions,
    CachedResponses,
    _Proxy,
)


class CachedClient(_Proxy):
    """A wrapped OpenAI client (see :func:`wrap`)."""

    def __init__(self, client: Any, cache: RequestCache | None, options: WrapOptions,
                 is_async: bool) -> None:
        super().__init__(client)
        completions_cls = AsyncCachedCompletions if is_async else CachedCompletions
        chat = CachedChat(
            client.chat, completions_cls(client.chat.completions, cache, options, is_async)
        )
        attributes: list[tuple[str, Any]] = [
            ("__wrapped__", client),
            ("_semcache_cache", cache),
            ("_semcache_options", options),
            ("_semcache_async", is_async),
            ("chat", chat),
        ]
        responses = getattr(client, "responses", None)
        if callable(getattr(responses, "create", None)):
            responses_cls = AsyncCachedResponses if is_async else CachedResponses
            attributes.append(("responses", responses_cls(responses, cache, options, is_async)))
        for name, value in attributes:
            object.__setattr__(self, name, value)

    def _rewrap(self, client: Any) -> CachedClient:
        return CachedClient(
            client, self._semcache_cache, self._semcache_options, self._semcache_async
        )

    def with_options(self, *args: Any, **kwargs: Any) -> CachedClient:
        """``client.with_options(...)``, still cached with the same cache and options."""
        return self._rewrap(self._target.with_options(*args, **kwargs))

    def copy(self, *args: Any, **kwargs: Any) -> CachedClient:
        """``client.copy(...)``, still cached with the same cache and options."""
        return self._rewrap(self._target.copy(*args, **kwargs))

    def __enter__(self) -> CachedClient:
        self._target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._target.__exit__(*exc)

    async def __aenter__(self) -> CachedClient:
        await self._target.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._target.__aexit__(*exc)

    def __repr__(self) -> str:
        return f"<semcache wrapped {self._target!r}>"


logger = logging.getLogger("semcache")


def _is_async_client(client: Any) -> bool:
    try:
        import openai

        if isinstance(client, openai.AsyncOpenAI):
            return True
        if isinstance(client, openai.OpenAI):
            return False
    except ImportError:  # duck-typed client without the openai package
        pass
    # The SDK wraps create() in decorators that hide the coroutine function; unwrap them.
    create = inspect.unwrap(client.chat.completions.create)
    return inspect.iscoroutinefunction(create)


def wrap(client: Any, cache: RequestCache | None = None, **options: Any) -> CachedClient:
    """Return ``client`` with its LLM calls answered from ``cache`` when possible.

    Cached: ``chat.completions.create`` / ``.parse``, ``responses.create``, and
    ``with_raw_response.create`` of both (see :mod:`semcache.integrations.openai`).

    Args:
        client: ``openai.OpenAI`` or ``openai.AsyncOpenAI`` (or a subclass such as
            ``AzureOpenAI``, or any object with ``chat.completions.create``).
        cache: a :class:`semcache.Cache` (any :class:`~semcache.integrations.RequestCache`);
            None uses the process-wide default cache of :func:`semcache.init_cache` at
            each call (no default -> no caching).
        namespace: namespace for this client's entries (default: the cache's).
        ttl: seconds entries written through this client live (None: never expire;
            default: the cache's). Checked like ``Cache.put(ttl=...)``.
        exact_only: never do semantic lookups through this client.
        stream_chunk_strategy: ``words | sentences | paragraphs | characters``, how a
            cached answer is split when replayed with ``stream=True`` (default: what
            ``init_cache(stream_chunk_strategy=...)`` set for the process, else ``words``).
        stream_chunk_length: units of that strategy per replayed chunk (default likewise,
            else 8).

    The cache's embedder is loaded in a background thread as soon as the client is
    wrapped (``cache.warmup()``), so the first semantic lookup does not wait for it.

    Raises:
        InvalidTypeError: ``client`` has no ``chat.completions.create``, or ``cache`` is
            not a cache.
        InvalidInputError: an unknown option, or a value ``Cache.put`` would refuse.
    """
    parsed = parse_wrap_options(options)
    if isinstance(client, CachedClient):
        client = client.__wrapped__
    completions = getattr(getattr(client, "chat", None), "completions", None)
    if not callable(getattr(completions, "create", None)):
        raise InvalidTypeError(
            f"wrap() expects an openai.OpenAI / openai.AsyncOpenAI client, got "
            f"{type(client).__name__} (no chat.completions.create)"
        )
    if cache is not None and not isinstance(cache, RequestCache):
        raise InvalidTypeError(
            f"wrap() cache must be a semcache.Cache (or None for the default cache), "
            f"got {type(cache).__name__}"
        )
    if cache is not None:
        _warm_up_in_background(cache)
    return CachedClient(client, cache, parsed, _is_async_client(client))


def _warm_up_in_background(cache: RequestCache) -> None:
    def warm() -> None:
        try:
            cache.warmup()
        except Exception as exc:  # noqa: BLE001 - the first lookup will load it (or say why)
            logger.debug("semcache: warm-up of the embedder failed: %s", exc)

    threading.Thread(target=warm, name="semcache-warmup", daemon=True).start()


__all__ = ["CachedClient", "wrap"]
