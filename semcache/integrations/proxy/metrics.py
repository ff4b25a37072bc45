"""Prometheus metrics of the caching proxy (``GET /metrics``).

* ``semcache_proxy_requests_total{endpoint, result}`` - every request; ``endpoint`` is
  ``chat.completions``, ``responses`` or ``passthrough``; ``result`` is the ``X-Semcache``
  value (``hit-exact``, ``hit-semantic``, ``miss``, ``bypass``), ``error`` (400/502/504
  answered by the proxy) or ``passthrough``.
* ``semcache_proxy_hits_total{kind}``, ``semcache_proxy_misses_total``.
* ``semcache_proxy_upstream_latency_seconds{endpoint}`` - histogram; for a streamed
  answer the time to the upstream's response headers, otherwise to its whole body.
* ``semcache_proxy_lookup_latency_seconds`` - histogram of cache lookups (exact, then
  semantic with the embedding).
* ``semcache_proxy_tokens_saved_total`` - ``usage.total_tokens`` of every answer served
  from the cache.

With several workers (``semcache serve --workers N``) the server runs prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set before the workers start): any
worker answering ``/metrics`` reports the sum over all workers.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from semcache.integrations.proxy.config import MULTIPROC_ENV

_LOOKUP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                     60.0, 120.0)


class ProxyMetrics:
    """The proxy's counters and histograms, in their own registry (one per app)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("semcache_proxy_requests", "Requests handled by the proxy",
                                ["endpoint", "result"], registry=reg)
        self.hits = Counter("semcache_proxy_hits", "Answers served from the cache", ["kind"],
                            registry=reg)
        self.misses = Counter("semcache_proxy_misses", "Cache lookups that missed",
                              registry=reg)
        self.upstream_latency = Histogram(
            "semcache_proxy_upstream_latency_seconds",
            "Upstream latency (streamed: to the response headers)", ["endpoint"],
            buckets=_UPSTREAM_BUCKETS, registry=reg)
        self.lookup_latency = Histogram(
            "semcache_proxy_lookup_latency_seconds", "Cache lookup latency",
            buckets=_LOOKUP_BUCKETS, registry=reg)
        self.tokens_saved = Counter("semcache_proxy_tokens_saved",
                                    "Tokens of the answers served from the cache",
                                    registry=reg)

    def record(self, endpoint: str, result: str) -> None:
        """Count one request and, for cache results, the hit or miss."""
        self.requests.labels(endpoint=endpoint, result=result).inc()
        if result.startswith("hit-"):
            self.hits.labels(kind=result[4:]).inc()
        elif result == "miss":
            self.misses.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition (summed over workers in multiprocess mode)."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry: Any = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


__all__ = ["ProxyMetrics"]
