"""The proxy's HTTP conventions, without a server: controls, tenants, SSE, configuration."""

from __future__ import annotations

import pytest

from semcache.errors import ConfigurationError, InvalidInputError, InvalidTypeError
from semcache.integrations.pipeline import Control
from semcache.integrations.proxy.config import ProxyConfig
from semcache.integrations.proxy.http import (
    SSEParser,
    api_key,
    header_controls,
    request_control,
    request_namespace,
    sse_data,
    tenant_of,
    upstream_headers,
)


def test_cache_control_directives():
    assert header_controls({"cache-control": "no-cache, no-store"}) == {
        "no_cache": True, "no_store": True}
    assert header_controls({"cache-control": 'max-age="120"'}) == {"ttl": 120}
    assert header_controls({"cache-control": "max-age=0"}) == {"no_store": True}
    assert header_controls({"cache-control": "private, must-revalidate"}) == {}
    with pytest.raises(InvalidInputError):
        header_controls({"cache-control": "max-age=soon"})


def test_body_control_wins_and_is_checked_like_put():
    control = request_control({"cache-control": "max-age=60", "x-semcache-namespace": "a"},
                              {"ttl": 5, "no_store": False})
    assert control == Control(ttl=5.0, namespace="a")
    with pytest.raises(InvalidTypeError):
        request_control({}, "no_cache")
    with pytest.raises(InvalidInputError):
        request_control({}, {"ttl": float("inf")})


def test_tenants_from_api_keys():
    bearer = {"authorization": "Bearer sk-one"}
    assert api_key(bearer) == "sk-one" and api_key({"api-key": "sk-one"}) == "sk-one"
    assert tenant_of(bearer) == tenant_of({"api-key": "sk-one"}) != tenant_of(
        {"authorization": "Bearer sk-two"})
    assert tenant_of({}) == "t-anonymous"
    assert "sk-one" not in tenant_of(bearer) and len(tenant_of(bearer)) == 26
    asked = request_namespace(bearer, Control(namespace="docs"), shared=False)
    assert asked == tenant_of(bearer) + "/docs"
    assert request_namespace(bearer, Control(namespace="docs"), shared=True) == "docs"
    assert request_namespace(bearer, Control(), shared=True) is None
    with pytest.raises(InvalidInputError):
        request_namespace(bearer, Control(namespace="x" * 240), shared=False)


def test_headers_forwarded_upstream():
    headers = [("authorization", "Bearer k"), ("host", "proxy"), ("cache-control", "no-cache"),
               ("x-semcache-namespace", "n"), ("accept-encoding", "br"), ("x-trace", "1"),
               ("connection", "keep-alive"), ("content-length", "12")]
    cached = dict(upstream_headers(headers, cached_route=True))
    assert cached == {"authorization": "Bearer k", "x-trace": "1"}
    passed = dict(upstream_headers(headers, cached_route=False))
    assert passed["cache-control"] == "no-cache" and passed["accept-encoding"] == "br"
    assert "host" not in passed and "x-semcache-namespace" not in passed


def test_sse_round_trip_across_arbitrary_splits():
    events = [{"type": "response.created", "n": 1}, {"type": "response.completed", "n": 2}]
    for named, done in ((True, False), (False, True)):
        payload = sse_data(events, named=named, done=done)
        for size in (1, 3, 7, len(payload)):
            parser = SSEParser()
            got = []
            for start in range(0, len(payload), size):
                got += parser.feed(payload[start:start + size])
            assert got == events
    crlf = b"event: x\r\ndata: {\"a\": 1}\r\n\r\ndata: [DONE]\r\n\r\n"
    assert SSEParser().feed(crlf) == [{"a": 1}]


def test_config_checks_and_masks_credentials():
    config = ProxyConfig(upstream="https://user:secret@llm.internal/v1/", cache="x.db")
    assert config.upstream_base == "https://user:secret@llm.internal/v1"
    assert config.upstream_display == "https://***@llm.internal/v1"
    assert ProxyConfig(upstream="http://h/v1", cache="x").upstream_display == "http://h/v1"
    for bad in ({"upstream": "ftp://h"}, {"upstream": "api.openai.com"},
                {"upstream": "http://h", "stream_chunk_strategy": "tokens"},
                {"upstream": "http://h", "stream_chunk_length": 0},
                {"upstream": "http://h", "timeout": 0}):
        with pytest.raises(ConfigurationError):
            ProxyConfig(cache="x", **bad)
