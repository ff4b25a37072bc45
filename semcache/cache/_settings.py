"""The settings a cache runs with: tunables merged from arguments and the file, the
similarity threshold of each namespace, and the semantic decision (``guard``).

Thresholds: ``similarity_threshold`` is the default of every namespace; a namespace may
carry its own (``Cache.set_threshold``, ``semcache calibrate --apply``), stored in the
settings table as ``threshold:<namespace>`` so that every process uses it. Without any,
the embedder family's measured default applies (``semcache.settings.DEFAULT_THRESHOLDS``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from semcache.settings import (
    CODE_BITS,
    COSINE_ONLY_THRESHOLDS,
    DEFAULT_THRESHOLDS,
    FALLBACK_THRESHOLD,
    Tunables,
    merge_tunables,
    validate_tunables,
)
from semcache.store.base import Store
from semcache.validation import UNSET, check_threshold

log = logging.getLogger("semcache")

#: Settings-table prefix of per-namespace thresholds.
THRESHOLD_PREFIX = "threshold:"


class CacheSettings:
    """Tunables in force for one open cache."""

    def __init__(self, given: dict[str, Any], defaults: dict[str, Any]) -> None:
        self._given = given
        self._defaults = defaults
        self._tunables: Tunables | None = None
        self._family = ""
        self._namespace_thresholds: dict[str, float] = {}
        self._guard: Any = None

    @classmethod
    def check_arguments(cls, given: dict[str, Any], defaults: dict[str, Any] | None,
                        hash_only: bool) -> CacheSettings:
        """Validate everything before any file is opened (a bad argument creates nothing)."""
        from semcache.validation import check_bool

        check_bool(hash_only, "hash_only")
        checked_defaults = validate_tunables(dict(defaults or {}))
        return cls(validate_tunables(given), checked_defaults)

    def load(self, store: Store, embedder_name: str | None) -> None:
        """Merge with what the file stores; write the given values that differ."""
        tunables, to_write = merge_tunables(self._given, store.settings, self._defaults)
        if to_write and not store.readonly:
            store.write_settings(to_write)
        self._tunables = tunables
        self._family = (embedder_name or "").split(":", 1)[0]
        self._namespace_thresholds = read_namespace_thresholds(store.settings)

    def reload_thresholds(self, stored: dict[str, str]) -> None:
        """The namespace thresholds of ``stored`` (the cache was replaced under us)."""
        self._namespace_thresholds = read_namespace_thresholds(stored)

    def tunables(self) -> Tunables:
        assert self._tunables is not None
        return self._tunables

    def default_threshold(self) -> float:
        """The floor in force: the stored ``similarity_threshold``, else the embedder's
        measured default - lower with the semantic decision on than for the cosine alone
        (``guard=False``), which needs a higher floor to stay as safe."""
        t = self.tunables().similarity_threshold
        if t is not None:
            return t
        table = DEFAULT_THRESHOLDS if self.tunables().guard else COSINE_ONLY_THRESHOLDS
        return table.get(self._family, FALLBACK_THRESHOLD)

    def threshold(self, namespace: str) -> float:
        own = self._namespace_thresholds.get(namespace)
        return self.default_threshold() if own is None else own

    def namespace_thresholds(self) -> dict[str, float]:
        return dict(self._namespace_thresholds)

    def set_namespace_threshold(self, store: Store, namespace: str, value: float | None) -> None:
        name = THRESHOLD_PREFIX + namespace
        if value is None:
            store.write_settings({name: "null"})
            self._namespace_thresholds.pop(namespace, None)
        else:
            store.write_settings({name: json.dumps(check_threshold(value))})
            self._namespace_thresholds[namespace] = value

    def refresh_on_access(self) -> bool:
        return self.tunables().refresh_on_access

    def guard(self) -> Any:
        """The semantic decision (near-miss guard and contrast checks), or None when turned
        off (``guard=False``)."""
        if not self.tunables().guard:
            return None
        if self._guard is None:
            from semcache.guard.decision import SemanticDecision

            self._guard = SemanticDecision()
        return self._guard

    def describe(self, path: str, identity: Any, stored: dict[str, str],
                 hash_only: bool) -> dict[str, Any]:
        t = self.tunables()
        return {
            "path": path, "embedder": identity.name, "dim": identity.dim,
            "code_bits": CODE_BITS, "projection_seed": stored.get("projection_seed"),
            "similarity_threshold": self.default_threshold(), "max_entries": t.max_entries,
            "ttl": t.ttl, "namespace": t.namespace, "refresh_on_access": t.refresh_on_access,
            "store_prompts": t.store_prompts, "guard": t.guard, "hash_only": hash_only,
            "namespace_thresholds": self.namespace_thresholds(),
        }


def read_namespace_thresholds(stored: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, text in stored.items():
        if not name.startswith(THRESHOLD_PREFIX):
            continue
        try:
            value = json.loads(text)
            if value is not None:
                out[name[len(THRESHOLD_PREFIX):]] = check_threshold(value)
        except (ValueError, TypeError):
            log.warning("semcache: ignoring invalid stored setting %s=%r", name, text)
    return out


__all__ = ["THRESHOLD_PREFIX", "UNSET", "CacheSettings", "read_namespace_thresholds"]
