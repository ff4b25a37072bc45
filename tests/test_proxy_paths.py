"""Path escapes through ``semcache serve``: only paths under the upstream's base are forwarded.

A real proxy process in front of a recording upstream at ``http://127.0.0.1:P/tenant-a/v1``;
the attacks are sent byte for byte (``http.client`` does not normalize paths, unlike httpx).
Whatever would leave ``/tenant-a/v1/`` under any reading of the path (decoded dot segments,
encoded slashes, backslashes, mixed case, double encoding) is answered 400 and reaches no
upstream; everything that reached it decodes, any number of times, to a path inside the base.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import semcache
from semcache.integrations.proxy.paths import UnsafePathError, upstream_path
from tests.http_stubs import RecordedRequest, StubResponse, StubServer
from tests.proxy_helpers import ProxyProcess

BASE = "/tenant-a/v1"

ESCAPES = [
    "/v1/%2e%2e/%2e%2e/tenant-b/v1/secrets",
    "/v1/%2E%2E/%2E%2E/admin?x=1",
    "/v1/%2e%2E/%2E%2e/admin",
    "/v1/../../admin",
    "/v1/models/../../../admin",
    "/v1/./../admin",
    "/v1/.%2e/.%2e/admin",
    "/v1/%2e./%2e./admin",
    "/v1/..%2f..%2fadmin",
    "/v1/..%2F..%2Fadmin",
    "/v1/models%2f..%2f..%2f..%2fadmin",
    "/v1/..\\..\\admin",
    "/v1/..%5c..%5cadmin",
    "/v1/%5C..%5C..%5Cadmin",
    "/v1/%252e%252e/%252e%252e/admin",
    "/v1/%252E%252E%252F%252E%252E%252Fadmin",
    "/v1/%25%32%65%25%32%65/%25%32%65%25%32%65/admin",
    "/v1/%25252e%25252e/%25252e%25252e/admin",
    "/v1/..;/..;/admin",
    "/v1/a//..//..//admin",
    "/v1/%c0%ae%c0%ae/%c0%ae%c0%ae/admin",
    "/v1/models/%00/../../../admin",
    "/v1/%2e%2e",
    "/v1/..",
]


def _climbs_out(path: str) -> bool:
    """True when ``path`` (as an upstream might read it) is not under BASE."""
    for _ in range(8):
        text = path.replace("\\", "/")
        parts = [p.split(";", 1)[0] for p in text.split("/") if p]
        stack: list[str] = []
        for part in parts:
            if part == "..":
                if not stack:
                    return True
                stack.pop()
            elif part != ".":
                stack.append(part)
        if "/" + "/".join(stack[:2]) != BASE:
            return True
        decoded = unquote(path)
        if decoded == path:
            return False
        path = decoded
    return True


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubServer]:
    with StubServer() as server:
        models = {"object": "list", "data": [{"id": "m", "object": "model"}]}
        server.route("GET", f"{BASE}/models", lambda r: StubResponse(200, models))
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: StubServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    root = tmp_path_factory.mktemp("paths")
    semcache.open(root / "c.db", embedder="hashing").close()
    with ProxyProcess(upstream.url + BASE, root / "c.db", log_path=root / "proxy.log") as p:
        yield p


def _send(proxy: ProxyProcess, method: str, target: str, body: bytes | None = None,
          ) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        headers = {"Authorization": "Bearer sk-paths"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _paths(requests: list[RecordedRequest]) -> list[str]:
    return [r.path for r in requests]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_escapes_are_refused_and_reach_no_upstream(proxy: ProxyProcess, upstream: StubServer,
                                                   method: str) -> None:
    before = len(upstream.requests)
    for target in ESCAPES:
        status, body = _send(proxy, method, target, b"{}" if method == "POST" else None)
        assert status == 400, (target, status, body)
        assert json.loads(body)["error"]["code"] == "invalid_path"
    assert _paths(upstream.requests[before:]) == []


def test_what_reaches_the_upstream_stays_under_its_base(proxy: ProxyProcess,
                                                        upstream: StubServer) -> None:
    before = len(upstream.requests)
    assert _send(proxy, "GET", "/v1/models")[0] == 200
    assert _send(proxy, "GET", "/v1/files/../models")[0] == 200  # resolved inside the base
    assert _send(proxy, "GET", "/v1//models/")[0] == 404  # the stub knows /models only
    _send(proxy, "GET", "/v1/models/a%20b%3Fc%23d")
    _send(proxy, "GET", "/v1/models/%252e%252e")  # a literal '%2e%2e' after one decoding
    _send(proxy, "GET", "/v1/models/x%2Fy")
    seen = _paths(upstream.requests[before:])
    assert seen == [f"{BASE}/models", f"{BASE}/models", f"{BASE}/models/",
                    f"{BASE}/models/a%20b%3Fc%23d", f"{BASE}/models/%252e%252e",
                    f"{BASE}/models/x/y"]
    assert not [p for p in seen if _climbs_out(p)]


def test_cached_routes_still_work_and_a_chat_cannot_be_redirected(
        proxy: ProxyProcess, upstream: StubServer) -> None:
    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    before = len(upstream.requests)
    status, _ = _send(proxy, "POST", "/v1/%2e%2e/%2e%2e/tenant-b/v1/chat/completions", chat)
    assert status == 400
    _send(proxy, "POST", "/v1/chat/completions", chat)
    assert _paths(upstream.requests[before:]) == [f"{BASE}/chat/completions"]


@pytest.mark.parametrize("target", ESCAPES)
def test_upstream_path_refuses_every_escape(target: str) -> None:
    with pytest.raises(UnsafePathError):
        upstream_path(target.split("?", 1)[0])


_TOKENS = ["..", ".", "%2e", "%2E", "%2e%2e", ".%2e", "%252e", "%25", "%2f", "%2F", "%5c",
           "\\", "/", "//", ";", "a", "models", "%c0%ae", "%00", "%20", "?", "#"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=12))
def test_no_forwarded_path_leaves_the_base(tokens: list[str]) -> None:
    """Whatever the path, what is forwarded (if anything) stays under the base under any
    number of decodings, with backslashes read as slashes."""
    raw = "/v1/" + "".join(tokens)
    try:
        tail = upstream_path(raw)
    except UnsafePathError:
        return
    assert not re.search(r"[\\\x00-\x1f]", tail)
    assert not _climbs_out(BASE + tail), (raw, tail)

