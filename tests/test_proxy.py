"""semcache serve: a real proxy process in front of the local OpenAI stub server.

Clients are the real ``openai`` SDK (sync, async, streaming, Responses) and plain httpx.
Each test uses its own API key, hence its own tenant namespace, so tests sharing the
module's proxy never see each other's entries. Upstream calls are counted per key.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import openai
import pytest

import semcache
from semcache.demo.openai_stub import StubOpenAIServer, default_responder
from tests.proxy_helpers import ProxyProcess, free_port

QUESTION = "What is the capital city of France?"
PARAPHRASE = "what is the capital city of france"
UNRELATED = "How tall is Mount Everest?"


@pytest.fixture(scope="module")
def stub():
    with StubOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("proxy") / "proxy.db"
    # The hashing embedder is rebuilt from the file by the proxy process (no model to load).
    semcache.open(path, embedder="hashing", similarity_threshold=0.75).close()
    return path


@pytest.fixture(scope="module")
def proxy(stub, db, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "proxy.log"
    with ProxyProcess(stub.base_url, db, "--log-level", "debug", log_path=log) as process:
        yield process


@pytest.fixture(autouse=True)
def reset_stub(stub):
    yield
    stub.fail_requests, stub.fail_status, stub.fail_stream_after = 0, 500, None
    stub.chunk_delay, stub.latency, stub.responder = 0.0, 0.0, default_responder
    stub.response_headers = {}


@pytest.fixture
def key():
    return f"sk-test-{uuid.uuid4().hex}"


@pytest.fixture
def client(proxy, key):
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)


def header(request, name):
    """A header the stub received (names compared case-insensitively)."""
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), None)


def calls(stub, key, path="/v1/chat/completions"):
    """Requests of ``key`` that reached the stub on ``path``."""
    return sum(1 for r in stub.requests
               if r.path == path and header(r, "authorization") == f"Bearer {key}")


def chat(text=QUESTION, **extra):
    return {"model": "gpt-test", "messages": [{"role": "user", "content": text}], **extra}


def post(proxy, key, body, path="/v1/chat/completions", **headers):
    return httpx.post(proxy.url + path, json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **headers})


# -- the SDK through the proxy ---------------------------------------------------------------


def test_sdk_exact_and_semantic_hits(client, stub, key):
    first = client.chat.completions.with_raw_response.create(**chat())
    assert first.headers["x-semcache"] == "miss"
    entry = first.headers["x-semcache-entry"]
    exact = client.chat.completions.with_raw_response.create(**chat())
    assert exact.headers["x-semcache"] == "hit-exact"
    assert exact.headers["x-semcache-similarity"] == "1.0000"
    assert exact.headers["x-semcache-entry"] == entry
    semantic = client.chat.completions.with_raw_response.create(**chat(PARAPHRASE))
    assert semantic.headers["x-semcache"] == "hit-semantic"
    assert 0.75 <= float(semantic.headers["x-semcache-similarity"]) < 1
    assert exact.parse() == first.parse() == semantic.parse()
    assert calls(stub, key) == 1
    other = client.chat.completions.create(**chat(UNRELATED))
    assert UNRELATED in other.choices[0].message.content and calls(stub, key) == 2


def test_sdk_streaming_miss_relayed_then_replayed(client, stub, key):
    options = {"stream_options": {"include_usage": True}}
    live = list(client.chat.completions.create(**chat(stream=True, **options)))
    replay = list(client.chat.completions.create(**chat(stream=True, **options)))
    text = "".join(c.choices[0].delta.content or "" for c in live if c.choices)
    assert text.startswith("You asked: " + QUESTION)
    assert "".join(c.choices[0].delta.content or "" for c in replay if c.choices) == text
    assert replay[-1].usage == live[-1].usage and replay[-1].choices == []
    assert replay[0].id == live[0].id
    assert calls(stub, key) == 1
    whole = client.chat.completions.create(**chat())  # the streamed answer, stored whole
    assert whole.choices[0].message.content == text and calls(stub, key) == 1


def test_sse_replay_is_what_the_upstream_sends(proxy, stub, key):
    def sse(response):
        return [block for block in response.text.split("\n\n") if block]

    live = post(proxy, key, chat(stream=True))
    replay = post(proxy, key, chat(stream=True))
    assert replay.headers["x-semcache"] == "hit-exact"
    assert replay.headers["content-type"].startswith("text/event-stream")
    for blocks in (sse(live), sse(replay)):
        assert blocks[-1] == "data: [DONE]"
        assert all(b.startswith("data: {") for b in blocks[:-1])
    chunks = [json.loads(b[6:]) for b in sse(replay)[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    live_responses = post(proxy, key, {"model": "m", "input": QUESTION, "stream": True},
                          "/v1/responses")
    replay_responses = post(proxy, key, {"model": "m", "input": QUESTION, "stream": True},
                            "/v1/responses")
    assert replay_responses.headers["x-semcache"] == "hit-exact"
    for response in (live_responses, replay_responses):
        blocks = sse(response)
        kinds = [b.split("\n")[0] for b in blocks]
        assert kinds[0] == "event: response.created" and kinds[-1] == "event: response.completed"
        assert all(b.split("\n")[1].startswith("data: {") for b in blocks)


def test_sdk_responses_api(client, stub, key):
    first = client.responses.create(model="gpt-test", input=QUESTION, instructions="Be terse.")
    again = client.responses.create(model="gpt-test", input=PARAPHRASE, instructions="Be terse.")
    assert again.output_text == first.output_text
    events = list(client.responses.create(model="gpt-test", input=QUESTION,
                                          instructions="Be terse.", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        first.output_text)
    assert calls(stub, key, "/v1/responses") == 1
    client.responses.create(model="gpt-test", input=QUESTION, instructions="Be verbose.")
    assert calls(stub, key, "/v1/responses") == 2
    live = list(client.responses.create(model="gpt-test", input=UNRELATED, stream=True))
    assert live[-1].response.output_text.startswith("You asked")
    client.responses.create(model="gpt-test", input=UNRELATED)
    assert calls(stub, key, "/v1/responses") == 3


async def test_async_sdk(proxy, stub, key):
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
    try:
        first = await client.chat.completions.create(**chat())
        second = await client.chat.completions.create(**chat(PARAPHRASE))
        assert second.choices[0].message.content == first.choices[0].message.content
        stream = await client.chat.completions.create(**chat(stream=True))
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert text == first.choices[0].message.content
        response = await client.responses.create(model="gpt-test", input=QUESTION)
        cached = await client.responses.create(model="gpt-test", input=QUESTION)
        assert cached.output_text == response.output_text
        assert calls(stub, key) == 1 and calls(stub, key, "/v1/responses") == 1
    finally:
        await client.close()


# -- pass-through and errors ------------------------------------------------------------------


def test_everything_else_passes_through(proxy, stub, key):
    direct = httpx.get(stub.base_url + "/models")
    proxied = httpx.get(proxy.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert (proxied.status_code, proxied.json()) == (200, direct.json())
    assert "x-semcache" not in proxied.headers
    missing = post(proxy, key, {"input": "x"}, "/v1/embeddings")
    assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]
    one = httpx.get(proxy.url + "/v1/models/stub-model", params={"q": "1"})
    assert one.json()["id"] == "stub-model"
    assert any(r.path == "/v1/models/stub-model" for r in stub.requests)


def test_upstream_down_is_a_clear_502(db, tmp_path, key):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with ProxyProcess(dead, db, log_path=tmp_path / "dead.log") as process:
        response = post(process, key, chat())
        streamed = post(process, key, chat(stream=True))
        models = httpx.get(process.url + "/v1/models")
    for r in (response, streamed, models):
        assert r.status_code == 502
        error = r.json()["error"]
        assert error["code"] == "upstream_unreachable" and dead in error["message"]


@pytest.mark.parametrize("status", [429, 500])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_relayed_never_cached(proxy, stub, key, status, stream):
    stub.fail_requests, stub.fail_status = 1, status
    failed = post(proxy, key, chat(stream=stream))
    assert failed.status_code == status
    assert failed.json()["error"]["message"] == "injected failure (fail_requests)"
    if status == 429:
        assert failed.headers["retry-after"] == "1"
    ok = post(proxy, key, chat(stream=stream))
    assert ok.status_code == 200 and ok.headers["x-semcache"] == "miss"
    assert post(proxy, key, chat()).headers["x-semcache"] == "hit-exact"
    assert calls(stub, key) == 2


def test_client_disconnect_mid_stream_stores_nothing(proxy, stub, key):
    stub.chunk_delay = 0.05  # ~40 chunks: a two-second answer
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=chat(stream=True),
                      headers={"Authorization": f"Bearer {key}"}, timeout=30) as response:
        received = b""
        for part in response.iter_bytes():
            received += part
            if received.count(b"data: ") >= 3:
                break  # leaving the block closes the connection midway
    time.sleep(3)  # longer than the whole answer: a store would have happened by now
    stub.chunk_delay = 0.0
    again = post(proxy, key, chat())
    assert again.headers["x-semcache"] == "miss" and calls(stub, key) == 2


def test_upstream_breaking_off_mid_stream_stores_nothing(client, stub, key):
    stub.fail_stream_after = 3
    with pytest.raises(openai.APIConnectionError):
        list(client.chat.completions.create(**chat(stream=True)))
    stub.fail_stream_after = None
    assert client.chat.completions.with_raw_response.create(**chat()).headers[
        "x-semcache"] == "miss"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_body_that_is_not_a_json_object_is_400(proxy, stub, key, body):
    response = httpx.post(proxy.url + "/v1/chat/completions", content=body,
                          headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert calls(stub, key) == 0


# -- controls and tenants ---------------------------------------------------------------------


def test_cache_control_headers(proxy, stub, key):
    assert post(proxy, key, chat(), **{"Cache-Control": "no-store"}).headers[
        "x-semcache"] == "miss"
    assert post(proxy, key, chat()).headers["x-semcache"] == "miss"  # nothing was stored
    refreshed = post(proxy, key, chat(), **{"Cache-Control": "no-cache"})
    assert refreshed.headers["x-semcache"] == "bypass" and "x-semcache-entry" in refreshed.headers
    hit = post(proxy, key, chat())
    assert hit.headers["x-semcache-entry"] == refreshed.headers["x-semcache-entry"]
    short = post(proxy, key, chat(UNRELATED), **{"Cache-Control": "max-age=1"})
    assert short.headers["x-semcache"] == "miss"
    assert post(proxy, key, chat(UNRELATED)).headers["x-semcache"] == "hit-exact"
    time.sleep(1.3)
    assert post(proxy, key, chat(UNRELATED)).headers["x-semcache"] == "miss"
    assert calls(stub, key) == 5


def test_namespace_header_and_body_controls(proxy, stub, key):
    post(proxy, key, chat(), **{"X-Semcache-Namespace": "team-a"})
    assert post(proxy, key, chat(), **{"X-Semcache-Namespace": "team-a"}).headers[
        "x-semcache"] == "hit-exact"
    assert post(proxy, key, chat()).headers["x-semcache"] == "miss"  # another namespace
    body = chat(semcache={"namespace": "team-a", "no_store": True})
    assert post(proxy, key, body).headers["x-semcache"] == "hit-exact"
    post(proxy, key, chat(UNRELATED, semcache={"no_store": True}),
         **{"Cache-Control": "no-cache", "X-Semcache-Namespace": "team-b", "X-Trace": "t1"})
    assert all("semcache" not in r.body for r in stub.requests if isinstance(r.body, dict))
    sent = stub.requests[-1]
    assert sent.body == chat(UNRELATED)  # the control object removed, the rest as sent
    assert header(sent, "cache-control") is None and header(sent, "x-semcache-namespace") is None
    assert header(sent, "x-trace") == "t1"  # other headers are forwarded


@pytest.mark.parametrize(
    "control, headers",
    [
        ({"ttl": -1}, {}),
        ({"ttl": "60"}, {}),
        ({"namespace": "x" * 300}, {}),
        ({"bogus": True}, {}),
        ("no_cache", {}),
        (None, {"Cache-Control": "max-age=soon"}),
        (None, {"Cache-Control": "max-age=-5"}),
        (None, {"X-Semcache-Namespace": "x" * 250}),  # too long once inside the tenant's
    ],
)
def test_bad_controls_are_400_before_the_upstream(proxy, stub, key, control, headers):
    body = chat() if control is None else chat(semcache=control)
    response = post(proxy, key, body, **headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_semcache_control"
    assert calls(stub, key) == 0


def test_tenants_are_isolated_by_api_key(proxy, stub, key):
    other = f"sk-test-{uuid.uuid4().hex}"
    post(proxy, key, chat())
    assert post(proxy, other, chat()).headers["x-semcache"] == "miss"
    assert post(proxy, other, chat(PARAPHRASE)).headers["x-semcache"] == "hit-semantic"
    assert post(proxy, key, chat()).headers["x-semcache"] == "hit-exact"
    azure = httpx.post(proxy.url + "/v1/chat/completions", json=chat(), headers={"api-key": key})
    assert azure.headers["x-semcache"] == "hit-exact"  # the same key, Azure-style
    assert calls(stub, key) == 1 and calls(stub, other) == 1


def test_concurrent_identical_misses_make_one_upstream_call(proxy, stub, key):
    """Coalescing through the proxy (its claim runs on the event loop now): eight identical
    requests at once reach the upstream once; the others wait for that answer and are
    served it from the cache."""
    stub.latency = 0.5
    body = chat(f"coalesce {uuid.uuid4()}")
    results: list[httpx.Response] = []

    def ask() -> None:
        results.append(post(proxy, key, body))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls(stub, key) == 1
    statuses = sorted(r.headers["x-semcache"] for r in results)
    assert statuses == ["hit-exact"] * 7 + ["miss"]
    assert len({r.json()["choices"][0]["message"]["content"] for r in results}) == 1


def test_the_upstream_connection_is_kept_alive_and_reused(proxy, stub, key):
    """Sequential misses (and a passthrough) ride one pooled upstream connection: no new
    TCP connection - nor TLS handshake, with a real API - per request."""
    for _ in range(5):
        assert post(proxy, key, chat(f"reuse {uuid.uuid4()}")).headers["x-semcache"] == "miss"
    httpx.get(proxy.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    peers = [r.peer for r in stub.requests
             if header(r, "authorization") == f"Bearer {key}"]
    assert len(peers) == 6 and len(set(peers)) == 1, peers


def test_hits_are_answered_while_a_store_waits_for_the_write_lock(proxy, stub, db, key):
    """A store waits for the file's write lock, which another process may hold for long (an
    import, a vacuum): it waits in a worker thread, so the worker's event loop keeps
    answering hits meanwhile (a store run on the loop froze every request of the worker)."""
    import fcntl

    for _ in range(8):  # stores of this worker are quick and many: nothing would move them
        post(proxy, key, chat(f"warm {uuid.uuid4()}"))
    stored = chat(f"stored {uuid.uuid4()}")
    assert post(proxy, key, stored).headers["x-semcache"] == "miss"
    done: list[httpx.Response] = []
    with open(f"{db}.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # what a long write of another process holds
        try:
            miss = threading.Thread(target=lambda: done.append(
                post(proxy, key, chat(f"waits {uuid.uuid4()}"))))
            miss.start()
            deadline = time.monotonic() + 10
            while calls(stub, key) < 10 and time.monotonic() < deadline:
                time.sleep(0.01)  # the miss got its answer and is storing it now
            time.sleep(0.2)
            started = time.monotonic()
            hit = post(proxy, key, stored)
            waited = time.monotonic() - started
            assert hit.headers["x-semcache"] == "hit-exact"
            assert waited < 1.0 and not done
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    miss.join(30)
    assert done and done[0].headers["x-semcache"] == "miss" and "x-semcache-entry" in done[0].headers


def test_upstream_cookies_never_reach_another_tenant(proxy, stub, key):
    """A ``Set-Cookie`` the upstream sends one tenant (a CDN's session cookie, say) is
    relayed to that tenant's client only: the proxy keeps no cookie jar, so no later
    request - of any tenant - carries it upstream."""
    stub.response_headers = {"Set-Cookie": "cdn_session=tenant-a-secret; Path=/"}
    first = post(proxy, key, chat(f"cookie {uuid.uuid4()}"))
    assert first.headers["x-semcache"] == "miss"
    assert "tenant-a-secret" in first.headers.get("set-cookie", "")
    stub.response_headers = {}
    other = f"sk-test-{uuid.uuid4().hex}"
    for who in (other, key):
        post(proxy, who, chat(f"cookie {uuid.uuid4()}"), **{"Cache-Control": "no-cache"})
        post(proxy, who, chat(f"cookie {uuid.uuid4()}"))
    seen = [header(r, "cookie") for r in stub.requests
            if header(r, "authorization") in (f"Bearer {key}", f"Bearer {other}")]
    assert len(seen) == 5 and not any(seen), seen


def test_authorization_never_stored_nor_logged(proxy, stub, db, key):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(**chat())
    list(client.chat.completions.create(**chat(UNRELATED, stream=True)))
    client.responses.create(model="gpt-test", input=QUESTION)
    assert header(stub.requests[-1], "authorization") == f"Bearer {key}"  # forwarded
    secret = key.encode()
    for path in (db, f"{db}-wal", f"{db}-codes"):
        try:
            data = open(path, "rb").read()
        except FileNotFoundError:
            continue
        assert secret not in data and key[8:].encode() not in data
    log = proxy.log()
    assert "POST /v1/chat/completions" in log  # the log is real (debug level) ...
    assert key not in log and key[8:] not in log  # ... and holds no key


def test_healthz_and_metrics(proxy, key):
    post(proxy, key, chat())
    post(proxy, key, chat())
    assert httpx.get(proxy.url + "/healthz").json() == {"status": "ok"}
    text = httpx.get(proxy.url + "/metrics").text
    for line in ('semcache_proxy_requests_total{endpoint="chat.completions",result="miss"}',
                 'semcache_proxy_hits_total{kind="exact"}',
                 "semcache_proxy_misses_total",
                 "semcache_proxy_tokens_saved_total",
                 'semcache_proxy_upstream_latency_seconds_bucket{endpoint="chat.completions"',
                 "semcache_proxy_lookup_latency_seconds_count"):
        assert line in text, line
    saved = next(float(x.split()[-1]) for x in text.splitlines()
                 if x.startswith("semcache_proxy_tokens_saved_total"))
    assert saved > 0


def test_wrap_and_proxy_share_entries(stub, tmp_path, key):
    path = tmp_path / "shared.db"
    cache = semcache.open(path, embedder="hashing", similarity_threshold=0.75)
    try:
        sdk = openai.OpenAI(base_url=stub.base_url, api_key=key, max_retries=0)
        stored = semcache.wrap(sdk, cache).chat.completions.create(**chat())
        with ProxyProcess(stub.base_url, path, "--shared", log_path=tmp_path / "p.log") as p:
            hit = post(p, key, chat())
        assert hit.headers["x-semcache"] == "hit-exact"
        assert hit.headers["x-semcache-entry"] == str(semcache.cache_info(stored).entry_id)
        assert hit.json()["choices"] == stored.model_dump(mode="json", exclude_unset=True)[
            "choices"]
        assert calls(stub, key) == 1
    finally:
        cache.close()


def test_two_workers_share_one_file(stub, tmp_path):
    path = tmp_path / "workers.db"
    semcache.open(path, embedder="hashing", similarity_threshold=0.75).close()
    with ProxyProcess(stub.base_url, path, "--shared", log_path=tmp_path / "w.log",
                      workers=2) as process:
        assert len(process.children()) >= 2
        keys = [f"sk-{i}" for i in range(16)]
        post(process, keys[0], chat())  # stored by one worker ...
        results: list[str] = []

        def ask(key):
            with httpx.Client(timeout=30) as http:  # a connection of its own
                results.append(http.post(process.url + "/v1/chat/completions", json=chat(),
                               headers={"Authorization": f"Bearer {key}"}).headers["x-semcache"])

        threads = [threading.Thread(target=ask, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == ["hit-exact"] * len(keys)  # ... hit through both
        text = httpx.get(process.url + "/metrics").text  # summed over the workers
        hits = next(float(x.split()[-1]) for x in text.splitlines()
                    if x.startswith('semcache_proxy_hits_total{kind="exact"}'))
        assert hits == len(keys)
        # Keep-alive hits stay far from the 40 ms that Nagle's algorithm + delayed ACKs
        # cost per response when the workers' sockets lacked TCP_NODELAY.
        with httpx.Client(timeout=30) as http:
            times = []
            for _ in range(21):
                started = time.perf_counter()
                http.post(process.url + "/v1/chat/completions", json=chat(),
                          headers={"Authorization": "Bearer sk-0"})
                times.append(time.perf_counter() - started)
        assert sorted(times)[10] < 0.025
    assert sum(calls(stub, k) for k in keys) == 1
