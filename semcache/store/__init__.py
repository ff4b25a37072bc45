"""Storage engines behind one interface (:mod:`semcache.store.base`).

:func:`open_store` picks the engine from the location: a ``postgresql://`` /
``postgres://`` URL or a libpq ``key=value`` string opens the PostgreSQL engine (the
``[postgres]`` extra), anything else is a path to an SQLite file. Nothing above this
package names an engine: the cache holds a :class:`~semcache.store.base.Store`.
"""

from __future__ import annotations

import os
import re
from typing import Any

from semcache.errors import CacheNotFoundError, ConfigurationError, InvalidTypeError
from semcache.store.base import Store

_URL = re.compile(r"^(postgresql|postgres)://", re.IGNORECASE)
_LIBPQ = re.compile(r"^\s*(host|dbname|user|port|hostaddr|service)\s*=", re.IGNORECASE)


def is_server_location(location: str) -> bool:
    """True for a PostgreSQL URL or libpq connection string."""
    return bool(_URL.match(location) or _LIBPQ.match(location))


def location_text(location: Any) -> str:
    """``location`` (a str or path-like) as text; raises InvalidTypeError otherwise."""
    if not isinstance(location, (str, os.PathLike)):
        raise InvalidTypeError(
            f"path must be a str or path-like; got {type(location).__name__}")
    text = os.fspath(location)
    if not isinstance(text, str):
        raise InvalidTypeError(f"path must be text, not bytes; got {text!r}")
    return text


def open_store(location: str | os.PathLike[str], *, readonly: bool = False,
               schema: str | None = None, use_mirror: bool = True, create: bool = True,
               **options: Any) -> Store:
    """Open the engine for ``location``. ``create=False``: the cache must exist already
    (:class:`~semcache.errors.CacheNotFoundError` otherwise); ``Store.created`` says whether
    this open created it. ``use_mirror`` applies to files (a PostgreSQL cache searches in
    the server); ``options`` to PostgreSQL."""
    text = location_text(location)
    if is_server_location(text):
        if not create and not store_exists(text):
            raise CacheNotFoundError(f"no semcache cache at {display_location(text)}")
        try:
            from semcache.store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigurationError(
                f"a PostgreSQL cache needs psycopg and psycopg-pool (pip install "
                f"'semcache-sqlite[postgres]'): {exc}"
            ) from None
        # schema=None: the URL's ?schema=, else the default schema (semcache).
        return PostgresStore(text, readonly=readonly, schema=schema, **options)
    if schema is not None:
        raise ConfigurationError("schema= applies to PostgreSQL caches, not to files")
    from semcache.store.sqlite.store import open_sqlite

    return open_sqlite(text, readonly=readonly, use_mirror=use_mirror, create=create)


def store_exists(location: str) -> bool:
    """True when a cache exists at ``location``: the file, or a semcache schema on the
    server (looked up without creating anything; an unreachable server raises
    :class:`~semcache.errors.CacheConnectionError`)."""
    if not is_server_location(location):
        return os.path.exists(location)
    from semcache.store.postgres import schema_exists

    return schema_exists(location)


def display_location(location: str) -> str:
    """``location`` as messages may show it: a path, or the URL without its password."""
    if not is_server_location(location):
        return location
    try:
        from semcache.store.postgres.conninfo import parse
    except ImportError:  # no driver: nothing parses the URL, so show none of it
        return "a PostgreSQL URL (pip install 'semcache-sqlite[postgres]' to use it)"
    return parse(location).location


__all__ = ["display_location", "is_server_location", "location_text", "open_store",
           "store_exists"]
