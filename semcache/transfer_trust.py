"""Trust state in exports (format 3): per-namespace settings and per-entry verdicts.

Two sections, so that the trust work (error bounds, learned outcomes) can join them
without another format change:

* **per-namespace settings** - one line per namespace that has any, after the entries::

      {"namespace_state": "billing", "settings": {"similarity_threshold": 0.97},
       "trust": {"verdicts": [...]}}

  ``settings`` holds the namespace's own settings (today its similarity threshold);
  ``trust`` the namespace's trust state that belongs to no entry any more (verdicts on
  entries since deleted - a wrong exact verdict deletes its entry -, which still feed
  ``semcache calibrate``).
* **per-entry trust state** - the ``"trust"`` object of an entry record::

      {"id": 7, "namespace": "billing", ..., "trust": {"verdicts": [
          {"query_hash": "<hex SHA-256>" | null, "kind": "semantic", "similarity": 0.93,
           "correct": false, "created_at": 1700000000.0}]}}

  Imported with the entry, for its new id: a (query, entry) pair judged wrong in the
  original is never served by the copy either.

A reader skips keys of these sections it does not know (a newer semcache's), and says so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from semcache.store.base import Verdict

#: The key that marks a per-namespace line.
NAMESPACE_KEY = "namespace_state"
#: Keys of the sections this version reads (others are reported and skipped).
SETTINGS_KEYS = ("similarity_threshold",)
TRUST_KEYS = ("verdicts",)


def verdict_record(v: Verdict) -> dict[str, Any]:
    return {"query_hash": None if v.query_hash is None else v.query_hash.hex(), "kind": v.kind,
            "similarity": v.similarity, "correct": v.correct, "created_at": v.created_at}


def _trust(verdicts: list[Verdict]) -> dict[str, Any]:
    return {"verdicts": [verdict_record(v) for v in verdicts]}


class TrustExport:
    """The trust state of a cache, handed out entry by entry, then namespace by namespace."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self._by_entry: dict[int, list[Verdict]] = defaultdict(list)
        for v in cache.verdicts():
            self._by_entry[v.entry_id].append(v)

    def attach(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add the entry's trust state to its export record (when it has any)."""
        verdicts = self._by_entry.pop(record["id"], None)
        if verdicts:
            record["trust"] = _trust(verdicts)
        return record

    def namespace_lines(self) -> list[dict[str, Any]]:
        """One line per namespace with its own settings or trust state left over (verdicts
        of entries not exported: deleted since)."""
        left: dict[str, list[Verdict]] = defaultdict(list)
        for verdicts in self._by_entry.values():
            for v in verdicts:
                left[v.namespace].append(v)
        thresholds = self._cache.settings["namespace_thresholds"]
        lines = []
        for ns in sorted(set(left) | set(thresholds)):
            line: dict[str, Any] = {NAMESPACE_KEY: ns}
            if ns in thresholds:
                line["settings"] = {"similarity_threshold": thresholds[ns]}
            if left.get(ns):
                line["trust"] = _trust(sorted(left[ns], key=lambda v: v.created_at))
            lines.append(line)
        return lines


@dataclass
class NamespaceState:
    """A per-namespace line, parsed."""

    namespace: str
    settings: dict[str, Any] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # keys this version does not read


def _known(section: Any, name: str, known: tuple[str, ...], unknown: list[str]) -> dict:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(f"{name} must be an object or null; got {type(section).__name__}")
    unknown.extend(f"{name}.{k}" for k in section if k not in known)
    return {k: v for k, v in section.items() if k in known}


def parse_verdicts(trust: Any, unknown: list[str]) -> list[Verdict]:
    """The verdicts of a ``trust`` section (entry id 0 and no namespace: the importer
    gives them the entry's); raises ValueError naming what is malformed."""
    raw = _known(trust, "trust", TRUST_KEYS, unknown).get("verdicts", [])
    if not isinstance(raw, list):
        raise ValueError("trust.verdicts must be a list")
    out = []
    for i, v in enumerate(raw):
        if not isinstance(v, dict):
            raise ValueError(f"trust.verdicts[{i}] must be an object")
        qh = v.get("query_hash")
        try:
            query_hash = None if qh is None else bytes.fromhex(qh)
        except (TypeError, ValueError):
            raise ValueError(f"trust.verdicts[{i}].query_hash must be hex or null") from None
        numbers = []
        for name in ("similarity", "created_at"):
            value = v.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"trust.verdicts[{i}].{name} must be a finite number")
            numbers.append(float(value))
        correct = v.get("correct")
        if not isinstance(correct, bool):
            raise ValueError(f"trust.verdicts[{i}].correct must be true or false")
        out.append(Verdict(0, "", query_hash, str(v.get("kind")), numbers[0], correct,
                           numbers[1]))
    return out


def parse_namespace_line(obj: dict[str, Any]) -> NamespaceState:
    name = obj.get(NAMESPACE_KEY)
    if not isinstance(name, str):
        raise ValueError(f"{NAMESPACE_KEY} must be a namespace name; got {name!r:.80}")
    from semcache.validation import check_namespace, check_threshold

    state = NamespaceState(check_namespace(name))
    state.unknown.extend(k for k in obj if k not in (NAMESPACE_KEY, "settings", "trust"))
    state.settings = _known(obj.get("settings"), "settings", SETTINGS_KEYS, state.unknown)
    if state.settings.get("similarity_threshold") is not None:
        check_threshold(state.settings["similarity_threshold"])
    state.verdicts = [Verdict(0, name, v.query_hash, v.kind, v.similarity, v.correct,
                              v.created_at) for v in parse_verdicts(obj.get("trust"),
                                                                   state.unknown)]
    return state


def apply_namespace_states(cache: Any, states: list[NamespaceState], *,
                           settings: bool) -> tuple[int, list[str]]:
    """Write the namespaces' leftover verdicts and, with ``settings`` (a cache the import
    created), their settings. Returns (verdicts written, what was not applied)."""
    skipped: list[str] = []
    verdicts = [v for s in states for v in s.verdicts]
    for s in states:
        threshold = s.settings.get("similarity_threshold")
        if threshold is None:
            continue
        if settings:
            cache.set_threshold(s.namespace, threshold)
        elif cache.threshold(s.namespace) != threshold:
            skipped.append(f"namespace {s.namespace!r}: similarity_threshold {threshold} "
                           f"(the cache keeps {cache.threshold(s.namespace)})")
    return cache.restore_verdicts(verdicts), skipped


__all__ = ["NAMESPACE_KEY", "NamespaceState", "TrustExport", "apply_namespace_states",
           "parse_namespace_line", "parse_verdicts", "verdict_record"]
