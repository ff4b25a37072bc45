"""What the ``semcache`` commands share: their errors and how they open a cache."""

from __future__ import annotations

import json
import os
from typing import Any

from semcache.errors import CacheFileError, NotASemcacheFileError, SemcacheError


class CLIError(SemcacheError):
    """A command failed in a way the user can fix (message printed, exit status 1)."""


class UsageError(CLIError):
    """The command line itself is wrong (message printed, exit status 2)."""


def check_cache_path(path: str) -> None:
    """Refuse paths that are not an existing, non-empty file (nothing is created)."""
    from semcache.store import is_server_location

    if is_server_location(path):
        return
    if not os.path.exists(path):
        raise CacheFileError(f"no cache file at {path!r}")
    if os.path.isdir(path):
        raise CacheFileError(f"{path!r} is a directory, not a cache file")
    if os.path.getsize(path) == 0:
        raise NotASemcacheFileError(f"{path!r} is an empty file, not a semcache cache")


def stored_settings(path: str) -> dict[str, str]:
    """The settings table of an existing cache, read without changing it."""
    from semcache.store import open_store

    store, _ = open_store(path, readonly=True)
    try:
        return dict(store.settings)
    finally:
        store.close()


def open_cache(path: str, *, write: bool = False) -> Any:
    """Open an existing cache for inspection (read-only) or maintenance (``write``).

    Never creates it, never writes settings, and never loads the embedder model (it is
    loaded lazily, on the first text that needs embedding).
    """
    from semcache.cache import Cache

    check_cache_path(path)
    hash_only = "embedder" not in stored_settings(path)
    return Cache(path, readonly=not write, use_mirror=write, hash_only=hash_only)


def answer_text(response: Any) -> str:
    """The text to show for a stored response: a chat completion's message content,
    a string as is, anything else as compact JSON."""
    if isinstance(response, str):
        return response
    if isinstance(response, dict) and isinstance(response.get("choices"), list):
        choices = response["choices"]
        if choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                return message["content"]
    return json.dumps(response, ensure_ascii=False)




def remove_cache_files(path: str) -> None:
    """Remove a cache a command just created: the file (and its WAL, mirror and lock
    files), or the schema on a PostgreSQL server."""
    from semcache.store import remove_store

    remove_store(path)


__all__ = ["CLIError", "UsageError", "answer_text", "check_cache_path", "open_cache",
           "remove_cache_files", "stored_settings"]
