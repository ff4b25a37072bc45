"""``semcache serve``: an OpenAI-compatible caching HTTP proxy (extra ``[serve]``).

Point any OpenAI client - in any language - at the proxy instead of the API::

    semcache serve --upstream https://api.openai.com/v1 --cache /var/cache/llm.db
    curl http://127.0.0.1:8080/v1/chat/completions -H "Authorization: Bearer $KEY" ...

Modules: :mod:`.app` (Starlette app, lifespan), :mod:`.cached` (the cached endpoints),
:mod:`.state` (upstream relays, pass-through), :mod:`.http` (controls, tenants, headers,
SSE), :mod:`.metrics` (Prometheus), :mod:`.config` and :mod:`.server` (uvicorn, workers).
The request rules are :mod:`semcache.integrations.pipeline`'s, shared with ``wrap``.
See docs/integrations.md. Importing this package does not import starlette or aiohttp.
"""

from __future__ import annotations

from semcache.integrations.proxy.config import ProxyConfig

__all__ = ["ProxyConfig"]
