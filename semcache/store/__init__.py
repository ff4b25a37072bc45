"""Storage engines behind one interface (:mod:`semcache.store.base`).

:func:`open_store` picks the engine from the location: a ``postgresql://`` /
``postgres://`` URL or a libpq ``key=value`` string opens the PostgreSQL engine (the
``[postgres]`` extra), anything else is a path to an SQLite file.
"""

from __future__ import annotations

import os
import re
from typing import Any

from semcache.errors import ConfigurationError, InvalidInputError, InvalidTypeError
from semcache.store.base import Store

_URL = re.compile(r"^(postgresql|postgres)://", re.IGNORECASE)
_LIBPQ = re.compile(r"^\s*(host|dbname|user|port|hostaddr|service)\s*=", re.IGNORECASE)
#: Suffixes of the files an SQLite cache consists of (removed when creating one failed).
SQLITE_FILES = ("", "-wal", "-shm", "-codes", ".lock", ".claims")


def is_server_location(location: str) -> bool:
    """True for a PostgreSQL URL or libpq connection string."""
    return bool(_URL.match(location) or _LIBPQ.match(location))


def open_store(location: str | os.PathLike[str], *, readonly: bool = False,
               schema: str | None = None, **options: Any) -> tuple[Store, bool]:
    """Open the engine for ``location``; returns ``(store, created)`` where ``created``
    says the cache did not exist before (so that a failed open can remove it)."""
    if not isinstance(location, (str, os.PathLike)):
        raise InvalidTypeError(
            f"path must be a str or path-like; got {type(location).__name__}")
    text = os.fspath(location)
    if not isinstance(text, str):
        raise InvalidTypeError(f"path must be text, not bytes; got {text!r}")
    if is_server_location(text):
        try:
            from semcache.store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigurationError(
                f"a PostgreSQL cache needs psycopg and psycopg-pool (pip install "
                f"'semcache-sqlite[postgres]'): {exc}"
            ) from None
        # schema=None: the URL's ?schema=, else the default schema (semcache).
        store: Any = PostgresStore(text, readonly=readonly, schema=schema, **options)
        return store, bool(getattr(store, "created", False))
    if schema is not None:
        raise ConfigurationError("schema= applies to PostgreSQL caches, not to files")
    return _open_sqlite(text, readonly)


def store_exists(location: str) -> bool:
    """True when a cache exists at ``location``: the file, or a semcache schema on the
    server (looked up without creating anything; an unreachable server raises
    :class:`~semcache.errors.CacheConnectionError`)."""
    if not is_server_location(location):
        return os.path.exists(location)
    from semcache.store.postgres import schema_exists

    return schema_exists(location)


def remove_store(location: str) -> None:
    """Remove the cache at ``location``, entries included: its files, or its schema on the
    server (only semcache's tables when the schema holds anything else). For a command
    that created the cache and failed to fill it."""
    if not is_server_location(location):
        _remove_files(os.path.realpath(location))
        return
    from semcache.store.postgres import drop_cache

    drop_cache(location)


def display_location(location: str) -> str:
    """``location`` as messages may show it: a path, or the URL without its password."""
    if not is_server_location(location):
        return location
    try:
        from semcache.store.postgres.conninfo import parse
    except ImportError:  # no driver: nothing parses the URL, so show none of it
        return "a PostgreSQL URL (pip install 'semcache-sqlite[postgres]' to use it)"
    return parse(location).location


def _open_sqlite(path: str, readonly: bool) -> tuple[Store, bool]:
    from semcache.store.sqlite import SQLiteStore

    if not path or path == ":memory:" or path.startswith("file:"):
        raise InvalidInputError(
            f"path must name a file (semcache is persistent); got {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        from semcache.errors import CacheFileError

        raise CacheFileError(f"cannot create cache file {path!r}: its directory "
                             f"{directory!r} does not exist")
    created = not os.path.exists(path)
    try:
        store = SQLiteStore(path, readonly=readonly)
        # Created by this open: the file did not exist and this open migrated it (two
        # first opens at once both find no file; one of them creates the cache).
        return store, created and store.created
    except BaseException:
        if created and not readonly:
            _remove_files(os.path.realpath(path))
        raise


def _remove_files(path: str) -> None:
    for suffix in SQLITE_FILES:
        try:
            os.remove(path + suffix)
        except OSError:
            pass


def remove_new_store(store: Store) -> None:
    """Remove a cache that this process just created and failed to set up."""
    path = getattr(store, "path", None)
    if isinstance(path, str) and not is_server_location(path):
        _remove_files(path)
    else:
        drop = getattr(store, "drop", None)
        if callable(drop):
            drop()


__all__ = ["SQLITE_FILES", "display_location", "is_server_location", "open_store",
           "remove_new_store", "remove_store", "store_exists"]
