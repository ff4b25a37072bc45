"""The cache facade, in modules along its seams (see docs/architecture.md):

* ``_facade``: :class:`Cache` and :func:`open`, the public methods;
* ``_pipeline``: the one lookup pipeline (exact -> embed -> engine search -> decision);
* ``_writes``: preparing entries (puts, stores, restores) and writing them under the limit;
* ``_writer``: the write gateway: every transaction, carrying the batched hit counts,
  access times and sliding expiry, and the flush timer;
* ``_coalesce``: claims that coalesce identical misses; ``_gate``: open/closed state;
* ``_responses``: the decoded-response memo; ``_memoize``: ``Cache.memoize``;
* ``hit`` / ``entry``: the public records.

Settings and the file's identity live in :mod:`semcache.settings`, keys in
:mod:`semcache.keys`, the engines behind :mod:`semcache.store`.
"""

from __future__ import annotations

from semcache.cache._facade import Cache, open
from semcache.cache.entry import Entry
from semcache.cache.hit import Hit, HitKind

__all__ = ["Cache", "Entry", "Hit", "HitKind", "open"]
