"""HTTP conventions of the proxy: controls from headers, tenants, header filtering, SSE.

Request controls, the conventions people know (all optional, combinable):

* ``Cache-Control: no-cache`` (don't read the cache), ``no-store`` (don't write),
  ``max-age=N`` (entries live N seconds; ``max-age=0`` means "stale at once": not stored);
* ``X-Semcache-Namespace: NAME``;
* a ``semcache`` object in the JSON body (what the SDK's ``extra_body`` sends), with the
  keys of ``wrap``'s per-call control; it wins over the headers, and is removed before
  the upstream sees the body.

Every value goes through :func:`semcache.integrations.pipeline.parse_control`: the proxy
refuses (400) exactly what ``wrap`` and ``Cache.put`` refuse.

Tenants: unless the proxy runs ``--shared``, a request's namespace is derived from a hash
of its API key (``Authorization: Bearer ...`` or Azure's ``api-key``), so one key never
gets an answer that another key paid for; a namespace asked for by the request is a
sub-namespace of the tenant's. The key itself is never stored or logged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from semcache.errors import InvalidInputError
from semcache.integrations.pipeline import Control, check_namespace_option, parse_control

#: Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1).
HOP_BY_HOP: frozenset[str] = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
)
#: Request headers meant for the proxy, never forwarded upstream on cached routes.
PROXY_REQUEST_HEADERS: frozenset[str] = frozenset(
    {"cache-control", "x-semcache-namespace", "accept-encoding"}
)
_TENANT_DOMAIN = b"semcache-proxy-tenant\x00"


def _max_age(value: str) -> dict[str, Any]:
    text = value.strip().strip('"')
    try:
        seconds = int(text)
    except ValueError:
        raise InvalidInputError(
            f"Cache-Control max-age must be a whole number of seconds, got {value!r}"
        ) from None
    return {"no_store": True} if seconds == 0 else {"ttl": seconds}


def header_controls(headers: Mapping[str, str]) -> dict[str, Any]:
    """The control dict expressed by ``Cache-Control`` and ``X-Semcache-Namespace``."""
    out: dict[str, Any] = {}
    for directive in (headers.get("cache-control") or "").split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            out["no_cache"] = True
        elif name == "no-store":
            out["no_store"] = True
        elif name == "max-age":
            out.update(_max_age(value))
    namespace = headers.get("x-semcache-namespace")
    if namespace is not None:
        out["namespace"] = namespace
    return out


def request_control(headers: Mapping[str, str], body_control: Any) -> Control:
    """Headers and the body's ``semcache`` object merged (the body wins), then checked."""
    merged = header_controls(headers)
    if body_control is not None:
        if not isinstance(body_control, dict):
            parse_control(body_control)  # raises the same error wrap would
        merged.update(body_control)
    return parse_control(merged or None)


def api_key(headers: Mapping[str, str]) -> str | None:
    """The caller's API key (``Authorization: Bearer KEY`` or ``api-key: KEY``)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else auth.strip()
    key = headers.get("api-key")
    return key.strip() if key else None


def tenant_of(headers: Mapping[str, str]) -> str:
    """The namespace prefix of the caller: ``t-`` + 24 hex chars of a hash of its key."""
    key = api_key(headers)
    if key is None:
        return "t-anonymous"
    return "t-" + hashlib.sha256(_TENANT_DOMAIN + key.encode("utf-8")).hexdigest()[:24]


def request_namespace(headers: Mapping[str, str], control: Control, shared: bool) -> str | None:
    """The namespace of a request: the tenant's (and the asked one inside it), or, with
    ``--shared``, the asked one (None: the cache's default). Checked like ``put``'s."""
    if shared:
        return control.namespace
    tenant = tenant_of(headers)
    name = tenant if control.namespace is None else f"{tenant}/{control.namespace}"
    return check_namespace_option(name, "X-Semcache-Namespace")


def upstream_headers(headers: Iterable[tuple[str, str]], *, cached_route: bool) -> list[tuple[str, str]]:
    """Request headers to forward upstream (Authorization included)."""
    drop = HOP_BY_HOP | PROXY_REQUEST_HEADERS if cached_route else HOP_BY_HOP
    return [(k, v) for k, v in headers if k.lower() not in drop
            and not k.lower().startswith("x-semcache-")]


def client_headers(headers: Iterable[tuple[str, str]], *, decoded: bool) -> dict[str, str]:
    """Upstream response headers to relay (without encoding ones when the body was decoded)."""
    drop = HOP_BY_HOP | {"content-encoding"} if decoded else HOP_BY_HOP - {"content-length"}
    return {k: v for k, v in headers if k.lower() not in drop}


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    """An OpenAI-style error object."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None,
                                   "code": code}})


def sse_data(events: Iterable[dict[str, Any]], *, named: bool, done: bool) -> bytes:
    """Server-Sent Events as the OpenAI API sends them.

    Chat completions: ``data: {chunk}`` per chunk, then ``data: [DONE]`` (``done``).
    Responses: ``event: <type>`` and ``data: {event}`` per event (``named``), no [DONE].
    """
    parts = []
    for event in events:
        if named:
            parts.append(b"event: " + str(event.get("type", "")).encode() + b"\n")
        parts.append(b"data: " + orjson.dumps(event) + b"\n\n")
    if done:
        parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


class SSEParser:
    """Incremental parser of an SSE byte stream into the JSON of its ``data`` fields."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Any]:
        """JSON payloads of the events completed by ``data`` (``[DONE]`` skipped)."""
        self._buffer = (self._buffer + data).replace(b"\r\n", b"\n")
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        out = []
        for block in blocks:
            lines = [line[5:].lstrip(b" ") for line in block.split(b"\n")
                     if line.startswith(b"data:")]
            payload = b"\n".join(lines)
            if not payload or payload == b"[DONE]":
                continue
            try:
                out.append(orjson.loads(payload))
            except orjson.JSONDecodeError:
                continue  # not ours to judge: relayed as is, just not accumulated
        return out


__all__ = [
    "HOP_BY_HOP",
    "SSEParser",
    "api_key",
    "client_headers",
    "error_body",
    "header_controls",
    "request_control",
    "request_namespace",
    "sse_data",
    "tenant_of",
    "upstream_headers",
]
