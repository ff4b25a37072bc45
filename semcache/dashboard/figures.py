"""The dashboard's figures, read from a cache through its public API: the document that
``GET /api/stats`` returns and the page renders (docs/operations.md has its schema).

Privacy is decided here, once, for the page and the JSON alike: prompt and answer text
only with ``show_prompts``; with ``hashed_namespaces`` (the proxy with one namespace per
API key) every namespace is shown as a hashed id.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any, Protocol

from semcache.dashboard.prices import ASSUMPTIONS, PriceTable, usage_of

#: Version of the document (``schema``); a change that removes or renames a field bumps it.
SCHEMA = "semcache.dashboard/1"
#: The most-hit entries priced for the cost estimate (decoded on every refresh).
PRICED_ENTRIES = 2000
#: Rows of the "most-hit entries" and "recent wrong-answer reports" tables.
TOP_ENTRIES = 10
WRONG_ANSWERS = 20
#: Characters of a prompt or answer shown (``show_prompts``).
TEXT_CHARS = 300
#: Counters of ``stats()`` copied as they are (those the trust work adds, when present).
STATS = ("hits", "exact_hits", "semantic_hits", "misses", "hit_rate", "puts", "entries",
         "bytes", "file_bytes", "evictions", "expirations", "tokens_saved", "guard_rejections",
         "feedback_right", "feedback_wrong")
OPTIONAL_STATS = ("explorations", "outcomes_right", "outcomes_wrong")
#: Fields of a time-series bucket (``hit_rate`` is computed from hits and misses).
SERIES = ("hits", "exact_hits", "semantic_hits", "misses", "guard_rejections", "puts",
          "tokens_saved", "feedback_wrong")
_NAMESPACE_DOMAIN = b"semcache-dashboard-namespace\x00"


class DashboardCache(Protocol):
    """What the dashboard reads of a cache (:class:`semcache.Cache` is one)."""

    @property
    def location(self) -> str: ...
    @property
    def embedder_name(self) -> str | None: ...
    def stats(self) -> dict[str, Any]: ...
    def stats_history(self, *, minutes: int = 60,
                      days: int = 30) -> dict[str, list[dict[str, int]]]: ...
    def namespaces(self) -> Sequence[Any]: ...
    def entries(self, *, order: Any = ..., limit: int | None = None) -> Sequence[Any]: ...
    def entry(self, entry_id: int) -> Any: ...
    def verdicts(self, namespace: str | None = None) -> Sequence[Any]: ...


def namespace_id(namespace: str) -> str:
    """The id shown for a namespace when names are hidden: stable, not reversible
    without guessing the name (per-key namespaces are hashes of API keys already)."""
    return "ns-" + hashlib.sha256(_NAMESPACE_DOMAIN + namespace.encode()).hexdigest()[:12]


def collect(cache: DashboardCache, prices: PriceTable, *, show_prompts: bool = False,
            hashed_namespaces: bool = False, now: float | None = None) -> dict[str, Any]:
    """Every figure of the dashboard, as JSON-ready data."""
    shown = namespace_id if hashed_namespaces else _same
    stats = cache.stats()
    history = cache.stats_history(minutes=60, days=30)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": round(time.time() if now is None else now, 3),
        "cache": {"location": cache.location, "embedder": cache.embedder_name},
        "privacy": {"show_prompts": show_prompts,
                    "namespaces": "hashed" if hashed_namespaces else "names"},
    }
    out.update({name: stats.get(name, 0) for name in STATS})
    out.update({name: stats[name] for name in OPTIONAL_STATS if name in stats})
    out["series"] = {"minutes": _series(history["minutes"]), "days": _series(history["days"])}
    out["namespaces"] = [
        {"namespace": shown(n.namespace), "entries": n.entries, "expired": n.expired,
         "hits": n.hits, "bytes": n.bytes} for n in cache.namespaces()]
    ranked = [e for e in cache.entries(order="hits", limit=PRICED_ENTRIES) if e.hits > 0]
    out["cost_saved"] = _cost(ranked, prices, stats.get("hits", 0))
    out["top_entries"] = [_top_entry(e, prices, shown, show_prompts)
                          for e in ranked[:TOP_ENTRIES]]
    out["wrong_answers"] = _wrong_answers(cache, shown, show_prompts)
    return out


def _same(namespace: str) -> str:
    return namespace


def _series(buckets: list[dict[str, int]]) -> list[dict[str, Any]]:
    out = []
    for b in buckets:
        lookups = b["hits"] + b["misses"]
        row: dict[str, Any] = {"start": b["start"], **{k: b.get(k, 0) for k in SERIES}}
        row["hit_rate"] = round(b["hits"] / lookups, 4) if lookups else None
        out.append(row)
    return out


def _cost(ranked: list[Any], prices: PriceTable, all_hits: int) -> dict[str, Any]:
    """The estimate over the most-hit entries (see ASSUMPTIONS), by model."""
    models: dict[str, dict[str, Any]] = {}
    for e in ranked:
        model, inputs, outputs = usage_of(e.response, e.metadata, e.tokens)
        found = None if model is None else prices.lookup(model)
        key = model or "(unknown model)"
        row = models.setdefault(key, {
            "model": key, "priced_as": found[0] if found else None, "hits": 0,
            "input_tokens": 0, "output_tokens": 0, "usd": 0.0 if found else None})
        row["hits"] += e.hits
        row["input_tokens"] += e.hits * inputs
        row["output_tokens"] += e.hits * outputs
        if found:
            row["usd"] += e.hits * found[1].cost(inputs, outputs)
    by_model = sorted(models.values(), key=lambda r: (-(r["usd"] or 0.0), -r["hits"]))
    for row in by_model:
        row["usd"] = None if row["usd"] is None else round(row["usd"], 6)
    priced = sum(r["hits"] for r in by_model if r["usd"] is not None)
    return {
        "usd": round(sum(r["usd"] or 0.0 for r in by_model), 6),
        "priced_hits": priced,
        "unpriced_hits": max(all_hits - priced, 0),
        "by_model": by_model,
        "prices": prices.describe(),
        "assumes": ASSUMPTIONS.format(limit=PRICED_ENTRIES),
    }


def _text(value: Any) -> str:
    from semcache.cli.common import answer_text

    text = value if isinstance(value, str) else answer_text(value)
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS - 1] + "\u2026"


def _top_entry(e: Any, prices: PriceTable, shown: Any, show_prompts: bool) -> dict[str, Any]:
    model = usage_of(e.response, e.metadata, e.tokens)[0]
    row: dict[str, Any] = {
        "id": e.id, "namespace": shown(e.namespace), "hits": e.hits, "tokens": e.tokens,
        "model": model, "created_at": e.created_at, "accessed_at": e.accessed_at}
    if show_prompts:
        row["prompt"] = None if e.prompt is None else _text(e.prompt)
        row["response"] = _text(e.response)
    return row


def _wrong_answers(cache: DashboardCache, shown: Any, show_prompts: bool) -> list[dict[str, Any]]:
    """The latest verdicts that said a served answer was wrong, newest first."""
    wrong = [v for v in cache.verdicts() if not v.correct][-WRONG_ANSWERS:][::-1]
    out = []
    for v in wrong:
        row: dict[str, Any] = {
            "entry_id": v.entry_id, "namespace": shown(v.namespace), "kind": v.kind,
            "similarity": round(v.similarity, 4), "created_at": v.created_at}
        if show_prompts:  # the query itself is not kept (only its hash): the entry's prompt
            entry = cache.entry(v.entry_id)
            row["prompt"] = None if entry is None or entry.prompt is None else \
                _text(entry.prompt)
        out.append(row)
    return out


__all__ = ["PRICED_ENTRIES", "SCHEMA", "DashboardCache", "collect", "namespace_id"]
