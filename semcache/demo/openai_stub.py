"""A local, dependency-free, OpenAI-compatible HTTP server for tests and demos.

It speaks just enough of the OpenAI REST API for the official ``openai`` SDK (and any
other OpenAI-compatible client) to work against it without a network or an API key:

* ``POST /v1/chat/completions`` - non-streaming JSON, or Server-Sent Events when the body
  has ``"stream": true`` (``data: {chunk}`` lines, then ``data: [DONE]``); a usage chunk is
  sent when ``stream_options.include_usage`` is true; ``n`` > 1 yields n choices;
* ``POST /v1/responses`` - the Responses API: a ``response`` object, or with
  ``"stream": true`` its typed events as Server-Sent Events (``event: <type>`` +
  ``data: {event}``: response.created, response.in_progress, output_item.added,
  content_part.added, output_text.delta..., output_text.done, content_part.done,
  output_item.done, response.completed);
* ``GET /v1/models`` and ``GET /v1/models/{id}``.

Answers are deterministic: by default a canned text derived from the last user message
(several sentences and two paragraphs, so stream chunking has something to chew on).
Pass ``responder=`` to choose the answer: a callable receiving the request JSON and
returning either the answer text, or a dict ``{"content": str | None, "tool_calls":
[...], "finish_reason": "stop"}`` for tool calls or truncated answers.

Everything the server receives is recorded, so tests can assert how many calls reached
"the model": ``server.requests`` (every request, as :class:`StubRequest`),
``server.chat_requests`` (the JSON bodies of chat-completions calls) and
``server.responses_requests`` (those of Responses calls).

Failure injection: ``fail_stream_after=N`` drops the connection after N content chunks
of the next streamed answers (without finishing the chunked body, so clients see a
broken stream, not a short one); ``fail_requests=N`` answers the next N chat or
Responses calls with HTTP ``fail_status`` (500 by default; 429 adds ``Retry-After``).
``latency`` (seconds before answering) and ``chunk_delay`` (between stream chunks)
simulate a slow model.

Usage::

    with StubOpenAIServer(latency=0.2) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        client.chat.completions.create(model="stub", messages=[...])
        assert len(server.chat_requests) == 1

Run ``python -m semcache.demo.openai_stub --port 8000`` to serve it from a terminal.
Only the Python standard library is used, and it binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

from semcache.demo.openai_payloads import (
    chat_chunks,
    chat_completion,
    response_events,
    response_object,
)

logger = logging.getLogger("semcache")

#: What a responder may return: the answer text, or a message dict (see module doc).
Responder = Callable[[dict[str, Any]], "str | dict[str, Any]"]

DEFAULT_MODEL = "stub-model"


@dataclass(frozen=True)
class StubRequest:
    """One HTTP request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    """Parsed JSON body (None for GET or an unparsable body)."""
    received_at: float = field(default_factory=time.time)
    peer: str = ""
    """``host:port`` of the client's connection (which requests shared one)."""


def last_user_text(request: dict[str, Any]) -> str:
    """Text of the last user message of a chat or Responses request ("" if there is none)."""
    items = request.get("messages")
    if items is None:
        items = request.get("input")
        if isinstance(items, str):
            return items
    for message in reversed(items or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    p.get("text", "")
                    for p in content
                    if isinstance(p, dict) and p.get("type") in ("text", "input_text")
                )
    return ""


def default_responder(request: dict[str, Any]) -> str:
    """Deterministic canned answer that echoes the last user message.

    It has several sentences, a paragraph break and irregular whitespace so that replays
    can be checked to reproduce the text exactly under every chunking strategy.
    """
    question = last_user_text(request).strip() or "(no question)"
    return (
        f"You asked: {question}\n\n"
        "This is a deterministic answer from the semcache stub server.  It echoes the "
        "question so that tests can tell answers apart! Is it a real model? No.\n"
        f"Model: {request.get('model', DEFAULT_MODEL)}."
    )


class _DropConnection(Exception):
    """Raised inside the handler to abandon a response midway."""


class StubOpenAIServer:
    """OpenAI-compatible server on 127.0.0.1 for tests and demos (a context manager).

    Args:
        responder: ``request_json -> str | dict``; :func:`default_responder` when omitted.
        latency: seconds to wait before answering a chat call.
        chunk_delay: seconds to wait between two streamed chunks.
        fail_stream_after: drop streamed answers after this many content chunks.
        fail_requests: answer this many chat / Responses calls with an error first.
        fail_status: HTTP status of those errors (500; 429 also sends ``Retry-After``).
        port: TCP port; 0 picks a free one.
        models: ids listed by ``GET /v1/models``.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        fail_stream_after: int | None = None,
        fail_requests: int = 0,
        fail_status: int = 500,
        port: int = 0,
        models: tuple[str, ...] = (DEFAULT_MODEL,),
    ) -> None:
        self.responder: Responder = responder or default_responder
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.fail_stream_after = fail_stream_after
        self.fail_requests = fail_requests
        self.fail_status = fail_status
        self.models = models
        #: Extra headers sent with every JSON answer (e.g. a ``Set-Cookie``, as real APIs
        #: behind a CDN send).
        self.response_headers: dict[str, str] = {}
        self.requests: list[StubRequest] = []
        self.chat_requests: list[dict[str, Any]] = []
        self.responses_requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> StubOpenAIServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"stub": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        httpd.daemon_threads = True  # keep-alive connections must not block shutdown
        self._httpd = httpd
        self._thread = threading.Thread(
            # A short poll interval makes stop() (and so every test teardown) fast.
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="semcache-stub-openai",
            daemon=True,
        )
        self._thread.start()
        logger.debug("stub OpenAI server listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StubOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- introspection ---------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (the server must be started)."""
        if self._httpd is None:
            raise RuntimeError("stub server is not running; call start() or use `with`")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)``, ending in ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def request_count(self) -> int:
        """Number of chat-completions calls received (including failed ones)."""
        with self._lock:
            return len(self.chat_requests)

    def reset(self) -> None:
        """Forget the recorded requests (failure settings stay as they are)."""
        with self._lock:
            self.requests.clear()
            self.chat_requests.clear()
            self.responses_requests.clear()

    # -- answer construction ---------------------------------------------------------

    def _record(self, req: StubRequest) -> None:
        with self._lock:
            self.requests.append(req)
            body = req.body if isinstance(req.body, dict) else {}
            if req.method == "POST" and req.path.rstrip("/").endswith("/chat/completions"):
                self.chat_requests.append(body)
            elif req.method == "POST" and req.path.rstrip("/").endswith("/responses"):
                self.responses_requests.append(body)

    def _next_id(self, prefix: str = "chatcmpl-stub") -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}-{self._counter:06d}"

    def _take_failure(self) -> bool:
        with self._lock:
            if self.fail_requests > 0:
                self.fail_requests -= 1
                return True
            return False

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The assistant message for ``request``: content, tool_calls, finish_reason."""
        result = self.responder(request)
        if isinstance(result, str):
            return {"content": result, "tool_calls": None, "finish_reason": "stop"}
        if not isinstance(result, dict):
            raise TypeError(f"responder must return str or dict, got {type(result).__name__}")
        tool_calls = result.get("tool_calls")
        default_finish = "tool_calls" if tool_calls else "stop"
        return {
            "content": result.get("content"),
            "tool_calls": tool_calls,
            "finish_reason": result.get("finish_reason", default_finish),
        }

    def completion(self, request: dict[str, Any]) -> dict[str, Any]:
        """A full ``chat.completion`` object answering ``request``."""
        return chat_completion(request, self.answer(request), self._next_id(), DEFAULT_MODEL)

    def stream_chunks(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of a streamed answer to ``request``."""
        return chat_chunks(request, self.answer(request), self._next_id(), DEFAULT_MODEL)

    def response(self, request: dict[str, Any]) -> dict[str, Any]:
        """A full Responses API ``response`` object answering ``request``."""
        return response_object(
            request, self.answer(request), self._next_id("resp_stub"), DEFAULT_MODEL
        )

    def response_events(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """The stream events of a Responses answer to ``request``."""
        return response_events(self.response(request))


class _Handler(BaseHTTPRequestHandler):
    """Request handler; :meth:`StubOpenAIServer.start` serves a subclass bound to it."""

    #: The server this handler answers for (set on the subclass made in ``start``).
    stub: StubOpenAIServer = cast("StubOpenAIServer", None)
    protocol_version = "HTTP/1.1"  # keep-alive + chunked streaming, like the real API
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # holds the body until the client's delayed ACK (~40 ms per answer on Linux).
    disable_nagle_algorithm = True
    server_version = "semcache-stub/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        logger.debug("stub: " + format, *args)

    # -- plumbing ----------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_stub_{id(body):x}")
        for name, value in {**self.stub.response_headers, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error",
               headers: dict[str, str] | None = None) -> None:
        payload = {"error": {"message": message, "type": kind, "code": None}}
        self._send_json(status, payload, headers)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()

    def _peer(self) -> str:
        host, port = self.client_address[:2]
        return f"{host}:{port}"

    # -- routes ------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0].rstrip("/")
        self.stub._record(StubRequest("GET", path, dict(self.headers.items()),
                                      peer=self._peer()))
        models = [
            {"id": m, "object": "model", "created": 0, "owned_by": "semcache-stub"}
            for m in self.stub.models
        ]
        if path == "/v1/models":
            self._send_json(200, {"object": "list", "data": models})
            return
        for model in models:
            if path == f"/v1/models/{model['id']}":
                self._send_json(200, model)
                return
        self._error(404, f"no route for GET {path}")

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.stub._record(StubRequest("POST", path, dict(self.headers.items()), body,
                                      peer=self._peer()))
        required = {"/v1/chat/completions": "messages", "/v1/responses": "input"}.get(path)
        if required is None:
            self._error(404, f"no route for POST {path}")
            return
        if not isinstance(body, dict) or required not in body or "model" not in body:
            self._error(400, f"body must be a JSON object with 'model' and '{required}'")
            return
        if self.stub._take_failure():
            status = self.stub.fail_status
            kind = "rate_limit_error" if status == 429 else "server_error"
            extra = {"Retry-After": "1"} if status == 429 else {}
            self._error(status, "injected failure (fail_requests)", kind, extra)
            return
        if self.stub.latency:
            time.sleep(self.stub.latency)
        if path == "/v1/responses":
            if body.get("stream"):
                self._stream_events(self.stub.response_events(body))
            else:
                self._send_json(200, self.stub.response(body))
        elif body.get("stream"):
            self._stream(body)
        else:
            self._send_json(200, self.stub.completion(body))

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _drop(self) -> None:
        # Close without the terminating zero-length chunk: the client sees an
        # incomplete body (a network failure), exactly like a dropped connection.
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(2)

    def _stream_events(self, events: list[dict[str, Any]]) -> None:
        """Send Responses events as ``event: <type>`` / ``data: {...}`` SSE (no [DONE])."""
        fail_after = self.stub.fail_stream_after
        self._start_stream()
        deltas = 0
        try:
            for event in events:
                if event["type"] == "response.output_text.delta":
                    if fail_after is not None and deltas >= fail_after:
                        raise _DropConnection
                    deltas += 1
                self._write_chunk(
                    f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
                )
                if self.stub.chunk_delay:
                    time.sleep(self.stub.chunk_delay)
            self._write_chunk(b"")
        except _DropConnection:
            self._drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream(self, body: dict[str, Any]) -> None:
        chunks = self.stub.stream_chunks(body)
        fail_after = self.stub.fail_stream_after
        self._start_stream()
        sent_content = 0
        try:
            for chunk in chunks:
                if _has_content(chunk):
                    if fail_after is not None and sent_content >= fail_after:
                        raise _DropConnection
                    sent_content += 1
                self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                if self.stub.chunk_delay:
                    time.sleep(self.stub.chunk_delay)
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")  # zero-length chunk: end of body
        except _DropConnection:
            self._drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing to clean up


def _has_content(chunk: dict[str, Any]) -> bool:
    """True when a chunk carries content (tests stream malformed chunks too)."""
    choices = chunk.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    delta = first.get("delta") if isinstance(first, dict) else None
    return isinstance(delta, dict) and bool(delta.get("content"))


def main(argv: list[str] | None = None) -> int:
    """Serve the stub from the command line until interrupted."""
    parser = argparse.ArgumentParser(description="OpenAI-compatible stub server (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per answer")
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="seconds per chunk")
    args = parser.parse_args(argv)
    server = StubOpenAIServer(port=args.port, latency=args.latency, chunk_delay=args.chunk_delay)
    with server:
        print(f"stub OpenAI server on {server.base_url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


__all__ = [
    "DEFAULT_MODEL",
    "Responder",
    "StubOpenAIServer",
    "StubRequest",
    "default_responder",
    "last_user_text",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
