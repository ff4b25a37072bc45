"""Tiny local HTTP servers that speak the OpenAI embeddings and Ollama embed APIs.

They run a real ``http.server.ThreadingHTTPServer`` on ``127.0.0.1`` with an OS-chosen
port, in a daemon thread, so the code under test goes through its real HTTP client (the
``openai`` SDK, urllib). Every request is recorded; failures can be scripted.

Usage::

    with OpenAIStub() as stub:
        client = openai.OpenAI(api_key="sk-test", base_url=stub.base_url)
        stub.fail_next(429, headers={"Retry-After": "2"})
        ...
        assert stub.count("/v1/embeddings") == 2

Vectors are deterministic functions of the text (seeded from its SHA-256), so the same
text always gets the same vector and different texts get nearly orthogonal ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


@dataclass
class RecordedRequest:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or the raw bytes if it was not JSON


@dataclass
class StubResponse:
    """What a route handler (or a scripted failure) answers."""

    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RecordedRequest], StubResponse]


def text_vector(text: str, dim: int) -> np.ndarray:
    """Deterministic unit vector for ``text`` (independent of any semcache code)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vec = np.random.default_rng(seed).standard_normal(dim)
    return (vec / np.linalg.norm(vec)).astype(np.float32)


class StubServer:
    """A threaded HTTP server on 127.0.0.1:<random port> with routes and scripted failures."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[RecordedRequest] = []
        self._scripted: dict[str, deque[StubResponse]] = {}
        self._lock = threading.Lock()
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                path = self.path.split("?", 1)[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                req = RecordedRequest(self.command, path, headers, body)
                resp = stub._dispatch(req)
                payload = resp.body if isinstance(resp.body, bytes) else json.dumps(resp.body).encode()
                self.send_response(resp.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in resp.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval keeps shutdown() (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer ``method path`` with ``handler(request)``."""
        self.routes[(method.upper(), path)] = handler

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next ``times`` requests (to ``path``, default any) with ``status``."""
        if body is None:
            body = {"error": {"message": f"stub error {status}", "type": "stub_error",
                              "param": None, "code": None}}
        with self._lock:
            queue = self._scripted.setdefault(path or "*", deque())
            for _ in range(times):
                queue.append(StubResponse(status, body, dict(headers or {})))

    def count(self, path: str | None = None) -> int:
        """Requests received (to ``path``, or in total)."""
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def _dispatch(self, req: RecordedRequest) -> StubResponse:
        with self._lock:
            self.requests.append(req)
            for key in (req.path, "*"):
                queue = self._scripted.get(key)
                if queue:
                    return queue.popleft()
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            return StubResponse(404, {"error": f"no route {req.method} {req.path}"})
        try:
            return handler(req)
        except Exception as exc:  # a bug in a handler should show up as a 500, not a hang
            return StubResponse(500, {"error": f"stub handler failed: {exc!r}"})

    def start(self) -> StubServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


OPENAI_NATIVE_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


class OpenAIStub(StubServer):
    """``POST /v1/embeddings`` in OpenAI's response format (float or base64 encoding).

    Usage is one token per whitespace-separated word, so tests can predict it.
    ``base_url`` is what to pass to ``openai.OpenAI(base_url=...)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.base_url = self.url + "/v1"
        self.batch_sizes: list[int] = []
        self.route("POST", "/v1/embeddings", self._embeddings)

    def _embeddings(self, req: RecordedRequest) -> StubResponse:
        body = req.body if isinstance(req.body, dict) else {}
        model = body.get("model")
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if model not in OPENAI_NATIVE_DIMS or not isinstance(inputs, list) or not inputs:
            return StubResponse(400, {"error": {"message": f"bad request for model {model!r}",
                                                "type": "invalid_request_error",
                                                "param": None, "code": None}})
        dim = int(body.get("dimensions") or OPENAI_NATIVE_DIMS[model])
        self.batch_sizes.append(len(inputs))
        data = []
        for i, text in enumerate(inputs):
            vec = text_vector(text, dim)
            if body.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
            else:
                emb = vec.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(t.split()) for t in inputs)
        return StubResponse(200, {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })


class OllamaStub(StubServer):
    """``POST /api/embed`` like Ollama: ``{"model", "input"}`` -> ``{"embeddings": [...]}``.

    ``models`` maps the model names it "has pulled" to their dimension; other names get
    Ollama's 404 "model not found" answer.
    """

    def __init__(self, models: dict[str, int] | None = None) -> None:
        super().__init__()
        self.models = dict(models or {"nomic-embed-text": 768})
        self.route("POST", "/api/embed", self._embed)

    def _embed(self, req: RecordedRequest) -> StubResponse:
        body = req.body if isinstance(req.body, dict) else {}
        model = str(body.get("model", "")).removesuffix(":latest")
        if model not in self.models:
            return StubResponse(404, {"error": f'model "{model}" not found, try pulling it first'})
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        vectors = [text_vector(t, self.models[model]).tolist() for t in inputs]
        return StubResponse(200, {
            "model": body.get("model"),
            "embeddings": vectors,
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": sum(len(t.split()) for t in inputs),
        })
