"""Connection strings: parsing, the schema name, redaction, and driver-error translation.

Accepted: ``postgresql://`` and ``postgres://`` URLs (scheme in any case) and libpq
``key=value`` strings (what psycopg accepts). A URL may carry ``?schema=NAME`` and
semcache's options (removed before libpq sees it).

No part of a password may reach a message, a log line or a repr, whatever the string's
shape - and a malformed string is read differently by different parsers (an unencoded
``@`` makes libpq take the password's second half for the host). So the secrets are
found the conservative way (:func:`secret_candidates`: every reading of the user-info,
``password=`` in a query or a ``key=value`` string, and each piece of them), and every
text this module lets out goes through :func:`scrub`. A URL whose host or database part
still holds an ``@`` after libpq's reading is refused before any connection (it is an
unencoded ``@`` or ``/`` in a user name or password). Parse errors of libpq keep only the
option names they quote.
"""

from __future__ import annotations

import functools
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from semcache.errors import (
    CacheConnectionError,
    CacheFileError,
    ConfigurationError,
    CorruptCacheError,
    ReadOnlyCacheError,
    SemcacheError,
)
from semcache.store.base import WriteConflict

#: The schema a cache lives in unless told otherwise.
DEFAULT_SCHEMA = "semcache"
#: libpq parameters holding secrets: never shown, scrubbed from every message.
SECRET_KEYS = frozenset({"password", "sslpassword", "oauth_client_secret",
                         "scram_client_key", "scram_server_key"})

_SCHEMES = ("postgresql://", "postgres://")
_ANY_CASE_SCHEME = re.compile(r"(postgres(?:ql)?)://", re.IGNORECASE)
_KEYWORD = re.compile(r"^\s*[a-z_]+\s*=")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # fullmatch: "$" accepts a final "\n"
_SECRET_NAMES = "|".join(sorted(SECRET_KEYS))
#: ``?password=...`` / ``&password=...`` in a URL's query (up to the next parameter).
_QUERY_SECRET = re.compile(rf"[?&](?:{_SECRET_NAMES})=([^&]*)", re.IGNORECASE)
#: ``password=value`` / ``password='quoted value'`` in a key=value string.
_KV_SECRET = re.compile(rf"\b(?:{_SECRET_NAMES})\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)",
                        re.IGNORECASE)
#: The same up to the next ``key=`` (an unquoted value with spaces is still the secret).
_KV_SECRET_TO_NEXT = re.compile(rf"\b(?:{_SECRET_NAMES})\s*=\s*(.*?)(?=\s+\w+\s*=|\Z)",
                                re.IGNORECASE | re.DOTALL)
#: The same to the end of the string (for a string libpq could not parse).
_KV_SECRET_TO_END = re.compile(rf"\b(?:{_SECRET_NAMES})\s*=\s*(.*)", re.IGNORECASE | re.DOTALL)
#: Where a parser may cut a malformed secret (each piece is a secret too).
_SEPARATORS = re.compile(r"[@:/?#&=,;\s'\"\\%\[\]]+")
#: Pieces shorter than this are not scrubbed (they would blank out every message).
_MIN_PIECE = 3
_QUOTED = re.compile(r'"([^"]*)"')
_URL_PASSWORD = re.compile(r"(://[^:/@]*):[^@/]*@")
_KV_PASSWORD = re.compile(rf"((?:{_SECRET_NAMES})\s*=\s*)(?!\*\*\*)('(?:[^'\\]|\\.)*'|\S+)",
                          re.IGNORECASE)


def _lower_scheme(text: str) -> str:
    """``POSTGRESQL://...`` as ``postgresql://...`` (libpq only knows the lower case)."""
    match = _ANY_CASE_SCHEME.match(text)
    return match.group(1).lower() + text[match.end(1):] if match else text


def is_postgres_url(text: str) -> bool:
    """True for what this engine opens: a ``postgres(ql)://`` URL or a libpq
    ``key=value`` string (``"host=/run/postgresql dbname=app"``)."""
    if _lower_scheme(text).startswith(_SCHEMES):
        return True
    if not _KEYWORD.match(text):
        return False
    try:
        conninfo_to_dict(text)
    except psycopg.Error:
        return False
    return True


def check_schema_name(schema: object) -> str:
    """The schema name, validated: lowercase letters, digits and ``_``, at most 63
    characters, not starting with a digit or ``pg_`` (reserved by PostgreSQL)."""
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema) or \
            schema.startswith("pg_"):
        raise ConfigurationError(
            "schema must be a PostgreSQL identifier of lowercase letters, digits and '_' "
            f"(at most 63, not starting with a digit or 'pg_'); got {schema!r}")
    return schema


def _userinfo_end(url: str) -> int:
    """Where libpq's reading of ``url`` puts the host: after the first ``@`` if no ``/``
    comes before it, else right after ``://``."""
    start = url.find("://") + 3
    for i in range(start, len(url)):
        if url[i] == "@":
            return i + 1
        if url[i] == "/":
            break
    return start


def secret_candidates(text: str, params: dict[str, Any] | None = None) -> frozenset[str]:
    """Every string of ``text`` (and of ``params``' secret values) that is, or may be read
    as, part of a secret: the user-info of a URL read up to its first and up to its last
    ``@``, ``password=`` values in a query or a key=value string (to the next ``&`` or
    space, and to the next ``key=``), ``PGPASSWORD``; each percent-decoded too, and cut
    into pieces where a parser might cut it."""
    found: set[str] = set()
    scheme = text.find("://")
    if scheme >= 0:
        rest = text[scheme + 3:]
        for at in {rest.find("@"), rest.rfind("@")} - {-1}:
            userinfo = rest[:at]
            if ":" in userinfo:
                found.add(userinfo.split(":", 1)[1])
        found.update(_QUERY_SECRET.findall(text))
    found.update(value.strip("'") for value in _KV_SECRET.findall(text))
    found.update(value.strip().strip("'") for value in _KV_SECRET_TO_NEXT.findall(text))
    found.update(str(v) for k, v in (params or {}).items() if k in SECRET_KEYS and v)
    if os.environ.get("PGPASSWORD"):
        found.add(os.environ["PGPASSWORD"])
    return _pieces(found)


def _pieces(found: Iterable[str]) -> frozenset[str]:
    """Each candidate, percent-decoded too, and the pieces a parser might cut it into."""
    out: set[str] = set()
    for candidate in found:
        for form in (candidate, urllib.parse.unquote(candidate)):
            if form:
                out.add(form)
                out.update(p for p in _SEPARATORS.split(form) if len(p) >= _MIN_PIECE)
    return frozenset(out)


def rough_redact(text: str) -> str:
    """Remove a password from a connection string that may not even parse (the last
    line of defence after :func:`scrub`'s candidates)."""
    return _KV_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1@", text))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret candidate (longest first) replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return rough_redact(text)


@functools.lru_cache(maxsize=1)
def _libpq_keywords() -> frozenset[str]:
    from psycopg import pq

    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def _parse_error(exc: BaseException) -> str:
    """libpq's parse error with every quoted token blanked but option names: it quotes
    the offending text (``invalid percent-encoded token: "<the password>"``)."""
    keywords = _libpq_keywords() | {"="}
    return _QUOTED.sub(lambda m: m.group(0) if m.group(1) in keywords else '"***"',
                       first_line(exc))


@dataclass
class ConnInfo:
    """A parsed connection string: the libpq parameters and what may be shown of them."""

    params: dict[str, Any] = field(repr=False)
    schema: str
    #: Secret candidates of the string it was parsed from (see :func:`scrub`).
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    #: semcache's options from the URL's query string (:data:`URL_OPTIONS`).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        return self.scrub(display_url(self.params, self.schema))

    @property
    def endpoint(self) -> str:
        return self.scrub(endpoint(self.params))

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"expected on/off; got {text!r}")


#: semcache's own options a URL may carry in its query string (taken out before libpq sees
#: the URL): ``postgresql://app@db/app?schema=chat&pool_max_size=16&ef_search=64``.
URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "pool_min_size": int, "pool_max_size": int, "pool_timeout": float, "ef_search": int,
    "exact_scan_below": int, "iterative_scan": str, "pgvector": _flag, "pipeline": _flag,
    "connect_timeout": float, "statement_timeout": float, "synchronous_commit": _flag}


def _split_options(url: str, secrets: frozenset[str],
                   ) -> tuple[str, str | None, dict[str, Any]]:
    """``url`` without semcache's query parameters; the ``schema=`` value; the options.

    The query starts where libpq's does (the first ``?`` after the user-info), and the
    parameters that are not semcache's are left byte for byte as they were."""
    if not url.startswith(_SCHEMES):
        return url, None, {}
    cut = url.find("?", _userinfo_end(url))
    if cut < 0:
        return url, None, {}
    schema: str | None = None
    options: dict[str, Any] = {}
    kept = []
    for item in url[cut + 1:].split("&"):
        key, _, raw = item.partition("=")
        if key != "schema" and key not in URL_OPTIONS:
            kept.append(item)
            continue
        value = urllib.parse.unquote(raw)
        if key == "schema":
            schema = value
            continue
        try:
            options[key] = URL_OPTIONS[key](value)
        except ValueError as exc:
            raise ConfigurationError(scrub(
                f"invalid {key}={value!r} in the PostgreSQL URL {scrub(url, secrets)!r}: "
                f"{exc}", secrets)) from None
    return url[:cut] + ("?" + "&".join(kept) if kept else ""), schema, options


def _split_schema(url: str) -> tuple[str, str | None]:
    """``url`` without semcache's query parameters, and its ``schema=`` value."""
    text, schema, _ = _split_options(_lower_scheme(url), secret_candidates(url))
    return text, schema


def with_url_options(given: dict[str, Any], defaults: dict[str, Any],
                     info: ConnInfo) -> dict[str, Any]:
    """Constructor arguments (``given``) with the URL's options filled in; an argument
    given explicitly (not its default) that the URL sets otherwise is an error."""
    merged = dict(given)
    for name, value in info.options.items():
        if given[name] != defaults[name] and given[name] != value:
            raise ConfigurationError(f"{name}={given[name]!r} conflicts with {name}={value!r} "
                                     "in the URL")
        merged[name] = value
    return merged


def _check_unambiguous(text: str) -> None:
    """Refuse a URL that libpq would read with part of the user-info as host or database:
    an ``@`` left between the user-info and the query means an unencoded ``@`` (or a ``/``
    before the ``@``) in a user name or password."""
    if not text.startswith(_SCHEMES):
        return
    start = _userinfo_end(text)
    query = text.find("?", start)
    if "@" in text[start:query if query >= 0 else len(text)]:
        raise ConfigurationError(
            "invalid PostgreSQL URL: its host or database part holds an '@' - a user name "
            "or password holding '@', '/', ':', '?' or '#' must be percent-encoded in a URL "
            "(%40 for '@', %2F for '/'), or given as a key=value string")


def _kind(text: str) -> str:
    return "PostgreSQL URL" if text.startswith(_SCHEMES) else "PostgreSQL connection string"


def _libpq_params(text: str, url: str, secrets: frozenset[str]) -> dict[str, Any]:
    """libpq's parameters of ``text``, with the ports checked (libpq only checks them when
    connecting, with a less useful message)."""
    _check_unambiguous(text)
    try:
        params = conninfo_to_dict(text)
    except psycopg.Error as exc:
        # A string libpq cannot parse has no reliable end for its password (an unquoted
        # space, a stray '='...): everything after a secret's keyword may belong to it.
        secrets = secrets | _pieces(m for m in _KV_SECRET_TO_END.findall(text))
        raise ConfigurationError(scrub(
            f"invalid {_kind(text)} {scrub(url, secrets)!r}: {_parse_error(exc)}",
            secrets)) from None
    for port in str(params.get("port") or "5432").split(","):
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(scrub(
                f"invalid {_kind(text)} {scrub(url, secrets)!r}: port must be a number "
                f"1..65535; got {port!r}", secrets))
    return params


def parse(url: str, schema: str | None = None) -> ConnInfo:
    """Parse ``url`` (URL or key=value) and settle the schema (argument, or ``?schema=``
    in the URL, or :data:`DEFAULT_SCHEMA`; both given and different is an error)."""
    if not isinstance(url, str):
        raise ConfigurationError("expected a PostgreSQL URL (postgresql://user@host:5432/db) "
                                 f"or a libpq 'key=value' string; got {type(url).__name__}")
    secrets = secret_candidates(url)
    text = _lower_scheme(url)
    if not text.startswith(_SCHEMES) and not _KEYWORD.match(text):
        raise ConfigurationError(scrub(
            "expected a PostgreSQL URL (postgresql://user@host:5432/db) or a libpq "
            f"'key=value' string; got {scrub(url, secrets)!r}", secrets))
    text, from_url, options = _split_options(text, secrets)
    params = _libpq_params(text, url, secrets)
    if schema is not None and from_url is not None and schema != from_url:
        raise ConfigurationError(
            f"schema={schema!r} conflicts with schema={from_url!r} in the URL")
    chosen = check_schema_name(schema if schema is not None else (from_url or DEFAULT_SCHEMA))
    return ConnInfo(params=params, schema=chosen, options=options,
                    secrets=secrets | secret_candidates("", params))


def display_url(params: dict[str, Any], schema: str = DEFAULT_SCHEMA) -> str:
    """The connection as a URL without its password (what messages and ``location`` show).

    A socket directory goes in ``?host=`` (a URL's host cannot hold a path); an IPv6
    address in brackets."""
    user = params.get("user", "")
    host = str(params.get("host", ""))
    port = str(params.get("port", ""))
    netloc = urllib.parse.quote(str(user), safe="") + "@" if user else ""
    query: list[tuple[str, str]] = []
    if host and "/" not in host and "," not in host:
        netloc += _bracketed(host) + (f":{port}" if port else "")
    else:
        if host:
            query.append(("host", host))
        if port:
            query.append(("port", port))
    skip = {"user", "host", "port", "dbname"} | SECRET_KEYS
    query += [(k, str(v)) for k, v in params.items() if k not in skip]
    if schema != DEFAULT_SCHEMA:
        query.append(("schema", schema))
    db = urllib.parse.quote(str(params.get("dbname", "")), safe="")
    tail = "?" + urllib.parse.urlencode(query, safe="/,") if query else ""
    return f"postgresql://{netloc}/{db}{tail}"


def endpoint(params: dict[str, Any]) -> str:
    """Where libpq will connect: ``host:port``, or the socket file, comma-joined for
    several hosts (libpq's defaults and PGHOST/PGPORT apply)."""
    hosts = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST")
                or "/var/run/postgresql").split(",")
    ports = str(params.get("port") or os.environ.get("PGPORT") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    out = []
    for host, port in zip(hosts, ports, strict=False):
        port = port or "5432"
        out.append(f"{host}/.s.PGSQL.{port}" if host.startswith("/")
                   else f"{_bracketed(host)}:{port}")
    return ", ".join(out)


def _bracketed(host: str) -> str:
    """An IPv6 address as a URL writes it (``[::1]``), any other host as it is."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def first_line(exc: BaseException) -> str:
    """The first non-empty line of a driver message (libpq's run over several lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def unreachable(info: ConnInfo, exc: BaseException | str) -> CacheConnectionError:
    """The one-line error for a server that cannot be reached."""
    reason = exc if isinstance(exc, str) else first_line(exc)
    # libpq says 'connection to server at "h" (addr), port N failed: REASON': keep REASON.
    reason = reason.rsplit(" failed: ", 1)[-1]
    return CacheConnectionError(info.scrub(
        f"cannot connect to PostgreSQL at {info.endpoint} ({info.location}): {reason}"))


#: SQLSTATE classes / codes and the semcache error each maps to.
_READ_ONLY = {"25006", "42501"}  # read-only transaction, insufficient privilege
_DISK_FULL = {"53100"}
_CORRUPT = {"XX001", "XX002"}  # data corrupted, index corrupted


def translate(exc: BaseException, info: ConnInfo) -> SemcacheError:
    """Map a driver error to the semcache error a user can act on (never the password)."""
    if isinstance(exc, SemcacheError):
        return exc
    where = f"{info.location} (schema {info.schema!r})"
    text = info.scrub(first_line(exc))
    state = getattr(getattr(exc, "diag", None), "sqlstate", None) or ""
    conn_lost = isinstance(exc, psycopg.OperationalError) and (
        state.startswith("08") or state.startswith("57P") or not state)
    if conn_lost:
        return CacheConnectionError(info.scrub(
            f"lost the connection to PostgreSQL at {info.endpoint} ({where}): {text}; "
            "the next call reconnects"))
    if state in _READ_ONLY:
        return ReadOnlyCacheError(f"cache {where} is read-only for this connection ({text})")
    if state in _DISK_FULL:
        return ReadOnlyCacheError(f"disk full on the PostgreSQL server of {where} ({text})")
    if state in _CORRUPT:
        return CorruptCacheError(f"cache {where} is corrupt ({text})")
    if state == "57014" and "statement timeout" in text:
        return CacheFileError(f"a statement on {where} ran longer than statement_timeout "
                              f"({text}); retry, or raise ?statement_timeout= in the URL")
    if state in ("40P01", "40001"):
        return WriteConflict(f"a transaction on {where} was aborted by the server to let "
                             f"another client's through ({text}); retry")
    if state in ("55P03", "57014"):
        return CacheFileError(f"write to {where} gave up waiting for another client "
                              f"({text}); retry")
    if state == "42P01":
        return CacheFileError(f"the semcache tables of {where} are gone ({text}); "
                              "reopen the cache to recreate them")
    return CacheFileError(f"PostgreSQL error on {where} ({type(exc).__name__}: {text})")



def check_seconds(name: str, value: Any, *, zero: bool) -> None:
    """A timeout in seconds: a finite number > 0 (or 0 where ``zero`` means no limit)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and (value > 0 or (zero and value == 0))
    if not ok:
        raise ConfigurationError(f"{name} must be a number of seconds > 0"
                                 f"{' (0: no limit)' if zero else ''}; got {value!r}")


def local_socket(params: dict[str, Any]) -> bool:
    """True when libpq connects through a Unix socket (no host, or a directory)."""
    if params.get("hostaddr"):
        return False
    hosts = str(params.get("host") or os.environ.get("PGHOST") or "").split(",")
    return all(not h or h.startswith("/") or h.startswith("@") for h in hosts)

__all__ = [
    "DEFAULT_SCHEMA",
    "SECRET_KEYS",
    "URL_OPTIONS",
    "ConnInfo",
    "check_schema_name",
    "check_seconds",
    "display_url",
    "endpoint",
    "first_line",
    "is_postgres_url",
    "local_socket",
    "parse",
    "rough_redact",
    "scrub",
    "secret_candidates",
    "translate",
    "unreachable",
    "with_url_options",
]
