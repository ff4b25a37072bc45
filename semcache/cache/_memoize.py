"""``@memoize``: cache a ``str -> JSON`` function (sync or async) in a semcache file.

::

    @cache.memoize(namespace="summaries")
    def summarize(text: str) -> str: ...

    @cache.memoize()
    async def classify(text: str) -> dict: ...

The argument is the prompt: a repeated call is an exact hit. Matching is exact by default:
a summary of another text is a wrong answer, so paraphrase matching is an explicit option
(``semantic=True``, for functions whose answer depends only on the meaning of the text,
such as classifying a question). Results are stored with ``cache.put(text, result,
namespace=ns)``.

Decisions:

* The default namespace is ``"memoize:<module>.<qualname>"``: two functions never answer
  for each other, and the name stays stable across processes and restarts (unlike
  ``id(fn)``). Renaming or moving a function therefore starts it with an empty cache.
* An explicit namespace is the function's result space, as ``name=`` is in diskcache's
  ``memoize``: functions given the same namespace share results (a renamed function, or
  the same function in two services, keeps its cache), so ``summarize`` and ``translate``
  must not be given the same one. Results are plain entries of that namespace
  (``cache.get(text, namespace=...)`` reads them).
* Exactly one ``str`` argument (positional or keyword): other arguments would change the
  result without being part of the key, so they are refused (InvalidTypeError) rather
  than silently ignored. A non-str argument raises InvalidTypeError.
* A blank argument (``""`` or only whitespace) cannot be a cache key: the function is
  called uncached.
* ``None`` results are not stored (they usually mean "no answer"); other results must be
  JSON-serializable (SerializationError otherwise, raised by ``put`` - the computed result
  is still lost to the caller in that case, because it would be wrong to hide a bug).
* Async functions: ``get``/``put`` run in ``asyncio.to_thread`` (embedding and SQLite I/O
  must not block the event loop). Concurrent identical calls are not de-duplicated.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from semcache.errors import InvalidTypeError
from semcache.validation import UNSET, check_bool, check_namespace, check_ttl


def default_namespace(fn: Callable[..., Any]) -> str:
    """``"memoize:<module>.<qualname>"`` of ``fn``."""
    module = getattr(fn, "__module__", None) or "__main__"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    return f"memoize:{module}.{qualname}"


def _the_text(fn_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) + len(kwargs) != 1:
        raise InvalidTypeError(
            f"memoized {fn_name}() takes exactly one str argument (the prompt); got "
            f"{len(args)} positional and {len(kwargs)} keyword argument(s)"
        )
    text = args[0] if args else next(iter(kwargs.values()))
    if not isinstance(text, str):
        raise InvalidTypeError(
            f"memoized {fn_name}() takes a str argument; got {type(text).__name__}"
        )
    return text


def memoize(
    cache: Any,
    *,
    namespace: str | None = None,
    ttl: Any = UNSET,
    semantic: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Return a decorator caching a one-``str``-argument function in ``cache``.

    Args:
        cache: a :class:`semcache.Cache`.
        namespace: where the results live; default ``"memoize:<module>.<qualname>"``.
            Functions given the same namespace answer for each other.
        ttl: seconds a result lives (default: the cache's ttl).
        semantic: also answer paraphrases of a cached argument (default: exact only).

    The decorated function has ``.cache``, ``.namespace`` and ``.uncached`` (the original).
    """
    exact_only = not check_bool(semantic, "memoize semantic")
    if namespace is not None:
        check_namespace(namespace, "memoize namespace")
    put_kwargs: dict[str, Any] = {} if ttl is UNSET else {"ttl": check_ttl(ttl)}

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise InvalidTypeError(f"memoize decorates a function, got {type(fn).__name__}")
        ns = namespace if namespace is not None else default_namespace(fn)
        name = getattr(fn, "__qualname__", "function")

        def lookup(text: str) -> Any:
            return cache.get(text, namespace=ns, exact_only=exact_only)

        def store(text: str, result: Any) -> None:
            if result is not None:
                cache.put(text, result, namespace=ns, **put_kwargs)

        wrapper: Any
        if inspect.iscoroutinefunction(inspect.unwrap(fn)):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                text = _the_text(name, args, kwargs)
                if not text.strip():
                    return await fn(*args, **kwargs)
                hit = await asyncio.to_thread(lookup, text)
                if hit is not None:
                    return hit.response
                result = await fn(*args, **kwargs)
                await asyncio.to_thread(store, text, result)
                return result

            wrapper = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                text = _the_text(name, args, kwargs)
                if not text.strip():
                    return fn(*args, **kwargs)
                hit = lookup(text)
                if hit is not None:
                    return hit.response
                result = fn(*args, **kwargs)
                store(text, result)
                return result

            wrapper = sync_wrapper
        wrapper.cache = cache
        wrapper.namespace = ns
        wrapper.uncached = fn
        return wrapper

    return decorator


__all__ = ["default_namespace", "memoize"]
