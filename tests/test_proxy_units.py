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


# -- where cache calls run, one send per response, the upstream's proxy ------------------------


def test_cache_calls_run_on_the_loop_only_while_they_are_quick():
    import asyncio
    import threading

    from semcache.integrations.proxy.calls import CallSites

    sites = CallSites(budget=0.01)
    loop_thread: list[int] = []

    def where(seconds: float = 0.0) -> int:
        if seconds:
            threading.Event().wait(seconds)
        return threading.get_ident()

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        # Nothing known yet: a thread. Quick since: the loop.
        assert await sites.run("lookup", where) != loop_thread[0]
        assert sites.inline("lookup")
        assert await sites.run("lookup", where) == loop_thread[0]
        # Slow calls move the kind to threads once they are the typical ones...
        for _ in range(3):
            await sites.run("lookup", where, 0.05)
        assert not sites.inline("lookup")
        assert await sites.run("lookup", where) != loop_thread[0]
        # ...and runs that did not do the slow work (an exact hit) do not count.
        sites2 = CallSites(budget=0.01)
        await sites2.run("lookup", where, 0.05, slow=lambda _: True)
        for _ in range(5):
            await sites2.run("lookup", where, slow=lambda _: False)
        assert not sites2.inline("lookup")
        assert sites2.typical()["lookup"] >= 0.05
        # Only quick runs so far (exact hits, nothing embedded yet): the loop.
        sites3 = CallSites(budget=0.01)
        assert await sites3.run("lookup", where, slow=lambda _: False) != loop_thread[0]
        assert await sites3.run("lookup", where, slow=lambda _: False) == loop_thread[0]
        assert sites3.typical() == {}

    asyncio.run(main())


def test_postgresql_calls_always_run_in_threads():
    import asyncio
    import threading

    from semcache.integrations.proxy.calls import INLINE_BUDGET_S, call_sites_for

    assert call_sites_for("/var/cache/llm/proxy.db").budget == INLINE_BUDGET_S
    remote = call_sites_for("postgresql://semcache@db.internal:5432/llm")
    assert remote.budget == 0.0

    async def main() -> None:
        loop = threading.get_ident()
        for _ in range(3):
            assert await remote.run("lookup", threading.get_ident) != loop
            assert await remote.run("claim", threading.get_ident, slow=lambda _: False) != loop

    asyncio.run(main())


def test_a_response_written_in_pieces_leaves_in_one_send():
    import asyncio

    from semcache.integrations.proxy.protocol import CoalescingTransport

    class Recorder:
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

        def get_write_buffer_size(self) -> int:
            return 0

        def get_extra_info(self, name: str) -> str:
            return f"info:{name}"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        inner = Recorder()
        transport = CoalescingTransport(inner, loop)
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"")
        transport.write(b"ok")
        assert inner.writes == [] and transport.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        assert transport.get_extra_info("peername") == "info:peername"
        # A farewell written just before close() still goes out, before the close.
        transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        transport.close()
        assert inner.writes[-1].startswith(b"HTTP/1.1 408") and inner.closed
        await asyncio.sleep(0)
        assert len(inner.writes) == 2

    asyncio.run(main())


def test_the_upstreams_proxy_is_read_from_the_environment_once(monkeypatch):
    from semcache.integrations.proxy.upstream import environment_proxy

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                 "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert environment_proxy("https://api.openai.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://gateway.internal:3128")
    assert environment_proxy("https://api.openai.com/v1") == "http://gateway.internal:3128"
    assert environment_proxy("http://127.0.0.1:8000/v1") is None  # no HTTP_PROXY
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert environment_proxy("https://api.openai.com/v1") is None
