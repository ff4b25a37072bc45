"""The one lookup pipeline behind ``get``, ``get_many`` and ``lookup``.

For each query, in this order:

1. exact tier: the entry under the exact key, if it is alive and belongs to the same
   namespace and scope as the query (a key can never answer for another tenant);
2. embedding of the texts that missed, in one batch, outside any lock: a slow embedder
   (a remote API retrying for seconds) delays only its own callers;
3. semantic tier: the engine's nearest codes of the query's partition (namespace + scope),
   rescored by exact cosine (``Store.nearest``), decided here: above the namespace's floor,
   then feedback and the semantic decision (``semcache.guard.SemanticDecision``) on the
   stored prompt; in a namespace with an error bound, the bound's coin then serves the
   candidate or explores it (``cache/_bound.py``);
4. the hit's effects (access time, sliding expiry, counters) are batched, not written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from zstandard import ZstdError

from semcache.cache import _writer
from semcache.cache._bound import ErrorBound, Exploration
from semcache.cache._gate import Gate
from semcache.cache._responses import ResponseMemo
from semcache.cache._writer import Writer
from semcache.cache.hit import Hit, HitKind
from semcache.errors import CorruptCacheError
from semcache.kernels.projection import BinaryEncoder, validate_vector
from semcache.keys import PromptKeyMemo
from semcache.store.base import EntryFilter, EntryRow, Store
from semcache.store.codecs import decode_metadata
from semcache.validation import check_namespace

log = logging.getLogger("semcache")

#: How many Hamming candidates are rescored with exact cosine.
RESCORE_K = 16
#: At most this many candidates when entries expired within the last second fill the
#: first RESCORE_K (see LookupPipeline._best).
MAX_RESCORE_K = 1024
#: A :class:`Hit` without its __init__: the hot paths set every field themselves.
_new_hit = object.__new__

Alive = Callable[[EntryRow, float], bool]
#: Decides a candidate that passed the threshold (feedback, the near-miss guard).
Accept = Callable[[EntryRow, float], bool]
#: Has the last word on the candidate ``accept`` chose, given the other alive candidates
#: (most similar first): False = no hit (the semantic decision's rival rule: another
#: entry about as close with another answer means the query sits between look-alikes).
Settle = Callable[[EntryRow, float, list[tuple[EntryRow, float]]], bool]


@dataclass(slots=True)
class Query:
    """One lookup: an exact key and/or what the semantic tier compares."""

    key: bytes | None  # exact key hash; None = semantic tier only
    namespace: str
    scope: str
    text: str | None = None  # embedded for the semantic tier (None = exact only)
    vector: np.ndarray | None = None  # a unit vector given by the caller


def choose(ranked: list[tuple[EntryRow, float]], threshold: float, now: float, alive: Alive,
           accept: Accept | None, settle: Settle | None = None) -> tuple[EntryRow, float] | None:
    """The first candidate of ``ranked`` (best first, ties newest first) that is alive, at
    or above ``threshold``, and that ``accept`` lets through - if ``settle``, given the
    other alive candidates (below the threshold too), agrees."""
    live = [(row, sim) for row, sim in ranked if alive(row, now)]
    for i, (row, sim) in enumerate(live):
        if sim < threshold:
            return None
        if accept is None or accept(row, sim):
            if settle is not None and not settle(row, sim, live[:i] + live[i + 1:]):
                return None
            return row, sim
    return None


class Guard(Protocol):
    """The semantic decision (``semcache.guard.SemanticDecision``): a verdict with ``served``,
    ``reason`` and ``p_wrong`` for one candidate, and the last word on the chosen one given
    the other candidates (a rival with another answer; a learned ``p_wrong`` and its cut when
    decision.json holds them)."""

    def judge(self, query: str, stored: str, similarity: float) -> Any: ...

    def settle(self, query: str, stored: str, similarity: float,
               others: Sequence[tuple[str | None, float, bool]]) -> Any: ...


class LookupPipeline:
    """Runs queries through the tiers; see the module docstring."""

    def __init__(self, *, store: Store, encoder: BinaryEncoder | None, gate: Gate,
                 embedder: Any, dim: int | None, writer: Writer, clock: Callable[[], float],
                 threshold: Callable[[str], float], refresh: Callable[[], bool],
                 guard: Callable[[], Guard | None],
                 error_bound: Callable[[str], float | None], bound: ErrorBound) -> None:
        self.store = store
        self.gate = gate  # the cache's: run_prompt enters and leaves it inline
        self.encoder = encoder
        self.embedder = embedder
        self.dim = dim
        self.writer = writer
        self.clock = clock
        self.threshold = threshold
        self.refresh = refresh
        self.guard = guard
        self.error_bound = error_bound
        self.bound = bound  # the estimator of the namespaces that have an error bound
        self.responses = ResponseMemo()
        self._partitions: dict[tuple[str, str], int] = {}
        #: store.commits_seen when _partitions was last emptied (see _semantic).
        self._commits_seen = store.commits_seen

    @property
    def semantic(self) -> bool:
        """True when text can be searched semantically (an embedder and codes)."""
        return self.encoder is not None and self.embedder is not None

    # -- the pipeline ----------------------------------------------------------------------

    def run(self, queries: Sequence[Query], *, exact_only: bool = False) -> list[Hit | None]:
        now = self.clock()
        self.writer.maybe_flush(now)
        results = [self._exact(q, now) if q.key is not None else None for q in queries]
        return self._finish(queries, results, now, exact_only)

    def run_one(self, q: Query, *, exact_only: bool = False) -> Hit | None:
        """:meth:`run` of one query, without the lists."""
        now = self.clock()
        self.writer.maybe_flush(now)
        if q.key is not None:
            hit = self._exact(q, now)
            if hit is not None:
                return hit
        return self._finish((q,), [None], now, exact_only)[0]

    def run_prompt(self, prompt: str, namespace: str | None, default: str,
                   keys: PromptKeyMemo, exact_only: bool) -> Hit | None:
        """``Cache.get`` of a prompt (a ``str``) in scope "", inside the cache's gate
        (``namespace`` None: ``default``): its key from ``keys`` (read here without a call
        when remembered), the exact hit served here, a :class:`Query` built only on a miss.
        The gate is entered and left inline, as ``Gate.__enter__``/``__exit__`` do (two
        Python calls less on the exact hit)."""
        gate = self.gate
        gate.inside.append(None)
        try:
            if gate.closed:
                gate.refuse()
            namespace = default if namespace is None else check_namespace(namespace)
            memo = keys.remembered.get(namespace)
            key = None if memo is None else memo.get(prompt)
            if key is None:
                prompt, key = keys.key(prompt, namespace)  # validates, or raises
            now = self.clock()
            writer = self.writer
            if now - writer.last_flush >= _writer.FLUSH_INTERVAL:  # maybe_flush's test
                writer.maybe_flush(now)
            row = self.store.get_by_key(key)
            if row is not None:
                # _serve_exact and _hit, inline: two Python calls less on the hottest path.
                expires = row.expires_at
                if (expires is None or expires > now or self._pending_alive(row.id, now)) \
                        and row.namespace == namespace \
                        and row.partition_id == self._partitions.get((namespace, "")):
                    # ResponseMemo.decode's remembered immutable value, read inline (a
                    # call less); anything else goes through decode itself.
                    memo_items = self.responses.items
                    item = memo_items.get(row.id)
                    if item is not None and item[2] is None and item[1] == row.response:
                        response = item[3]
                        try:
                            memo_items.move_to_end(row.id)
                        except KeyError:
                            pass  # evicted by another thread since the get
                    else:
                        try:
                            response = self.responses.decode(row.id, row.response)
                        except (ZstdError, ValueError, TypeError) as exc:
                            raise corrupt_entry(self.store.location, row.id, exc) from None
                    try:
                        metadata = (None if row.metadata is None
                                    else decode_metadata(row.metadata))
                    except (ZstdError, ValueError, TypeError) as exc:
                        raise corrupt_entry(self.store.location, row.id, exc) from None
                    expires = writer.record_hit(row, "exact", now,
                                                row.ttl is not None and self.refresh())
                    found = _new_hit(Hit)  # every field set, as in _hit (keep in step)
                    (found.response, found.kind, found.similarity, found.entry_id,
                     found.namespace, found.created_at, found.expires_at, found.prompt,
                     found.metadata, found.tokens, found.scope, found.query, found.p_wrong,
                     found.decision) = (
                        response, "exact", 1.0, row.id, namespace, row.created_at, expires,
                        row.prompt, metadata, row.tokens, "", prompt, None, "exact")
                    return found
                hit = self._serve_exact(row, namespace, "", prompt, now)  # the checks, in full
                if hit is not None:
                    return hit
            query = Query(key, namespace, "", prompt)
            return self._finish((query,), [None], now, exact_only)[0]
        finally:
            gate.inside.pop()
            if gate.closed:
                gate.leave_closed()

    def run_vector(self, vector: np.ndarray, namespace: str | None, default: str,
                   dim: Callable[[], int], exact_only: bool) -> Hit | None:
        """``Cache.get`` of a numpy vector, inside the cache's gate: :meth:`run_one` of its
        :class:`Query` (``namespace`` None: ``default``; ``dim`` gives the pinned
        dimension, or raises for a cache without one)."""
        with self.gate:
            namespace = default if namespace is None else check_namespace(namespace)
            query = Query(None, namespace, "", vector=validate_vector(vector, dim()))
            return self.run_one(query, exact_only=exact_only)

    def _finish(self, queries: Sequence[Query], results: list[Hit | None], now: float,
                exact_only: bool) -> list[Hit | None]:
        """The semantic tier for the queries the exact tier missed, then the miss count."""
        if not exact_only:
            self._embed_missing(queries, results)
            for i, q in enumerate(queries):
                if results[i] is None and q.vector is not None:
                    results[i] = self._semantic(q, now)
        misses = sum(r is None for r in results)
        if misses:
            self.writer.count(misses=misses)
        return results

    def _embed_missing(self, queries: Sequence[Query], results: list[Hit | None]) -> None:
        todo = [q for q, r in zip(queries, results, strict=True)
                if r is None and q.vector is None and q.text is not None]
        if not todo or not self.semantic:
            return
        for q, vector in zip(todo, self.embed([q.text for q in todo if q.text]), strict=True):
            q.vector = vector

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit float32 vectors of ``texts`` from the pinned embedder, each validated."""
        assert self.embedder is not None and self.dim is not None
        out = self.embedder.embed(texts)
        return np.stack([validate_vector(v, self.dim) for v in out])

    # -- tiers ---------------------------------------------------------------------------

    def _exact(self, q: Query, now: float) -> Hit | None:
        assert q.key is not None
        row = self.store.get_by_key(q.key)
        return None if row is None else self._serve_exact(row, q.namespace, q.scope, q.text,
                                                          now)

    def _serve_exact(self, row: EntryRow, namespace: str, scope: str, text: str | None,
                     now: float) -> Hit | None:
        """The hit of the row found under the query's key, if it is alive and really
        belongs to the query's namespace and scope."""
        expires = row.expires_at
        if expires is not None and expires <= now and not self._pending_alive(row.id, now):
            return None
        # The key already includes the namespace; checking the row too means an entry
        # imported or edited with a foreign key can never answer for another tenant/scope.
        pid = self._partitions.get((namespace, scope))
        if pid is None:
            pid = self.partition(namespace, scope)
        if row.partition_id != pid and row.namespace == namespace:
            # The remembered id may be stale: another cache's (the file replaced), or given
            # to another partition by an older copy of this one restored in place.
            self.store.check_incarnation(force=True)
            self._partitions.pop((namespace, scope), None)
            pid = self.partition(namespace, scope)
        if row.namespace != namespace or row.partition_id != pid:
            log.warning("semcache: entry %d matches a key of namespace %r but belongs to "
                        "namespace %r (another scope?): not served", row.id, namespace,
                        row.namespace)
            return None
        return self._hit(row, "exact", 1.0, now, scope, text)

    def _semantic(self, q: Query, now: float) -> Hit | None:
        vector = q.vector
        assert vector is not None
        if self.encoder is None:
            return None
        # Partition ids are remembered: only under the incarnation of the cache they were
        # read from (SQLite checks here, cheaply; a PostgreSQL search checks the token in
        # its statement and comes back empty, then the miss below looks once more).
        self.store.check_incarnation()
        seen = self.store.commits_seen
        if seen != self._commits_seen:
            # Another connection committed: an older copy of this cache restored in place
            # (same token) may have given a remembered partition id to another partition,
            # whose entries the search would return - look the ids up again (a SELECT per
            # partition used, once per such commit).
            self._commits_seen = seen
            self.forget()
        p_wrong: dict[int, float] = {}
        best = self._best(q, vector, now, p_wrong)
        if best is None and self.store.check_incarnation(force=True):
            best = self._best(q, vector, now, p_wrong)
        bound = self.error_bound(q.namespace)
        if bound is not None:
            self.bound.looked_up(q.namespace, bound)
        if best is None:
            return None
        row, similarity = best
        if row.namespace != q.namespace:  # never another tenant's, whatever the ids say
            log.warning("semcache: entry %d of namespace %r found in the partition of %r: "
                        "not served", row.id, row.namespace, q.namespace)
            return None
        if bound is None:
            hit = self._hit(row, "semantic", similarity, now, q.scope, q.text)
            hit.p_wrong = p_wrong.get(row.id)
            return hit
        estimate = self.bound.estimate(q.namespace, row.id, p_wrong.get(row.id))
        if not self.bound.serve(q.namespace, estimate):
            self._explore(q, row, similarity, estimate.prior)
            return None
        hit = self._hit(row, "semantic", similarity, now, q.scope, q.text)
        hit.decision, hit.p_wrong = "bound", estimate.p_wrong
        return hit

    def _explore(self, q: Query, row: EntryRow, similarity: float, prior: float) -> None:
        """Answer a miss instead of ``row``, and remember it for the request's put (a
        lookup without an exact key - a vector - has no put to wait for)."""
        self.writer.count(explorations=1)
        if q.key is not None:
            try:
                cached = self.responses.decode(row.id, row.response)
            except (ZstdError, ValueError, TypeError) as exc:
                raise corrupt_entry(self.store.location, row.id, exc) from None
            self.bound.explored(q.key, Exploration(row.id, q.namespace, similarity, prior,
                                                   cached, time.monotonic()))

    def prior(self, query: str | None, stored: str | None, similarity: float) -> float | None:
        """The semantic decision's ``p_wrong`` for ``stored``'s answer to ``query`` (None
        when it cannot judge: no decision, or a text missing): a feedback verdict's prior."""
        guard = self.guard()
        if guard is None or query is None or stored is None:
            return None
        verdict = guard.judge(query, stored, similarity)
        if verdict.served:  # the learned p_wrong, without the lookup's other candidates
            verdict = guard.settle(query, stored, similarity, [])
        return float(verdict.p_wrong)

    def _best(self, q: Query, vector: np.ndarray, now: float,
              p_wrong: dict[int, float]) -> tuple[EntryRow, float] | None:
        """The engine's nearest candidates of the query's partition, decided here."""
        assert self.encoder is not None
        pid = self.partition(q.namespace, q.scope)
        if pid is None:
            return None
        threshold = self.threshold(q.namespace)
        code = self.encoder.encode_unit(vector).tobytes()
        # checked: _semantic checked the incarnation just before each call of this
        found = self.store.nearest(vector, code, pid, now, RESCORE_K, threshold, checked=True)
        k = RESCORE_K
        while k < MAX_RESCORE_K and len(found.ranked) + len(found.damaged) >= k:
            # The file engine's scan keeps expiry in whole seconds: entries that expired
            # less than a second ago pass it, and when they fill the k candidates they
            # would hide a valid entry behind them. Look at more candidates then (rare:
            # only entries expired within the last second count).
            expired = sum(not self.alive(row, now) for row, _ in found.ranked)
            if not expired:
                break
            k *= 2
            found = self.store.nearest(vector, code, pid, now, k, threshold)
        if found.damaged:
            self.writer.count(damaged_vectors=len(found.damaged))
        accept, settle = self._guard_for(q, p_wrong)
        return choose(found.ranked, threshold, now, self.alive, accept, settle)

    def _guard_for(self, q: Query, p_wrong: dict[int, float]
                   ) -> tuple[Accept | None, Settle | None]:
        """The candidate filter of a text query and its last word (None, None for vector
        lookups): entries judged wrong for this very query (``Cache.feedback``) are
        skipped, then the semantic decision compares the query with the candidate's stored
        prompt; the one chosen is still not served when another candidate with another
        answer (other response bytes) is about as close and would be served too, or - with a
        decision.json that holds a learned ``p_wrong`` and a cut, which the shipped one does
        not - when that ``p_wrong`` reaches the cut (``SemanticDecision.settle``, which gives
        the ``p_wrong`` recorded for the candidate served). Entries stored
        without their prompt (``store_prompts=False``) have nothing to compare: the cosine
        alone decides them.
        """
        text = q.text
        if text is None:
            return None, None
        guard = self.guard()
        blocked: set[int] | None = None

        def accept(row: EntryRow, similarity: float) -> bool:
            nonlocal blocked
            if blocked is None:  # looked up once per query, only when a candidate qualifies
                blocked = self.store.blocked_entries(query_hash(text))
            if row.id in blocked:
                return False
            if guard is None or row.prompt is None:
                return True
            verdict = guard.judge(text, row.prompt, similarity)
            if verdict.served:
                p_wrong[row.id] = verdict.p_wrong
                return True
            self.writer.count(guard_rejections=1)
            # The reason, not the texts: prompts may hold personal data.
            log.debug("semcache: guard rejected entry %d (similarity %.4f): %s",
                      row.id, similarity, verdict.reason)
            return False

        def settle(row: EntryRow, similarity: float,
                   others: list[tuple[EntryRow, float]]) -> bool:
            if guard is None or row.prompt is None:
                return True
            verdict = guard.settle(text, row.prompt, similarity, [
                (o.prompt, s, o.response == row.response) for o, s in others
                if blocked is None or o.id not in blocked])
            if verdict.served:
                p_wrong[row.id] = verdict.p_wrong
                return True
            self.writer.count(guard_rejections=1)
            log.debug("semcache: guard rejected entry %d (similarity %.4f): %s",
                      row.id, similarity, verdict.reason)
            return False

        return accept, settle

    def find_in_scopes(self, text: str, ns: str, exact_only: bool) -> Hit | None:
        """``text`` among the entries stored by request in every scope of namespace
        ``ns``: by identical prompt (newest first), then semantically, the best similarity
        of all scopes (``Cache.find``, for operators)."""
        now = self.clock()
        recs = self.store.list_entries(EntryFilter(namespace=ns, prompt=text, live_at=now,
                                                   scoped=True), order="newest", limit=1)
        if recs:
            rows = self.store.get_by_ids([recs[0].id])
            if rows:
                return self._hit(rows[0], "exact", 1.0, now, recs[0].scope, text)
        if exact_only or not self.semantic:
            return None
        vector = self.embed([text])[0]
        best: Hit | None = None
        for _, scope in self.store.partitions(ns):
            if scope:
                found = self.run([Query(None, ns, scope, text=text, vector=vector)])[0]
                if found is not None and (best is None or found.similarity > best.similarity):
                    best = found
        return best

    # -- helpers ---------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop what this pipeline remembers of the cache (it was replaced, or another
        connection committed: see :meth:`_semantic`)."""
        self._partitions = {}

    def partition(self, namespace: str, scope: str) -> int | None:
        pid = self._partitions.get((namespace, scope))
        if pid is None:
            pid = self.store.find_partition(namespace, scope)
            if pid is not None:
                self._partitions[(namespace, scope)] = pid
        return pid

    def alive(self, row: EntryRow, now: float) -> bool:
        if row.expires_at is None or row.expires_at > now:
            return True
        return self._pending_alive(row.id, now)

    def _pending_alive(self, entry_id: int, now: float) -> bool:
        """An expiry pushed out by a hit of this process that is not written yet."""
        pending = self.writer.pending_expiry(entry_id)
        return pending is not None and pending > now

    def _hit(self, row: EntryRow, kind: HitKind, similarity: float, now: float, scope: str,
             text: str | None) -> Hit:
        """Decode the entry and batch the hit's effects."""
        try:
            response = self.responses.decode(row.id, row.response)
            metadata = None if row.metadata is None else decode_metadata(row.metadata)
        except (ZstdError, ValueError, TypeError) as exc:
            raise corrupt_entry(self.store.location, row.id, exc) from None
        # refresh_on_access only matters for entries with a ttl (most have none).
        expires = self.writer.record_hit(row, kind, now,
                                          row.ttl is not None and self.refresh())
        # Every field set in place: the dataclass's __init__ (a Python call with 14
        # arguments, even positional) costs ~0.1 us more. run_prompt does the same inline.
        hit = _new_hit(Hit)
        (hit.response, hit.kind, hit.similarity, hit.entry_id, hit.namespace, hit.created_at,
         hit.expires_at, hit.prompt, hit.metadata, hit.tokens, hit.scope, hit.query,
         hit.p_wrong, hit.decision) = (
            response, kind, similarity, row.id, row.namespace, row.created_at, expires,
            row.prompt, metadata, row.tokens, scope, text, None,
            "exact" if kind == "exact" else "threshold")
        return hit


def query_hash(text: str) -> bytes:
    """How feedback remembers a query: SHA-256 of its text (the text itself is not kept)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def corrupt_entry(location: str, entry_id: int, exc: BaseException) -> CorruptCacheError:
    return CorruptCacheError(
        f"entry {entry_id} of cache {location!r} is corrupt ({type(exc).__name__}: {exc}); "
        f"delete it (cache.delete({entry_id})) or delete the file to start a new cache")


__all__ = ["RESCORE_K", "LookupPipeline", "Query", "choose", "corrupt_entry", "query_hash"]
