"""Verdicts on served answers (``Cache.feedback``): what a verdict names, how it is recorded,
what a wrong one does, and verdicts carried by exports (``Cache.restore``,
``Cache.restore_verdicts``).

The cache-level home of trust: thresholds per namespace live in :mod:`semcache.settings`,
the semantic decision in :mod:`semcache.guard`; the lookup pipeline's accept callback
(``cache/_pipeline.py``) consults the recorded verdicts and the decision for each candidate.
Feedback acts only within one namespace: an entry of another namespace is never judged,
deleted or named in a message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from semcache.cache._bound import PRIOR_BINS, UNKNOWN_PRIOR, prior_bin
from semcache.cache._pipeline import query_hash
from semcache.cache._writer import Write, Writer
from semcache.cache.hit import Hit
from semcache.errors import InvalidInputError
from semcache.keys import prompt_key_hash
from semcache.store.base import EntryFilter, EntryRecord, Outcome, OutcomePool, Store, Verdict
from semcache.validation import check_entry_id, check_namespace, check_prompt

#: The decision's p_wrong of (query, stored prompt, cosine), None when it cannot judge.
Prior = Callable[[str | None, str | None, float], float | None]


class Subject:
    """What a feedback call judges: an entry, the query asked, how it was served."""

    def __init__(self, entry_id: int, text: str | None, similarity: float | None,
                 hit: Hit | None) -> None:
        self.entry_id = entry_id
        self.text = text
        self.similarity = similarity
        self.hit = hit

    def agrees_with(self, rec: EntryRecord, ns: str) -> bool:
        """Check a Hit against the stored entry; True when the verdict is on the entry's
        own exact key (then a wrong verdict deletes it)."""
        text, hit = self.text, self.hit
        own_key = None if text is None else _is_own_key(rec, text, ns)
        if hit is None:
            return text is None or own_key is True  # an id alone judges the entry itself
        if hit.scope != rec.scope:
            raise InvalidInputError(
                f"the hit disagrees with entry {rec.id}: scope {hit.scope!r} is not the "
                "entry's; nothing recorded")
        if hit.kind == "exact" and own_key is False:
            raise InvalidInputError(
                f"the hit disagrees with entry {rec.id}: its query's exact key is not the "
                "entry's, so it was not an exact hit of it; nothing recorded")
        return hit.kind == "exact" or own_key is True


def _is_own_key(rec: EntryRecord, text: str, ns: str) -> bool | None:
    """Whether ``text`` looked up in ``ns`` reaches ``rec`` by its exact key: the prompt
    of a plain entry; for an entry stored by request (which keeps its key material, not
    the request), its stored text in its scope. None when that cannot be told (a request
    entry stored without its prompt)."""
    if not rec.scope:
        return prompt_key_hash(text, ns) == rec.key_hash
    return None if rec.prompt is None else rec.prompt == text


def _check_cosine(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not -1.0 <= value <= 1.0:
        raise InvalidInputError(f"{what} must be a cosine in [-1, 1] (a number, not a bool); "
                                f"got {value!r}")
    return float(value)


def verdict_subject(hit: Hit | int, query: str | None, similarity: float | None,
                    ns: str) -> Subject:
    """The subject of a feedback call in namespace ``ns``, its arguments validated
    (nothing read yet)."""
    if isinstance(hit, Hit):
        check_entry_id(hit.entry_id)
        if hit.kind not in ("exact", "semantic"):
            raise InvalidInputError(f"hit.kind must be 'exact' or 'semantic'; got {hit.kind!r}")
        if hit.namespace != ns:
            raise InvalidInputError(
                f"the hit is from namespace {hit.namespace!r}, not {ns!r}: feedback acts only "
                f"within its namespace (pass namespace={hit.namespace!r})")
        text = query if query is not None else hit.query
        text = None if text is None else check_prompt(text, "query")
        return Subject(hit.entry_id, text, _check_cosine(hit.similarity, "hit.similarity"),
                       hit)
    entry_id = check_entry_id(hit)
    text = None if query is None else check_prompt(query, "query")
    sim = None if similarity is None else _check_cosine(similarity, "similarity")
    return Subject(entry_id, text, sim, None)


def record_outcomes(w: Write, outcomes: Sequence[Outcome]) -> None:
    """Record outcomes in the transaction ``w``, counted in ``outcomes_right`` /
    ``outcomes_wrong``."""
    if outcomes:
        w.txn.record_outcomes(outcomes)
        right = sum(o.correct for o in outcomes)
        w.count(outcomes_right=right, outcomes_wrong=len(outcomes) - right)


def record_verdict(writer: Writer, store: Store, subject: Subject, ns: str, correct: bool,
                   now: float, prior: Prior | None = None) -> None:
    """Record a verdict on ``subject`` in namespace ``ns``, counted in ``feedback_right`` /
    ``feedback_wrong``. An entry that is not in ``ns`` (deleted, replaced, another
    namespace's) raises and nothing changes. A wrong verdict on the entry's own exact key
    deletes the entry: its answer is wrong for the very request it was stored for. A
    verdict on a semantic hit is also an outcome of the entry (the error bound's evidence),
    its prior the decision's ``p_wrong`` for the pair (``prior(query, prompt, cosine)``)."""
    recs = store.list_entries(EntryFilter(ids=(subject.entry_id,), namespace=ns))
    if not recs:
        raise InvalidInputError(
            f"no entry {subject.entry_id} in namespace {ns!r} (deleted, replaced, or of "
            "another namespace: feedback acts only within its namespace); nothing recorded")
    exact = subject.agrees_with(recs[0], ns)
    sim = subject.similarity
    if sim is None:
        sim = 1.0 if exact else 0.0
    verdict = Verdict(subject.entry_id, ns,
                      None if subject.text is None else query_hash(subject.text),
                      "exact" if exact else "semantic", sim, correct, now)
    outcomes = []
    if not exact and subject.similarity is not None:
        p0 = None if prior is None else prior(subject.text, recs[0].prompt, sim)
        p0 = UNKNOWN_PRIOR if p0 is None else p0
        outcomes.append(Outcome(subject.entry_id, ns, sim, p0, prior_bin(p0), correct,
                                "feedback", now))
    with writer.write() as w:
        w.txn.record_verdict(verdict)
        w.count(**{"feedback_right" if correct else "feedback_wrong": 1})
        record_outcomes(w, outcomes)
        if not correct and exact:  # the namespace in the filter: never another's
            w.txn.delete(EntryFilter(ids=(subject.entry_id,), namespace=ns))


def checked_verdict(v: Any, namespace: str) -> Verdict:
    """An exported verdict, validated, in ``namespace``."""
    if not isinstance(v, Verdict):
        raise InvalidInputError(f"a verdict must be a semcache Verdict; got {type(v).__name__}")
    if v.query_hash is not None and (not isinstance(v.query_hash, bytes)
                                     or len(v.query_hash) != 32):
        raise InvalidInputError(f"a verdict's query hash must be 32 bytes (SHA-256) or None; "
                                f"got {v.query_hash!r:.80}")
    if v.kind not in ("exact", "semantic"):
        raise InvalidInputError(f"a verdict's kind must be 'exact' or 'semantic'; got {v.kind!r}")
    for name, value, low, high in (("similarity", v.similarity, -1.0, 1.0),
                                   ("created_at", v.created_at, 0.0, 1e11)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= value <= high:
            raise InvalidInputError(f"a verdict's {name} must be a number in [{low:g}, "
                                    f"{high:g}]; got {value!r}")
    if not isinstance(v.correct, bool):
        raise InvalidInputError(f"a verdict's correct must be true or false; got {v.correct!r}")
    return replace(v, namespace=namespace, similarity=float(v.similarity),
                   created_at=float(v.created_at))


def restore_orphan_verdicts(writer: Writer, verdicts: Sequence[Verdict],
                            pools: dict[str, Sequence[OutcomePool]]) -> int:
    """Record exported verdicts of entries that no longer exist, with entry id 0 (they
    never block an entry), and namespaces' exported outcome pools; returns how many
    verdicts."""
    checked = [replace(checked_verdict(v, check_namespace(v.namespace)), entry_id=0)
               for v in verdicts]
    checked_pools = {check_namespace(ns): [checked_pool(p) for p in own]
                     for ns, own in pools.items()}
    if checked or any(checked_pools.values()):
        with writer.write() as w:
            w.txn.restore_verdicts(checked)
            for ns, own in checked_pools.items():
                w.txn.restore_pools(ns, own)
    return len(checked)


def checked_pool(p: Any) -> OutcomePool:
    """An exported outcome pool, validated."""
    if not isinstance(p, OutcomePool):
        raise InvalidInputError(f"a pool must be a semcache OutcomePool; got {type(p).__name__}")
    for name in ("bin", "right", "wrong"):
        value = getattr(p, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
            raise InvalidInputError(f"a pool's {name} must be a count; got {value!r}")
    if p.bin >= PRIOR_BINS or isinstance(p.expected, bool) \
            or not isinstance(p.expected, (int, float)) or not 0 <= p.expected < 2**62:
        raise InvalidInputError(f"a pool must have a bin below {PRIOR_BINS} and a finite "
                                f"expected count; got {p!r}")
    return replace(p, expected=float(p.expected))


def checked_outcome(o: Any, entry_id: int, namespace: str) -> Outcome:
    """An exported outcome of an entry, validated, for its restored id and namespace."""
    if not isinstance(o, Outcome):
        raise InvalidInputError(f"an outcome must be a semcache Outcome; got {type(o).__name__}")
    for name, value, low, high in (("similarity", o.similarity, -1.0, 1.0),
                                   ("prior", o.prior, 0.0, 1.0),
                                   ("created_at", o.created_at, 0.0, 1e11)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= value <= high:
            raise InvalidInputError(f"an outcome's {name} must be a number in [{low:g}, "
                                    f"{high:g}]; got {value!r}")
    if not isinstance(o.correct, bool) or o.source not in ("explore", "feedback"):
        raise InvalidInputError(f"an outcome needs correct true/false and source 'explore' "
                                f"or 'feedback'; got {o.correct!r}, {o.source!r}")
    return Outcome(entry_id, namespace, float(o.similarity), float(o.prior),
                   prior_bin(float(o.prior)), o.correct, o.source, float(o.created_at))


__all__ = ["Prior", "Subject", "checked_outcome", "checked_pool", "checked_verdict", "record_outcomes", "record_verdict", "restore_orphan_verdicts",
           "verdict_subject"]
