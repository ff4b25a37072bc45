"""Settings of ``semcache serve``, passed to every worker process through the environment."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from semcache.errors import ConfigurationError
from semcache.integrations.streaming import check_stream_options

#: Environment variable holding the JSON of a :class:`ProxyConfig` (for the workers).
CONFIG_ENV = "SEMCACHE_PROXY_CONFIG"
#: prometheus-client's multiprocess directory (set for ``--workers`` > 1).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class ProxyConfig:
    """What one proxy serves, and from which cache.

    Attributes:
        upstream: base URL of the OpenAI-compatible API, as an SDK's ``base_url``
            (e.g. ``https://api.openai.com/v1``): ``/v1/X`` is forwarded to ``upstream/X``.
        cache: cache file path (or a URL the installed engines accept).
        shared: one namespace for every caller instead of one per API key.
        embedder: embedder of a cache file created by the proxy (None: the default);
            an existing file keeps the embedder it was created with.
        exact_only: no semantic lookups.
        stream_chunk_strategy / stream_chunk_length: how cached answers are split when
            replayed as a stream (None: the cache's defaults, words / 8).
        timeout: seconds to wait for the upstream (connect 10 s at most).
        dashboard: serve the dashboard at ``/`` and ``/api/stats``.
        dashboard_token_sha256: SHA-256 (hex) of the dashboard's token (None: no token);
            the token itself never reaches the workers.
        dashboard_loopback_only: answer the dashboard only for a loopback Host header
            (a loopback bind without a token: see semcache.dashboard.auth).
        show_prompts: show prompt and answer text on the dashboard (needs ``shared``).
        prices: a price file merged over the built-in table (cost estimate).
        header_timeout: seconds a client has to send a request's line and headers.
        body_timeout: seconds a request body may pause between two reads.
        max_connections: client connections a worker holds at once (None: derived from
            the file-descriptor limit when the server starts; see :mod:`.protocol`).
    """

    upstream: str
    cache: str
    shared: bool = False
    embedder: str | None = None
    exact_only: bool = False
    stream_chunk_strategy: str | None = None
    stream_chunk_length: int | None = None
    timeout: float = 600.0
    dashboard: bool = True
    dashboard_token_sha256: str | None = None
    dashboard_loopback_only: bool = True
    show_prompts: bool = False
    prices: str | None = None
    header_timeout: float = 5.0
    body_timeout: float = 30.0
    max_connections: int | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"--upstream must be an http(s) URL such as https://api.openai.com/v1, "
                f"got {self.upstream!r}"
            )
        check_stream_options(
            "words" if self.stream_chunk_strategy is None else self.stream_chunk_strategy,
            8 if self.stream_chunk_length is None else self.stream_chunk_length)
        for name in ("timeout", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not 0 < value < math.inf:
                raise ConfigurationError(f"{name} must be a number of seconds > 0, "
                                         f"got {value!r}")
        limit = self.max_connections
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ConfigurationError(f"max_connections must be an int >= 1, got {limit!r}")
        if self.show_prompts and not self.shared:
            raise ConfigurationError(
                "--show-prompts needs --shared: with one namespace per API key the "
                "dashboard shows aggregates and hashed namespace ids only")

    @property
    def upstream_base(self) -> str:
        """``upstream`` without a trailing slash."""
        return self.upstream.rstrip("/")

    @property
    def upstream_display(self) -> str:
        """``upstream`` for messages and logs: credentials in the URL are masked."""
        parts = urlsplit(self.upstream_base)
        if "@" not in parts.netloc:
            return self.upstream_base
        host = parts.netloc.rsplit("@", 1)[1]
        return parts._replace(netloc=f"***@{host}").geturl()

    def open_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``semcache.open`` (only what was chosen)."""
        return {} if self.embedder is None else {"embedder": self.embedder}

    def to_env(self) -> str:
        """JSON for :data:`CONFIG_ENV`."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ProxyConfig:
        """The configuration the parent process put in :data:`CONFIG_ENV`."""
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise ConfigurationError(f"{CONFIG_ENV} is not set (start the proxy with semcache serve)")
        return cls(**json.loads(raw))


__all__ = ["CONFIG_ENV", "MULTIPROC_ENV", "ProxyConfig"]
