"""Integrations of semcache with LLM client libraries and protocols.

* :mod:`semcache.integrations.openai` - ``semcache.wrap(openai_client, cache)``;
* :mod:`semcache.integrations.proxy` - ``semcache serve``, an OpenAI-compatible caching
  HTTP proxy (extra ``[serve]``);
* :mod:`semcache.integrations.langchain` - a LangChain ``BaseCache`` (extra ``[langchain]``).
* :mod:`semcache.integrations.litellm` - ``enable(cache)``: LiteLLM's ``litellm.cache``
  (extra ``[litellm]``).

They share one set of request rules (:mod:`semcache.integrations.pipeline`), go through
the public request-level API of the cache only - named here as the
:class:`RequestCache` Protocol - and report what the cache did through
:func:`cache_info`. Each imports its client library lazily, so importing :mod:`semcache`
never requires (nor loads) ``openai``, ``starlette``, ``langchain_core`` or ``litellm``.
"""

from __future__ import annotations

from semcache.integrations.base import CachedAnswer, ClearableCache, RequestCache
from semcache.integrations.info import CacheInfo, cache_info

__all__ = ["CacheInfo", "CachedAnswer", "ClearableCache", "RequestCache", "cache_info"]
