"""Connection strings: parsing, the schema name, redaction, and driver-error translation.

Accepted: ``postgresql://`` and ``postgres://`` URLs and libpq ``key=value`` strings (what
psycopg accepts). A URL may carry ``?schema=NAME`` (removed before libpq sees it) to pick
the cache's schema. The password never leaves this module except inside the connection
parameters handed to libpq: :func:`display_url` drops it, :func:`scrub` removes it from
any text that might echo it, and every error built here goes through both.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
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

#: The schema a cache lives in unless told otherwise.
DEFAULT_SCHEMA = "semcache"

_SCHEMES = ("postgresql://", "postgres://")
_KEYWORD = re.compile(r"^\s*[a-z_]+\s*=")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_URL_PASSWORD = re.compile(r"(://[^:/@]*):[^@/]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def is_postgres_url(text: str) -> bool:
    """True for what this engine opens: a ``postgres(ql)://`` URL or a libpq
    ``key=value`` string (``"host=/run/postgresql dbname=app"``)."""
    if text.startswith(_SCHEMES):
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
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema) or \
            schema.startswith("pg_"):
        raise ConfigurationError(
            "schema must be a PostgreSQL identifier of lowercase letters, digits and '_' "
            f"(at most 63, not starting with a digit or 'pg_'); got {schema!r}")
    return schema


def rough_redact(text: str) -> str:
    """Remove a password from a connection string that may not even parse."""
    return _KV_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1@", text))


@dataclass
class ConnInfo:
    """A parsed connection string: the libpq parameters and what may be shown of them."""

    params: dict[str, Any]
    schema: str
    password: str | None = field(default=None, repr=False)
    #: semcache's options from the URL's query string (:data:`URL_OPTIONS`).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        return display_url(self.params, self.schema)

    @property
    def endpoint(self) -> str:
        return endpoint(self.params)

    def scrub(self, text: str) -> str:
        return scrub(text, self.password)


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
    "synchronous_commit": _flag}


def _split_options(url: str) -> tuple[str, str | None, dict[str, Any]]:
    """``url`` without semcache's query parameters; the ``schema=`` value; the options."""
    if not url.startswith(_SCHEMES):
        return url, None, {}
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema: str | None = None
    options: dict[str, Any] = {}
    for key, value in query:
        if key == "schema":
            schema = value
        elif key in URL_OPTIONS:
            try:
                options[key] = URL_OPTIONS[key](value)
            except ValueError as exc:
                raise ConfigurationError(f"invalid {key}={value!r} in the PostgreSQL URL "
                                         f"{rough_redact(url)!r}: {exc}") from None
    kept = urllib.parse.urlencode([(k, v) for k, v in query
                                   if k != "schema" and k not in URL_OPTIONS], safe="/")
    return urllib.parse.urlunsplit(parts._replace(query=kept)), schema, options


def _split_schema(url: str) -> tuple[str, str | None]:
    """``url`` without semcache's query parameters, and its ``schema=`` value."""
    text, schema, _ = _split_options(url)
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


def _libpq_params(text: str, url: str) -> dict[str, Any]:
    """libpq's parameters of ``text``, with the ports checked (libpq only checks them when
    connecting, with a less useful message)."""
    try:
        params = conninfo_to_dict(text)
    except psycopg.Error as exc:
        raise ConfigurationError(
            f"invalid PostgreSQL URL {rough_redact(url)!r}: "
            f"{scrub(first_line(exc), None)}") from None
    for port in str(params.get("port") or "5432").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(
                f"invalid PostgreSQL URL {rough_redact(url)!r}: port must be a number "
                f"1..65535; got {port!r}")
    return params


def parse(url: str, schema: str | None = None) -> ConnInfo:
    """Parse ``url`` (URL or key=value) and settle the schema (argument, or ``?schema=``
    in the URL, or :data:`DEFAULT_SCHEMA`; both given and different is an error)."""
    if not isinstance(url, str) or not is_postgres_url(url):
        raise ConfigurationError(
            "expected a PostgreSQL URL (postgresql://user@host:5432/db) or a libpq "
            f"'key=value' string; got {rough_redact(str(url))!r}")
    text, from_url, options = _split_options(url)
    params = _libpq_params(text, url)
    if schema is not None and from_url is not None and schema != from_url:
        raise ConfigurationError(
            f"schema={schema!r} conflicts with schema={from_url!r} in the URL")
    chosen = check_schema_name(schema if schema is not None else (from_url or DEFAULT_SCHEMA))
    password = str(params.get("password") or os.environ.get("PGPASSWORD") or "") or None
    return ConnInfo(params=params, schema=chosen, password=password, options=options)


def display_url(params: dict[str, Any], schema: str = DEFAULT_SCHEMA) -> str:
    """The connection as a URL without its password (what messages and ``location`` show).

    A socket directory goes in ``?host=`` (a URL's host cannot hold a path)."""
    user = params.get("user", "")
    host = str(params.get("host", ""))
    port = str(params.get("port", ""))
    netloc = urllib.parse.quote(str(user), safe="") + "@" if user else ""
    query: list[tuple[str, str]] = []
    if host and "/" not in host and "," not in host:
        netloc += host + (f":{port}" if port else "")
    else:
        if host:
            query.append(("host", host))
        if port:
            query.append(("port", port))
    skip = {"user", "host", "port", "dbname", "password"}
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
        out.append(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}")
    return ", ".join(out)


def scrub(text: str, password: str | None) -> str:
    """``text`` with the password (if any) replaced, for messages that echo a server's."""
    if password:
        text = text.replace(password, "***")
    return rough_redact(text)


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
    if state in ("40P01", "55P03", "57014"):
        return CacheFileError(f"write to {where} gave up waiting for another client "
                              f"({text}); retry")
    if state == "42P01":
        return CacheFileError(f"the semcache tables of {where} are gone ({text}); "
                              "reopen the cache to recreate them")
    return CacheFileError(f"PostgreSQL error on {where} ({type(exc).__name__}: {text})")


__all__ = [
    "DEFAULT_SCHEMA",
    "URL_OPTIONS",
    "ConnInfo",
    "check_schema_name",
    "display_url",
    "endpoint",
    "first_line",
    "is_postgres_url",
    "parse",
    "rough_redact",
    "scrub",
    "translate",
    "unreachable",
    "with_url_options",
]
