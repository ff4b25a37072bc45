"""Operator and transfer operations of :class:`~semcache.Cache`: listing, purging,
restoring exported entries, searching every scope, per-namespace thresholds.

The CLI, export/import and the demo use these public methods; nothing outside the cache
package reaches into the cache's engine.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from semcache.cache._keys import prompt_key, request_key
from semcache.cache._pipeline import Query, query_hash
from semcache.cache._writes import enforce_limit
from semcache.cache.entry import Entry
from semcache.cache.hit import Hit
from semcache.errors import InvalidInputError, SemcacheError
from semcache.store.base import (
    SERIES_RETENTION_MINUTES,
    EntryFilter,
    EntryOrder,
    EntryRecord,
    NamespaceSummary,
    NewEntry,
    Verdict,
)
from semcache.store.codecs import (
    decode_metadata,
    decode_response,
    decode_vector,
    encode_metadata,
    encode_response,
)
from semcache.validation import (
    check_entry_id,
    check_namespace,
    check_prompt,
    check_scope,
    check_text,
    check_threshold,
    check_tokens,
    check_ttl,
)

if TYPE_CHECKING:
    import numpy as np

    from semcache.cache._batcher import HitBatcher
    from semcache.cache._gate import Gate
    from semcache.cache._identity import Identity
    from semcache.cache._pipeline import LookupPipeline
    from semcache.cache._settings import CacheSettings
    from semcache.cache._writes import EntryFactory
    from semcache.store.base import Store


def _filter(namespace: str | None, expired: bool | None, older_than: float | None,
            now: float) -> EntryFilter:
    if older_than is not None and (not math.isfinite(older_than) or older_than < 0):
        raise InvalidInputError(f"older_than must be a number of seconds >= 0; got {older_than!r}")
    return EntryFilter(
        namespace=None if namespace is None else check_namespace(namespace),
        expired_at=now if expired is True else None,
        live_at=now if expired is False else None,
        created_before=None if older_than is None else now - older_than)


def _entry(rec: EntryRecord) -> Entry:
    return Entry(
        namespace=rec.namespace, response=decode_response(rec.response), scope=rec.scope,
        prompt=rec.prompt, metadata=decode_metadata(rec.metadata), tokens=rec.tokens,
        created_at=rec.created_at, accessed_at=rec.accessed_at, expires_at=rec.expires_at,
        ttl=rec.ttl, hits=rec.hits,
        vector=None if rec.vector is None else decode_vector(rec.vector).copy(),
        key=rec.key_material, id=rec.id, key_hash=rec.key_hash, size=rec.size,
        has_code=rec.has_code)


class CacheAdmin:
    """Mixed into :class:`~semcache.Cache`, whose parts it uses (declared here for typing)."""

    if TYPE_CHECKING:
        _gate: Gate
        _clock: Callable[[], float]
        _store: Store
        _batcher: HitBatcher
        _settings: CacheSettings
        _identity: Identity
        _entries: EntryFactory
        _pipeline: LookupPipeline
        @property
        def max_entries(self) -> int | None: ...
        @property
        def semantic(self) -> bool: ...
        @property
        def namespace(self) -> str: ...

        def _ns(self, namespace: str | None) -> str: ...
        def _vector(self, value: Any) -> np.ndarray: ...
        def get(self, prompt: Any, *, namespace: str | None = None,
                exact_only: bool = False) -> Hit | None: ...

    # -- reading ---------------------------------------------------------------------------

    def entries(self, *, namespace: str | None = None, expired: bool | None = None,
                older_than: float | None = None, order: EntryOrder = "newest",
                limit: int | None = None, after_id: int | None = None,
                with_vectors: bool = False) -> list[Entry]:
        """Entries, decoded, newest first by default (``order``: newest, oldest, hits,
        accessed, id). ``expired``: True = only expired, False = only live, None = all.
        ``older_than``: created more than that many seconds ago. ``after_id`` pages by id."""
        with self._gate.enter():
            where = _filter(namespace, expired, older_than, self._clock())
            recs = self._store.list_entries(where, order=order, limit=limit, after_id=after_id,
                                            with_vector=with_vectors)
            return [_entry(r) for r in recs]

    def entry(self, entry_id: int) -> Entry | None:
        """One entry by id, with its vector (None if there is no such entry)."""
        check_entry_id(entry_id)
        with self._gate.enter():
            recs = self._store.list_entries(EntryFilter(ids=(entry_id,)), with_vector=True)
            return _entry(recs[0]) if recs else None

    def count(self, *, namespace: str | None = None, expired: bool | None = None,
              older_than: float | None = None) -> int:
        """How many entries :meth:`entries` (or :meth:`purge`) would select."""
        with self._gate.enter():
            return self._store.count_entries(_filter(namespace, expired, older_than,
                                                     self._clock()))

    def namespaces(self) -> list[NamespaceSummary]:
        """Entries, expired entries, hits and bytes of each namespace, biggest first."""
        with self._gate.enter():
            return self._store.namespace_summary(self._clock())

    def stats_history(self, *, minutes: int = 60,
                      days: int = 30) -> dict[str, list[dict[str, int]]]:
        """The shared counters over time, summed over every process and host:
        ``{"minutes": [...], "days": [...]}`` - the last ``minutes`` minutes and the last
        ``days`` UTC days, oldest first, the current one last. Each bucket is
        ``{"start": epoch seconds, "hits": n, "misses": n, ...}`` with every counter of
        :meth:`stats` that counts events (0 where none happened) and any other counter
        recorded. Counts are bucketed by the minute their batch was written (within ~1 s
        of the event). Kept for 30 days; ``days`` and ``minutes`` cover at most that."""
        for name, value in (("minutes", minutes), ("days", days)):
            limit = SERIES_RETENTION_MINUTES // (1 if name == "minutes" else 1440)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                raise InvalidInputError(f"{name} must be an int in [0, {limit}]; got {value!r}")
        with self._gate.enter():
            self._batcher.try_flush()
            now = int(self._clock() // 60)
            first_day = (now // 1440 - days + 1) * 1440
            return {
                "minutes": _buckets(self._store, now - minutes + 1, 1, minutes),
                "days": _buckets(self._store, first_day, 1440, days)}

    # -- removing --------------------------------------------------------------------------

    def purge(self, *, namespace: str | None = None, expired: bool | None = None,
              older_than: float | None = None, everything: bool = False) -> int:
        """Delete the entries the filters select (all of them with ``everything=True``;
        no filter and not ``everything`` is refused). Returns how many were deleted."""
        if everything and (namespace is not None or expired or older_than is not None):
            raise InvalidInputError("everything=True deletes every entry; it cannot be "
                                    "combined with filters")
        with self._gate.enter():
            where = _filter(namespace, expired, older_than, self._clock())
            if where.empty and not everything:
                raise InvalidInputError("say what to purge: namespace=, expired=True, "
                                        "older_than= or everything=True")
            with self._batcher.write() as w:
                if everything:
                    return w.txn.clear_all()
                ids = w.txn.delete(where)
                if expired:
                    w.count(expirations=len(ids))
                return len(ids)

    # -- restoring (import) -----------------------------------------------------------------

    def restore(self, entries: Sequence[Entry],
                on_error: Callable[[int, SemcacheError], None] | None = None) -> list[int]:
        """Write exported entries in one transaction, keeping their timestamps, hit counts
        and vectors; returns the new ids (replacing entries with the same keys).

        Every value is validated as a put's would be; keys are derived again from the
        prompt or request key material for the entry's own namespace (never taken from
        the export), and vectors are checked and normalized. An entry that has neither a
        prompt nor key material (a vector entry, a file without prompts) gets a key derived
        from its content: reachable by the semantic tier only, and restoring it twice
        replaces it. Imported entries do not count as puts.

        An entry's ``verdicts`` (its trust state) are recorded for its new id, in the
        same transaction; restoring the same entry again moves them rather than doubling them.

        A bad entry raises (nothing is written), or, with ``on_error``, is reported as
        ``on_error(index, error)`` and skipped.
        """
        with self._gate.enter():
            now = self._clock()
            new: list[NewEntry] = []
            verdicts: list[tuple[Verdict, ...]] = []
            for i, e in enumerate(entries):
                try:
                    new.append(self._restored(e))
                    verdicts.append(tuple(_checked_verdict(v, new[-1].namespace)
                                          for v in e.verdicts))
                except SemcacheError as exc:
                    if len(verdicts) < len(new):
                        new.pop()
                    if on_error is None:
                        raise
                    on_error(i, exc)
            if not new:
                return []
            with self._batcher.write() as w:
                ids = w.txn.insert_many(new)
                w.txn.restore_verdicts([replace(v, entry_id=i, namespace=e.namespace)
                                        for i, e, vs in zip(ids, new, verdicts, strict=True)
                                        for v in vs])
                enforce_limit(w, self.max_entries, now)
            return ids

    def restore_verdicts(self, verdicts: Sequence[Verdict]) -> int:
        """Record exported verdicts whose entry no longer exists (they feed ``semcache
        calibrate``; recorded with entry id 0, they never block an entry); returns how many.
        Validated like feedback; restoring them again does not double them."""
        with self._gate.enter():
            checked = [replace(_checked_verdict(v, check_namespace(v.namespace)), entry_id=0)
                       for v in verdicts]
            if checked:
                with self._batcher.write() as w:
                    w.txn.restore_verdicts(checked)
            return len(checked)

    def check_restorable(self, entry: Entry) -> None:
        """Raise the error :meth:`restore` would raise for ``entry`` (writes nothing)."""
        with self._gate.enter():
            restored = self._restored(entry)
            for v in entry.verdicts:
                _checked_verdict(v, restored.namespace)

    def stored_settings(self) -> dict[str, str]:
        """The settings table as stored (file-defining settings and stored tunables)."""
        return dict(self._store.settings)

    def _restored(self, e: Entry) -> NewEntry:
        ns = check_namespace(e.namespace)
        scope = check_scope(e.scope)
        prompt = None if e.prompt is None else check_text(check_prompt(e.prompt), "prompt")
        expires = e.expires_at
        for name, value in (("created_at", e.created_at), ("accessed_at", e.accessed_at),
                            ("expires_at", expires)):
            if (value is None and name == "created_at") or value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or not 0 <= value < 1e11):
                raise InvalidInputError(f"{name} must be epoch seconds; got {value!r}")
        response = encode_response(e.response)
        vector = None if e.vector is None else self._vector(e.vector)
        key, material = _derive_key(ns, scope, prompt, e.key, hashlib.sha256(
            b"%s\x00%s\x00%r\x00%s" % (scope.encode(), response, e.created_at,
                                        b"" if vector is None else vector.tobytes())).digest())
        ttl = check_ttl(e.ttl, "ttl of an imported entry")
        entry = NewEntry(
            key_hash=key, namespace=ns, scope=scope,
            prompt=prompt if self._settings.tunables().store_prompts else None,
            response=response, metadata=encode_metadata(e.metadata),
            tokens=check_tokens(e.tokens), created_at=float(e.created_at),
            expires_at=None if expires is None else float(expires), ttl=ttl,
            key_material=material, accessed_at=e.accessed_at, hits=check_tokens(e.hits))
        if vector is not None:
            self._entries.attach(entry, vector)
        return entry

    # -- looking everywhere ------------------------------------------------------------------

    def find(self, text: str, *, namespace: str | None = None,
             exact_only: bool = False) -> Hit | None:
        """Look ``text`` up like :meth:`get`, then among the entries stored by request
        (every model and conversation scope of the namespace): by identical prompt, then
        semantically, best similarity first. For operators (``semcache get``)."""
        hit = self.get(text, namespace=namespace, exact_only=exact_only)
        if hit is not None:
            return hit
        with self._gate.enter():
            return self._find_in_scopes(check_prompt(text), self._ns(namespace), exact_only)

    def _find_in_scopes(self, text: str, ns: str, exact_only: bool) -> Hit | None:
        now = self._clock()
        recs = self._store.list_entries(EntryFilter(namespace=ns, prompt=text, live_at=now,
                                                    scoped=True), order="newest", limit=1)
        if recs:
            rows = self._store.get_by_ids([recs[0].id])
            if rows:
                return self._pipeline.make_hit(rows[0], "exact", 1.0, now,
                                               Query(None, ns, recs[0].scope, text=text))
        if exact_only or not self.semantic:
            return None
        vector = self._pipeline.embed([text])[0]
        best: Hit | None = None
        for _, scope in self._store.partitions(ns):
            if scope:
                found = self._pipeline.run([Query(None, ns, scope, text=text, vector=vector)])[0]
                if found is not None and (best is None or found.similarity > best.similarity):
                    best = found
        return best

    # -- trust ------------------------------------------------------------------------------

    def feedback(self, hit: Hit | int, correct: bool, *, namespace: str | None = None,
                 query: str | None = None, similarity: float | None = None) -> None:
        """Record a verdict on a served hit: was its answer right for the query?

        ``hit`` is the :class:`Hit` that was served (its query and similarity are known),
        or an entry id (e.g. from ``semcache.cache_info(completion).entry_id``) with the
        ``query`` text that was asked. Feedback acts only within ``namespace`` (default:
        the cache's, like every other method): an entry of another namespace, or one that
        no longer exists, raises :class:`InvalidInputError` and nothing changes; a
        :class:`Hit` must agree with the stored entry (namespace, scope, and for an exact
        hit its key), else it is refused.

        A wrong verdict means that entry is never served for that query again, by any
        process. A wrong verdict on an exact entry deletes it, in every process (its answer
        is wrong for the very request it was stored for): an exact ``Hit``, an entry id
        without a query, or an entry id whose ``query`` has the entry's own exact key (the
        query is the entry's prompt; for an entry stored by request, its stored text).
        Verdicts feed ``semcache calibrate``.
        """
        from semcache.validation import check_bool

        ns = self._ns(namespace)
        subject = _verdict_subject(hit, query, similarity, ns)
        check_bool(correct, "correct")
        with self._gate.enter():
            recs = self._store.list_entries(EntryFilter(ids=(subject.entry_id,), namespace=ns))
            if not recs:
                raise InvalidInputError(
                    f"no entry {subject.entry_id} in namespace {ns!r} (deleted, replaced, or "
                    "of another namespace: feedback acts only within its namespace); "
                    "nothing recorded")
            exact = subject.agrees_with(recs[0], ns)
            sim = subject.similarity
            if sim is None:
                sim = 1.0 if exact else 0.0
            verdict = Verdict(subject.entry_id, ns,
                              None if subject.text is None else query_hash(subject.text),
                              "exact" if exact else "semantic", sim, correct, self._clock())
            with self._batcher.write() as w:
                w.txn.record_verdict(verdict)
                w.count(**{"feedback_right" if correct else "feedback_wrong": 1})
                if not correct and exact:  # the namespace in the filter: never another's
                    w.txn.delete(EntryFilter(ids=(subject.entry_id,), namespace=ns))

    def verdicts(self, namespace: str | None = None) -> list[Verdict]:
        """Recorded verdicts (of one namespace when given), oldest first."""
        with self._gate.enter():
            return self._store.verdicts(None if namespace is None else
                                        check_namespace(namespace))

    # -- thresholds ------------------------------------------------------------------------

    def threshold(self, namespace: str | None = None) -> float:
        """The similarity threshold in force for a namespace."""
        return self._settings.threshold(self._ns(namespace))

    def set_threshold(self, namespace: str, value: float | None) -> None:
        """Give ``namespace`` its own similarity threshold, stored in the file for every
        process (None: back to the cache's default)."""
        with self._gate.enter():
            self._settings.set_namespace_threshold(self._store, check_namespace(namespace),
                                                   None if value is None else
                                                   check_threshold(value))


#: Counters every bucket of :meth:`CacheAdmin.stats_history` has (0 when none happened).
HISTORY_COUNTERS = ("hits", "exact_hits", "semantic_hits", "misses", "puts", "evictions",
                    "expirations", "tokens_saved", "guard_rejections", "feedback_right",
                    "feedback_wrong")


def _buckets(store: Store, first: int, step: int, count: int) -> list[dict[str, int]]:
    """``count`` buckets of ``step`` minutes from minute ``first``, zero-filled."""
    if count == 0:
        return []
    found = store.counter_history(first, step)
    names = dict.fromkeys(HISTORY_COUNTERS, 0) | {name: 0 for _, name, _ in found}
    buckets = {first + i * step: dict(names) for i in range(count)}
    for minute, name, value in found:
        bucket = buckets.get(minute)
        if bucket is not None:  # a minute ahead of this clock (another host's) is left out
            bucket[name] += value
    return [{"start": minute * 60, **counts} for minute, counts in buckets.items()]


class _Subject:
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
        return prompt_key(text, ns) == rec.key_hash
    return None if rec.prompt is None else rec.prompt == text


def _verdict_subject(hit: Hit | int, query: str | None, similarity: float | None,
                     ns: str) -> _Subject:
    """The subject of a feedback call, its arguments validated (nothing read yet)."""
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
        sim = hit.similarity
        if isinstance(sim, bool) or not isinstance(sim, (int, float)) \
                or not -1.0 <= sim <= 1.0:
            raise InvalidInputError(f"hit.similarity must be a cosine in [-1, 1]; got {sim!r}")
        return _Subject(hit.entry_id, text, float(sim), hit)
    entry_id = check_entry_id(hit)
    text = None if query is None else check_prompt(query, "query")
    if similarity is not None and (isinstance(similarity, bool)
                                   or not isinstance(similarity, (int, float))
                                   or not -1.0 <= similarity <= 1.0):
        raise InvalidInputError(f"similarity must be a cosine in [-1, 1] (a number, not a "
                                f"bool); got {similarity!r}")
    return _Subject(entry_id, text, None if similarity is None else float(similarity), None)


def _checked_verdict(v: Any, namespace: str) -> Verdict:
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


def _derive_key(ns: str, scope: str, prompt: str | None, material: bytes | None,
                content_digest: bytes) -> tuple[bytes, bytes | None]:
    """The exact key of an imported entry, computed here for its own namespace."""
    if material is not None:
        if not isinstance(material, bytes) or not material:
            raise InvalidInputError(f"key must be non-empty bytes; got {material!r:.40}")
        return request_key(material, ns), material
    if prompt is not None and not scope:
        return prompt_key(prompt, ns), None
    # No way to rebuild the exact key: a key nobody asks for, derived from the content so
    # that importing the same file twice replaces instead of duplicating.
    return request_key(b"semcache-restored:" + content_digest, ns), None


__all__ = ["CacheAdmin"]
