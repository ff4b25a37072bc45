"""What the integrations need from a cache, named as Protocols.

The OpenAI wrapper, the caching proxy and the LangChain cache are typed against
:class:`RequestCache`, never against the concrete :class:`semcache.Cache`: they use its
public request-level API (``lookup`` / ``store`` / ``warmup``) and nothing else, so any
engine behind the facade (the SQLite file, PostgreSQL) serves them all.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class CachedAnswer(Protocol):
    """What a lookup returns on a hit (:class:`semcache.Hit` is one)."""

    @property
    def response(self) -> Any:
        """The stored response (JSON data)."""

    @property
    def kind(self) -> str:
        """``"exact"`` or ``"semantic"``."""

    @property
    def similarity(self) -> float:
        """1.0 for exact hits, the cosine of the semantic match otherwise."""

    @property
    def entry_id(self) -> int:
        """Id of the entry served."""

    @property
    def namespace(self) -> str:
        """Namespace of the entry served."""

    @property
    def tokens(self) -> int:
        """Tokens the stored answer cost (0 when unknown)."""


@runtime_checkable
class RequestCache(Protocol):
    """A cache the integrations can look requests up in and store answers into.

    ``key`` is exact-key material (e.g. ``semcache.keys.analyze_request(request).key``);
    the cache hashes it with the namespace. ``text`` is what the semantic tier embeds,
    ``scope`` the partition a semantic hit must come from. ``namespace=None`` means the
    cache's default namespace (:attr:`namespace`).
    """

    @property
    def namespace(self) -> str:
        """The default namespace."""

    @property
    def hash_only(self) -> bool:
        """True when the cache has no semantic tier."""

    def lookup(
        self,
        key: bytes | str,
        *,
        text: str | None = None,
        scope: str = "",
        namespace: str | None = None,
        exact_only: bool = False,
    ) -> CachedAnswer | None:
        """Exact tier by ``key``, then (with ``text``) the semantic tier of (namespace, scope)."""

    def store(
        self,
        key: bytes | str,
        response: Any,
        *,
        text: str | None = None,
        scope: str = "",
        namespace: str | None = None,
        ttl: Any = ...,
        metadata: dict[str, Any] | None = None,
        tokens: int = 0,
    ) -> int:
        """Store ``response`` (JSON data) under ``key``; returns the new entry id."""

    def warmup(self) -> None:
        """Load the embedder now, so the first request does not pay for it."""


@runtime_checkable
class ClearableCache(RequestCache, Protocol):
    """A :class:`RequestCache` that can also drop a namespace (LangChain's ``clear``)."""

    def clear(self, namespace: str | None = None) -> int:
        """Delete every entry of ``namespace`` (None: all); returns how many."""


__all__ = ["CachedAnswer", "ClearableCache", "RequestCache"]
