"""Whether a result was served from the cache: :func:`cache_info`.

Every result returned through :func:`semcache.wrap` (``ChatCompletion``,
``ParsedChatCompletion``, ``Response``, replayed and recorded streams, raw responses) and
through the LangChain cache (``AIMessage``, ``Generation``, ``ChatGeneration``,
``LLMResult``) carries a :class:`CacheInfo`: served from the cache or not, the kind of
hit, the similarity, and the entry id - of the entry served, or of the entry a miss was
stored as, so an application can later report a bad answer by its id. The caching proxy
sends the same facts as ``X-Semcache*`` response headers.

How it is carried: on SDK objects, streams and LangChain objects alike, as the attribute
``_semcache_info``, outside the object's fields: pydantic keeps it out of ``model_dump``,
``==`` and ``repr``, and LangChain's serialization skips it, so a cached result compares
equal to the one stored and the caller's objects keep their fields unchanged.
The LiteLLM cache keeps the info by the call's ``litellm_call_id`` (LiteLLM builds its
responses itself and puts that id in ``_hidden_params``).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any, Literal

from semcache.integrations.base import CachedAnswer

_ATTRIBUTE = "_semcache_info"

Status = Literal["hit-exact", "hit-semantic", "miss", "bypass"]


@dataclass(frozen=True)
class CacheInfo:
    """What the cache did for one result.

    Attributes:
        hit: the result was served from the cache (no model call).
        kind: ``"exact"`` or ``"semantic"`` for a hit, None otherwise.
        similarity: cosine of the match (1.0 for exact hits), None for a miss.
        entry_id: the entry served, or the entry a miss was stored as; None when nothing
            was stored (yet: a live stream gets it once it completed).
        namespace: namespace of that entry (None when unknown).
        looked_up: False when the cache was not read (``no_cache``): a "bypass".
    """

    hit: bool
    kind: Literal["exact", "semantic"] | None = None
    similarity: float | None = None
    entry_id: int | None = None
    namespace: str | None = None
    looked_up: bool = True

    @property
    def stored(self) -> bool:
        """True for a miss whose answer was written to the cache (``entry_id`` is it)."""
        return not self.hit and self.entry_id is not None

    @property
    def status(self) -> Status:
        """The proxy's ``X-Semcache`` value: hit-exact, hit-semantic, miss or bypass."""
        if self.hit:
            return "hit-semantic" if self.kind == "semantic" else "hit-exact"
        return "miss" if self.looked_up else "bypass"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what LangChain metadata carries)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheInfo:
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        kind = data.get("kind")
        return cls(
            hit=bool(data.get("hit")),
            kind=kind if kind in ("exact", "semantic") else None,
            similarity=data.get("similarity"),
            entry_id=data.get("entry_id"),
            namespace=data.get("namespace"),
            looked_up=bool(data.get("looked_up", True)),
        )


def info_from_hit(hit: CachedAnswer) -> CacheInfo:
    """The info of a result served from ``hit``."""
    return CacheInfo(
        hit=True,
        kind="semantic" if hit.kind == "semantic" else "exact",
        similarity=float(hit.similarity),
        entry_id=int(hit.entry_id),
        namespace=hit.namespace,
    )


def miss_info(
    entry_id: int | None, namespace: str | None, *, looked_up: bool = True
) -> CacheInfo:
    """The info of a result the model answered (stored as ``entry_id``, or not stored)."""
    return CacheInfo(hit=False, entry_id=entry_id, namespace=namespace, looked_up=looked_up)


def info_headers(info: CacheInfo) -> dict[str, str]:
    """The ``X-Semcache*`` response headers describing ``info`` (lower-case names)."""
    headers: dict[str, str] = {"x-semcache": info.status}
    if info.similarity is not None:
        headers["x-semcache-similarity"] = f"{info.similarity:.4f}"
    if info.entry_id is not None:
        headers["x-semcache-entry"] = str(info.entry_id)
    return headers


def attach_info(result: Any, info: CacheInfo) -> Any:
    """Attach ``info`` to ``result`` (an SDK object or a stream); returns ``result``.

    Objects that cannot take an attribute (str, tuples...) are returned unchanged.
    """
    try:
        object.__setattr__(result, _ATTRIBUTE, info)
    except (AttributeError, TypeError):
        pass
    return result


def _from_litellm(result: Any) -> CacheInfo | None:
    """LiteLLM builds its responses and streams itself; they carry the call's
    ``litellm_call_id`` in ``_hidden_params``, under which the LiteLLM cache kept the info."""
    hidden = getattr(result, "_hidden_params", None)
    call_id = hidden.get("litellm_call_id") if isinstance(hidden, dict) else None
    integration = sys.modules.get("semcache.integrations.litellm")
    if not isinstance(call_id, str) or integration is None:
        return None
    found: CacheInfo | None = integration.info_for_call(call_id)
    return found


def cache_info(result: Any) -> CacheInfo | None:
    """Whether ``result`` was served from the cache, and how; None if semcache never saw it.

    ``result`` is anything returned through :func:`semcache.wrap` (a ``ChatCompletion``,
    ``ParsedChatCompletion``, ``Response``, a stream - replayed or live -, the object of
    ``with_raw_response``), through the LangChain cache (``AIMessage``, ``Generation``,
    ``ChatGeneration``, ``LLMResult`` / ``ChatResult`` - their first generation) or through
    LiteLLM's cache (``ModelResponse``, its streams). A live stream's ``entry_id`` appears
    once the stream completed and was stored.

    Example::

        reply = client.chat.completions.create(model=..., messages=...)
        info = semcache.cache_info(reply)
        if info and info.hit:
            print(info.kind, info.similarity, info.entry_id)
    """
    info = result.__dict__.get(_ATTRIBUTE) if hasattr(result, "__dict__") else None
    if info is None:
        info = getattr(result, _ATTRIBUTE, None)
    if isinstance(info, CacheInfo):
        return info
    info = _from_litellm(result)
    if info is not None:
        return info
    generations = getattr(result, "generations", None)
    if isinstance(generations, list) and generations:
        first = generations[0]
        if isinstance(first, list):  # LLMResult: one list of generations per prompt
            first = first[0] if first else None
        return None if first is None else cache_info(first)
    message = getattr(result, "message", None)  # a ChatGeneration: its AIMessage
    if message is not None and message is not result:
        return cache_info(message)
    return None


__all__ = [
    "CacheInfo",
    "attach_info",
    "cache_info",
    "info_from_hit",
    "info_headers",
    "miss_info",
]
