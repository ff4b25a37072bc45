"""Trust state in exports (format 3): per-namespace settings and trust, per-entry trust.

* **per-namespace settings** - one line per namespace that has any, after the entries::

      {"namespace_state": "billing",
       "settings": {"similarity_threshold": 0.97, "error_bound": 0.01},
       "trust": {"verdicts": [...], "outcome_pools": [
           {"bin": 4, "right": 960, "wrong": 40, "expected": 10.0}]}}

  ``settings`` holds the namespace's own settings (its similarity threshold and error
  bound); ``trust`` the namespace's trust state that belongs to no entry: verdicts on
  entries since deleted - a wrong exact verdict deletes its entry -, which still feed
  ``semcache calibrate``, and the error bound's pooled outcomes per score bin (what the
  namespace learnt; imported, each bin keeps the larger of its stored and exported counts).
* **per-entry trust state** - the ``"trust"`` object of an entry record::

      {"id": 7, "namespace": "billing", ..., "trust": {"verdicts": [
          {"query_hash": "<hex SHA-256>" | null, "kind": "semantic", "similarity": 0.93,
           "correct": false, "created_at": 1700000000.0}], "outcomes": [
          {"similarity": 0.91, "prior": 0.02, "correct": true, "source": "explore",
           "created_at": 1700000000.0}]}}

  Imported with the entry, for its new id: a (query, entry) pair judged wrong in the
  original is never served by the copy either, and the entry's own outcomes keep
  weighing on its error-bound estimate.

A reader skips keys of these sections it does not know (a newer semcache's), and says so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from semcache.store.base import Outcome, OutcomePool, Verdict

#: The key that marks a per-namespace line.
NAMESPACE_KEY = "namespace_state"
#: Keys of the sections this version reads (others are reported and skipped).
SETTINGS_KEYS = ("similarity_threshold", "error_bound")
TRUST_KEYS = ("verdicts", "outcomes", "outcome_pools")


def verdict_record(v: Verdict) -> dict[str, Any]:
    return {"query_hash": None if v.query_hash is None else v.query_hash.hex(), "kind": v.kind,
            "similarity": v.similarity, "correct": v.correct, "created_at": v.created_at}


def outcome_record(o: Outcome) -> dict[str, Any]:
    return {"similarity": o.similarity, "prior": o.prior, "correct": o.correct,
            "source": o.source, "created_at": o.created_at}


def _trust(verdicts: list[Verdict], outcomes: list[Outcome] | None = None,
           pools: list[OutcomePool] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"verdicts": [verdict_record(v) for v in verdicts]}
    if outcomes:
        out["outcomes"] = [outcome_record(o) for o in outcomes]
    if pools:
        out["outcome_pools"] = [{"bin": p.bin, "right": p.right, "wrong": p.wrong,
                                 "expected": p.expected} for p in pools]
    return out


class TrustExport:
    """The trust state of a cache, handed out entry by entry, then namespace by namespace."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self._by_entry: dict[int, list[Verdict]] = defaultdict(list)
        for v in cache.verdicts():
            self._by_entry[v.entry_id].append(v)
        self._outcomes: dict[int, list[Outcome]] = defaultdict(list)
        self._pooled: set[str] = set()
        for o in cache.outcomes():
            self._outcomes[o.entry_id].append(o)
            self._pooled.add(o.namespace)

    def attach(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add the entry's trust state to its export record (when it has any)."""
        verdicts = self._by_entry.pop(record["id"], None)
        outcomes = self._outcomes.pop(record["id"], None)
        if verdicts or outcomes:
            record["trust"] = _trust(verdicts or [], outcomes)
        return record

    def namespace_lines(self) -> list[dict[str, Any]]:
        """One line per namespace with its own settings or trust state left over (verdicts
        of entries not exported: deleted since)."""
        left: dict[str, list[Verdict]] = defaultdict(list)
        for verdicts in self._by_entry.values():
            for v in verdicts:
                left[v.namespace].append(v)
        thresholds = self._cache.settings["namespace_thresholds"]
        bounds = self._cache.settings.get("namespace_error_bounds", {})
        pools = {ns: self._cache.outcome_pools(ns) for ns in self._pooled}
        lines = []
        for ns in sorted(set(left) | set(thresholds) | set(bounds) | set(pools)):
            line: dict[str, Any] = {NAMESPACE_KEY: ns}
            settings = {name: own[ns] for name, own in (("similarity_threshold", thresholds),
                                                        ("error_bound", bounds)) if ns in own}
            if settings:
                line["settings"] = settings
            if left.get(ns) or pools.get(ns):
                line["trust"] = _trust(sorted(left.get(ns, []), key=lambda v: v.created_at),
                                       pools=pools.get(ns))
            lines.append(line)
        return lines


@dataclass
class NamespaceState:
    """A per-namespace line, parsed."""

    namespace: str
    settings: dict[str, Any] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    pools: list[OutcomePool] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # keys this version does not read


def _known(section: Any, name: str, known: tuple[str, ...], unknown: list[str]) -> dict:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(f"{name} must be an object or null; got {type(section).__name__}")
    unknown.extend(f"{name}.{k}" for k in section if k not in known)
    return {k: v for k, v in section.items() if k in known}


def _numbers(v: dict[str, Any], names: tuple[str, ...], where: str) -> list[float]:
    out = []
    for name in names:
        value = v.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f"{where}.{name} must be a finite number")
        out.append(float(value))
    return out


def _objects(section: dict[str, Any], name: str) -> list[dict[str, Any]]:
    raw = section.get(name, [])
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise ValueError(f"trust.{name} must be a list of objects")
    return raw


def parse_outcomes(trust: Any) -> list[Outcome]:
    """The outcomes of an entry's ``trust`` section (entry id 0, no namespace, bin 0: the
    importer gives them the entry's and checks them)."""
    out = []
    for i, o in enumerate(_objects(trust if isinstance(trust, dict) else {}, "outcomes")):
        sim, prior, at = _numbers(o, ("similarity", "prior", "created_at"),
                                  f"trust.outcomes[{i}]")
        correct = o.get("correct")
        if not isinstance(correct, bool):
            raise ValueError(f"trust.outcomes[{i}].correct must be true or false")
        out.append(Outcome(0, "", sim, prior, 0, correct, str(o.get("source")), at))
    return out


def parse_pools(trust: Any) -> list[OutcomePool]:
    """The outcome pools of a namespace's ``trust`` section (checked by the importer)."""
    out = []
    for i, p in enumerate(_objects(trust if isinstance(trust, dict) else {}, "outcome_pools")):
        counts: list[int] = []
        for k in ("bin", "right", "wrong"):
            value = p.get(k)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"trust.outcome_pools[{i}].{k} must be an integer")
            counts.append(value)
        (expected,) = _numbers(p, ("expected",), f"trust.outcome_pools[{i}]")
        out.append(OutcomePool(counts[0], counts[1], counts[2], expected))
    return out


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
    from semcache.validation import check_error_bound, check_namespace, check_threshold

    state = NamespaceState(check_namespace(name))
    state.unknown.extend(k for k in obj if k not in (NAMESPACE_KEY, "settings", "trust"))
    state.settings = _known(obj.get("settings"), "settings", SETTINGS_KEYS, state.unknown)
    if state.settings.get("similarity_threshold") is not None:
        check_threshold(state.settings["similarity_threshold"])
    check_error_bound(state.settings.get("error_bound"))
    state.pools = parse_pools(obj.get("trust"))
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
        for name, read, write in (("similarity_threshold", cache.threshold, cache.set_threshold),
                                  ("error_bound", cache.error_bound, cache.set_error_bound)):
            value = s.settings.get(name)
            if value is None:
                continue
            if settings:
                write(s.namespace, value)
            elif read(s.namespace) != value:
                skipped.append(f"namespace {s.namespace!r}: {name} {value} (the cache keeps "
                               f"{read(s.namespace)})")
    pools = {s.namespace: s.pools for s in states if s.pools}
    return cache.restore_verdicts(verdicts, pools), skipped


__all__ = ["NAMESPACE_KEY", "NamespaceState", "TrustExport", "apply_namespace_states",
           "outcome_record", "parse_namespace_line", "parse_outcomes", "parse_pools",
           "parse_verdicts", "verdict_record"]
