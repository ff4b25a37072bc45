"""The cache facade, in modules along its seams (see docs/architecture.md):

* ``_facade``: :class:`Cache` and :func:`open`, the public methods;
* ``_admin``: listing, purging, restoring, per-namespace thresholds (operators, transfer);
* ``_pipeline``: the one lookup pipeline (exact -> embed -> semantic -> guard);
* ``_writes``: preparing entries and writing them under the size limit;
* ``_batcher``: batched hit counts, access times and sliding expiry;
* ``_identity``: which embedder/dimension/projection a file is pinned to;
* ``_settings``: tunables, thresholds per namespace, the guard;
* ``_keys``: exact-key digests; ``_gate``: open/closed state across threads;
* ``hit`` / ``entry``: the public records.
"""

from __future__ import annotations

from semcache.cache._facade import Cache, open
from semcache.cache.entry import Entry
from semcache.cache.hit import Hit, HitKind

__all__ = ["Cache", "Entry", "Hit", "HitKind", "open"]
