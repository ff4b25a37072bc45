"""Verdicts on served answers (``Cache.feedback``): what a verdict names, how it is recorded,
and what a wrong one does.

The cache-level home of trust: thresholds per namespace live in :mod:`semcache.settings`,
the near-miss guard in :mod:`semcache.guard`; the lookup pipeline's accept callback
(``cache/_pipeline.py``) consults the recorded verdicts and the guard for each candidate.
"""

from __future__ import annotations

from semcache.cache._pipeline import query_hash
from semcache.cache._writer import Writer
from semcache.cache.hit import Hit
from semcache.errors import InvalidInputError
from semcache.store.base import EntryFilter, Store, Verdict
from semcache.validation import check_entry_id, check_prompt


def verdict_subject(hit: Hit | int, query: str | None,
                     similarity: float | None) -> tuple[int, str, float, str | None]:
    """(entry id, kind, similarity, query text) of a feedback call."""
    if isinstance(hit, Hit):
        text = query if query is not None else hit.query
        return hit.entry_id, hit.kind, float(hit.similarity), text
    entry_id = check_entry_id(hit)
    text = None if query is None else check_prompt(query, "query")
    if similarity is not None and not (isinstance(similarity, (int, float))
                                       and -1.0 <= similarity <= 1.0):
        raise InvalidInputError(f"similarity must be a cosine in [-1, 1]; got {similarity!r}")
    return entry_id, "semantic", 0.0 if similarity is None else float(similarity), text


def record_verdict(writer: Writer, store: Store,
                   subject: tuple[int, str, float, str | None], correct: bool, now: float,
                   default_namespace: str) -> None:
    """Record a verdict on ``subject`` (:func:`verdict_subject`) in the entry's namespace,
    counted in ``feedback_right`` / ``feedback_wrong``; a wrong verdict on an exact hit, or
    on an entry id without a query, deletes the entry: its answer is wrong for the very
    request it was stored for."""
    entry_id, kind, sim, text = subject
    row = store.get_by_ids([entry_id])
    namespace = row[0].namespace if row else default_namespace
    verdict = Verdict(entry_id, namespace, None if text is None else query_hash(text), kind,
                      sim, correct, now)
    with writer.write() as w:
        w.txn.record_verdict(verdict)
        w.count(**{"feedback_right" if correct else "feedback_wrong": 1})
        if not correct and (kind == "exact" or text is None):
            w.txn.delete(EntryFilter(ids=(entry_id,)))


__all__ = ["record_verdict", "verdict_subject"]
