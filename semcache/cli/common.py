"""What the ``semcache`` commands share: their errors and how they open a cache."""

from __future__ import annotations

import argparse
import json
from typing import Any

import semcache
from semcache.errors import SemcacheError


class CLIError(SemcacheError):
    """A command failed in a way the user can fix (message printed, exit status 1)."""


class UsageError(CLIError):
    """The command line itself is wrong (message printed, exit status 2)."""


def open_cache(args: argparse.Namespace, *, write: bool = False) -> semcache.Cache:
    """Open the existing cache ``args.path`` for inspection (read-only) or maintenance
    (``write``), as it is: never created, nothing pinned, and the embedder model loaded
    only for a text that needs embedding. Sets ``args.shown``: the cache as output may
    show it (a URL's password never is)."""
    cache = semcache.open(args.path, readonly=not write, create=False)
    args.shown = cache.location
    return cache


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


__all__ = ["CLIError", "UsageError", "answer_text", "open_cache"]
