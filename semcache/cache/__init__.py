"""The cache facade, in modules along its seams (see docs/architecture.md):

* ``_facade``: :class:`Cache`, the public methods (and here, :func:`open`);
* ``_pipeline``: the one lookup pipeline (exact -> embed -> engine search -> decision);
* ``_writes``: preparing entries (puts, stores, restores) and writing them under the limit;
* ``_writer``: the write gateway: every transaction, carrying the batched hit counts,
  access times and sliding expiry, and the flush timer;
* ``_coalesce``: claims that coalesce identical misses; ``_gate``: open/closed state;
* ``_trust``: verdicts on served answers (``Cache.feedback``);
* ``_responses``: the decoded-response memo; ``_memoize``: ``Cache.memoize``;
* ``hit`` / ``entry``: the public records.

Settings and the file's identity live in :mod:`semcache.settings`, keys in
:mod:`semcache.keys`, the engines behind :mod:`semcache.store`.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from semcache.cache._facade import Cache
from semcache.cache._stats import STAT_COUNTERS
from semcache.cache.entry import Entry
from semcache.cache.hit import Hit, HitKind
from semcache.errors import ConfigurationError


def open(path: str | os.PathLike[str], **settings: Any) -> Cache:  # noqa: A001
    """Create or open the cache at ``path`` (a file, or a ``postgresql://`` URL).

    See :class:`Cache` for the settings; an unknown one raises ConfigurationError."""
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise ConfigurationError(
            f"unknown setting(s) {', '.join(unknown)} for semcache.open(); expected some of "
            f"{', '.join(sorted(_SETTINGS))} (stream replay options belong to wrap())")
    return Cache(path, **settings)


_SETTINGS = frozenset(inspect.signature(Cache.__init__).parameters) - {"self", "path"}


__all__ = ["STAT_COUNTERS", "Cache", "Entry", "Hit", "HitKind", "open"]
