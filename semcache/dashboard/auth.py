"""Who may see the dashboard: loopback binds, the bearer token, the Host header.

- Bound to a loopback address (the default, 127.0.0.1), the page needs no token; it is
  reachable from this machine only. The Host header must then name a loopback host too,
  so that a web page on another site cannot read the dashboard through DNS rebinding.
- Bound to any other address, a token is required (``--dashboard-token`` or
  :data:`TOKEN_ENV`); a command refuses to start without one. Requests send it as
  ``Authorization: Bearer <token>``, or - so that a browser can ask for it - as the
  password of HTTP Basic authentication (any user name).
- The token is compared in constant time (as SHA-256 digests, so neither its length nor
  its content leaks through timing), and only its digest is kept: it is never logged,
  echoed in a message, or passed to worker processes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from semcache.errors import ConfigurationError

log = logging.getLogger("semcache")

#: Environment variable read when ``--dashboard-token`` is not given.
TOKEN_ENV = "SEMCACHE_DASHBOARD_TOKEN"
#: A token shorter than this draws a warning (it could be guessed).
MIN_TOKEN_CHARS = 16
_SUGGESTION = 'e.g. python -c "import secrets; print(secrets.token_urlsafe(32))"'
_LOOPBACK_NAMES = frozenset(("localhost", "localhost.", "ip6-localhost"))
_CHALLENGE = 'Basic realm="semcache dashboard", charset="UTF-8"'


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def resolve_token(given: str | None, *, option: str = "--dashboard-token") -> str | None:
    """The token from the option, else from :data:`TOKEN_ENV` (None: no token). A token
    that is not printable ASCII without spaces (it must fit an HTTP header) is refused, a
    short one is accepted with a warning; no message ever shows it."""
    token = given if given is not None else os.environ.get(TOKEN_ENV)
    if token is None or not token.strip():
        if given is not None:
            raise ConfigurationError(f"{option} is empty")
        return None
    token = token.strip()
    where = option if given is not None else TOKEN_ENV
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigurationError(
            f"the dashboard token of {where} must be printable ASCII characters without "
            f"spaces; {_SUGGESTION}")
    if len(token) < MIN_TOKEN_CHARS:
        log.warning("semcache: the dashboard token of %s has %d characters, fewer than %d: "
                    "it could be guessed; %s", where, len(token), MIN_TOKEN_CHARS, _SUGGESTION)
    return token


def check_bind(command: str, host: str, token: str | None, hint: str = "") -> None:
    """Refuse a bind that other machines can reach when no token protects the page."""
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"{command} --host {host} can be reached from other machines: the dashboard "
            f"then needs a token (--dashboard-token, or the {TOKEN_ENV} environment "
            f"variable, which keeps it out of the process list); or bind 127.0.0.1{hint}")


@dataclass(frozen=True)
class Denied:
    """Why a request was refused: status, message, extra headers."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Gate:
    """The access rule of one dashboard: the token's digest (None: no token) and whether
    the Host header must name a loopback host (binds on loopback without a token)."""

    digest: str | None
    loopback_only: bool

    @classmethod
    def for_bind(cls, host: str, token: str | None) -> Gate:
        return cls(None if token is None else token_digest(token),
                   loopback_only=token is None and is_loopback(host))

    def check(self, headers: Mapping[str, str]) -> Denied | None:
        """None when the request (its headers, names lower-case) may see the page."""
        if self.loopback_only and not _loopback_host(headers.get("host", "")):
            return Denied(403, "this dashboard answers requests to a loopback host only "
                               "(http://127.0.0.1:PORT/)")
        if self.digest is None:
            return None
        presented = _presented_token(headers.get("authorization", ""))
        expected = bytes.fromhex(self.digest)
        given = hashlib.sha256((presented or "").encode("utf-8", "replace")).digest()
        if presented is None or not hmac.compare_digest(given, expected):
            return Denied(401, "this dashboard needs its token: Authorization: Bearer "
                               "<token> (or the token as the password of HTTP Basic auth)",
                          (("WWW-Authenticate", _CHALLENGE),
                           ("WWW-Authenticate", 'Bearer realm="semcache dashboard"')))
        return None


def _loopback_host(host: str) -> bool:
    """True when a Host header names a loopback host (any port)."""
    host = host.strip()
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return bool(name) and is_loopback(name)


def _presented_token(authorization: str) -> str | None:
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


__all__ = ["MIN_TOKEN_CHARS", "TOKEN_ENV", "Denied", "Gate", "check_bind", "is_loopback",
           "resolve_token", "token_digest"]
