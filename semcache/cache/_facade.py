"""The public facade: :func:`open` and :class:`Cache`.

Data flow of a lookup (docs/architecture.md has the diagram)::

    get(text) / lookup(key, text=, scope=)
      -> exact key (SHA-256 of kind, namespace, material) -> store.get_by_key -> Hit("exact")
      -> embed the text, outside any lock -> 256-bit code -> store.nearest (the engine's
         search, rescored by exact cosine) -> threshold -> feedback, guard -> Hit("semantic")

Writes validate and embed first (outside any lock), then run one store transaction through
the cache's :class:`~semcache.cache._writer.Writer` (with this process's batched hits).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from semcache.cache._bound import ErrorBound, check_verifier, make_verifier
from semcache.cache._coalesce import Claim, Coalescer
from semcache.cache._gate import OPEN_CACHES, Gate
from semcache.cache._memoize import memoize
from semcache.cache._pipeline import LookupPipeline, Query
from semcache.cache._stats import check_history_span, current_stats, history
from semcache.cache._trust import record_verdict, restore_orphan_verdicts, verdict_subject
from semcache.cache._writer import Writer
from semcache.cache._writes import EntryFactory, is_vector, restore_entries, write_entries
from semcache.cache.entry import Entry, decode_record, purge_selection, selection
from semcache.cache.hit import Hit
from semcache.embedders.base import Embedder
from semcache.errors import ConfigurationError, InvalidInputError, InvalidTypeError, SemcacheError
from semcache.kernels.projection import BinaryEncoder, validate_vector, validate_vectors
from semcache.keys import PromptKeyMemo, prompt_key_hash, request_key_hash, vector_key_hash
from semcache.settings import CacheSettings, check_same_pin, resolve_identity
from semcache.store import open_store
from semcache.store.base import (
    EntryFilter,
    EntryOrder,
    NamespaceSummary,
    Outcome,
    OutcomePool,
    VacuumProgress,
    Verdict,
)
from semcache.validation import (
    UNSET,
    check_bool,
    check_entry_id,
    check_error_bound,
    check_key,
    check_namespace,
    check_prompt,
    check_scope,
)

log = logging.getLogger("semcache")

#: close() waits at most this long for operations in flight, then for the write lock to
#: write the batched hit counts; past that it returns and says what it dropped.
CLOSE_WAIT_S = 2.0


class Cache:
    """A semantic cache in one SQLite file (or one PostgreSQL schema), shared by every
    process that opens it. Use :func:`semcache.open` to create one.

    Thread-safe and fork-safe (a child process reconnects). Every setting is in
    docs/configuration.md: the tunables (``similarity_threshold``, ``max_entries``,
    ``max_bytes``, ``ttl``, ``namespace``, ``refresh_on_access``, ``store_prompts``, ``guard``,
    ``error_bound``) and the embedder are stored in the file when given (read from it when
    omitted; ``defaults``: used only when the file is new); ``verifier``, ``hash_only``,
    ``dim``/``seed``/``encoder``, ``readonly``, ``clock``, ``use_mirror`` and ``schema`` apply
    to this process only. ``create=False`` opens an existing cache as it is (an operator's
    open): :class:`~semcache.errors.CacheNotFoundError` when there is none; nothing is pinned.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 embedder: str | Embedder | None = UNSET,
                 similarity_threshold: Any = UNSET, max_entries: Any = UNSET, ttl: Any = UNSET,
                 max_bytes: Any = UNSET, namespace: Any = UNSET, refresh_on_access: Any = UNSET,
                 store_prompts: Any = UNSET, guard: Any = UNSET, error_bound: Any = UNSET,
                 verifier: Any = "text", hash_only: bool = False,
                 dim: int | None = None, seed: int | None = None,
                 encoder: BinaryEncoder | None = None,
                 readonly: bool = False, clock: Callable[[], float] = time.time,
                 use_mirror: bool = True, defaults: dict[str, Any] | None = None,
                 schema: str | None = None, create: bool = True) -> None:
        given = {"similarity_threshold": similarity_threshold, "max_entries": max_entries,
                 "ttl": ttl, "namespace": namespace, "refresh_on_access": refresh_on_access,
                 "store_prompts": store_prompts, "guard": guard, "max_bytes": max_bytes,
                 "error_bound": error_bound}
        self._settings = CacheSettings.check_arguments(given, defaults, hash_only)
        check_verifier(verifier)
        check_bool(create, "create")
        store = open_store(path, readonly=readonly, schema=schema, use_mirror=use_mirror,
                           create=create)
        try:
            identity = resolve_identity(store, embedder=embedder, dim=dim, seed=seed,
                                        encoder=encoder, pin_default=create and not hash_only)
            self._settings.load(store, identity.name)
            verify = make_verifier(verifier, None if hash_only else identity.embedder)
        except BaseException:
            # A failed open leaves no cache behind - unless another open pinned it meanwhile
            # (two first opens at once: the loser must not remove the winner's cache).
            if store.created and "embedder" not in store.settings:
                store.drop(if_empty=True)
            else:
                store.close()
            raise
        self._store = store
        self._identity = identity
        self.hash_only = hash_only or identity.name is None
        self._clock = clock
        self._gate = Gate(store.location)
        self._writer = Writer(store, clock)
        self._bound = ErrorBound(store, verify)
        self._pipeline = LookupPipeline(
            store=store, encoder=identity.encoder, gate=self._gate,
            embedder=None if self.hash_only else identity.embedder, dim=identity.dim,
            writer=self._writer, clock=clock, threshold=self._settings.threshold,
            refresh=self._settings.refresh_on_access, guard=self._settings.guard,
            error_bound=self._settings.error_bound, bound=self._bound)
        self._entries = EntryFactory(self._settings.tunables, identity.encoder)
        self._coalescer = Coalescer(store)
        self._keys = PromptKeyMemo()
        self._namespace = self._settings.tunables().namespace  # fixed once opened
        store.on_incarnation = self._replaced
        OPEN_CACHES.add(self)

    def _replaced(self) -> None:
        """The engine found another incarnation of the cache under this one (a file
        restored over, a schema dropped and created again): drop every memo of the old one
        and go on if it is pinned like this process, else refuse (its vectors would mix)."""
        self._pipeline.forget()
        self._writer.forget()
        self._bound.forget()
        self._settings.reload_thresholds(self._store.settings)
        check_same_pin(self.location, self._identity, self._store.settings)

    # -- settings -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file (resolved), or the URL without its password."""
        return self._store.path

    @property
    def location(self) -> str:
        """Where the cache lives, as messages show it (a URL without its password)."""
        return self._store.location

    @property
    def created(self) -> bool:
        """True when this open created the cache."""
        return self._store.created

    @property
    def similarity_threshold(self) -> float:
        """The default threshold (namespaces may carry their own: :meth:`set_threshold`)."""
        return self._settings.default_threshold()

    @property
    def namespace(self) -> str:
        return self._settings.tunables().namespace

    @property
    def ttl(self) -> float | None:
        return self._settings.tunables().ttl

    @property
    def max_entries(self) -> int | None:
        return self._settings.tunables().max_entries

    @property
    def max_bytes(self) -> int | None:
        return self._settings.tunables().max_bytes

    @property
    def dim(self) -> int | None:
        return self._identity.dim

    @property
    def embedder(self) -> Any:
        return self._identity.embedder

    @property
    def embedder_name(self) -> str | None:
        return self._identity.name

    @property
    def semantic(self) -> bool:
        """True when text lookups reach the semantic tier (an embedder, not hash-only)."""
        return self._pipeline.semantic

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting in force (file-defining and tunable)."""
        return self._settings.describe(self.path, self._identity, self._store.settings,
                                       self.hash_only)

    def stored_settings(self) -> dict[str, str]:
        """The settings table as stored (file-defining settings and stored tunables)."""
        return dict(self._store.settings)

    def _ns(self, namespace: str | None) -> str:
        return self._namespace if namespace is None else check_namespace(namespace)

    def _vector(self, value: Any) -> np.ndarray:
        """Validate a vector against the pinned dimension; returns a unit float32 vector."""
        return validate_vector(value, self._dim())

    def _dim(self) -> int:
        if self._identity.dim is None:
            raise ConfigurationError(
                f"{self.location!r} has no pinned vector dimension (hash_only cache); "
                "open it with dim= or an embedder to use vectors")
        return self._identity.dim

    # -- lookups ----------------------------------------------------------------------------

    def get(self, prompt: Any, *, namespace: str | None = None,
            exact_only: bool = False) -> Hit | None:
        """Look up a prompt (exact tier, then semantic tier) or a vector (semantic only):
        a :class:`Hit` or None. Expired entries are never returned."""
        if type(prompt) is str:  # the common case, kept lean (the gate's too, inline there)
            return self._pipeline.run_prompt(prompt, namespace, self._namespace, self._keys,
                                             exact_only or self.hash_only)
        if type(prompt) is np.ndarray:  # a vector: the semantic tier only, kept lean too
            return self._pipeline.run_vector(prompt, namespace, self._namespace, self._dim,
                                             exact_only or self.hash_only)
        with self._gate:
            return self._pipeline.run_one(self._query(prompt, self._ns(namespace)),
                                          exact_only=exact_only or self.hash_only)

    def get_many(self, prompts: Sequence[Any], *, namespace: str | None = None,
                 exact_only: bool = False) -> list[Hit | None]:
        """:meth:`get` for several prompts; the exact tier's misses are embedded in one batch."""
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise InvalidTypeError(f"get_many takes a list of prompts; got {type(prompts).__name__}")
        with self._gate:
            ns = self._ns(namespace)
            queries = [self._query(p, ns) for p in prompts]
            return self._pipeline.run(queries, exact_only=exact_only or self.hash_only)

    def _query(self, prompt: Any, ns: str) -> Query:
        if type(prompt) is not str and is_vector(prompt):
            return Query(None, ns, "", vector=self._vector(prompt))
        text, key = self._keys.key(prompt, ns)
        return Query(key, ns, "", text)

    def lookup(self, key: bytes | str, *, text: str | None = None, scope: str = "",
               namespace: str | None = None, exact_only: bool = False) -> Hit | None:
        """Look a request up: exact tier by ``key``, then the semantic tier for ``text``.

        ``key`` is the request's exact-key material (e.g.
        ``semcache.keys.analyze_request(request).key``); ``text`` (what a paraphrase may
        change, e.g. the last user message) is compared only with entries of the same
        ``scope`` (the model, parameters, conversation prefix) and namespace. ``wrap``, the
        proxy and LangChain go through this method and :meth:`store`."""
        with self._gate:
            ns = self._ns(namespace)
            query = Query(request_key_hash(check_key(key), ns), ns, check_scope(scope),
                          text=check_prompt(text, "text") if text else None)
            return self._pipeline.run_one(query, exact_only=exact_only or self.hash_only)

    def find(self, text: str, *, namespace: str | None = None,
             exact_only: bool = False) -> Hit | None:
        """Look ``text`` up like :meth:`get`, then among the entries stored by request
        (every model and conversation scope of the namespace): by identical prompt, then
        semantically, best similarity first. For operators (``semcache get``)."""
        hit = self.get(text, namespace=namespace, exact_only=exact_only)
        if hit is not None:
            return hit
        with self._gate:
            return self._pipeline.find_in_scopes(check_prompt(text), self._ns(namespace),
                                                 exact_only or self.hash_only)

    # -- writes ------------------------------------------------------------------------------

    def put(self, prompt: Any, response: Any, *, vector: Any = None, ttl: Any = UNSET,
            namespace: str | None = None, metadata: dict[str, Any] | None = None,
            tokens: int = 0) -> int:
        """Store ``response`` (any JSON value) for a prompt or a vector; returns the entry id.
        ``ttl`` in seconds (None: never expires; omitted: the cache's). A put that returned
        is durable."""
        return self.put_many([(prompt, response)], vector=vector, ttl=ttl, namespace=namespace,
                             metadata=metadata, tokens=tokens)[0]

    def put_many(self, items: Iterable[tuple[Any, Any]], *, vector: Any = None,
                 ttl: Any = UNSET, namespace: str | None = None,
                 metadata: dict[str, Any] | None = None, tokens: int = 0) -> list[int]:
        """Store several (prompt, response) pairs in one transaction (all or nothing)."""
        with self._gate:
            ns = self._ns(namespace)
            now = self._clock()
            entries, todo, texts = self._entries.prepare(
                items, ns, vector=vector, ttl=ttl, metadata=metadata, tokens=tokens, now=now,
                keys=self._keys, check_vectors=lambda vs: validate_vectors(vs, self._dim()))
            if texts and self._pipeline.semantic:  # embedding happens before the lock
                self._entries.attach_all([entries[i] for i in todo], self._pipeline.embed(texts))
            return write_entries(self._writer, entries, self._settings.tunables(), now,
                                 self._bound.outcomes_for(entries, now))

    def store(self, key: bytes | str, response: Any, *, text: str | None = None,
              scope: str = "", namespace: str | None = None, ttl: Any = UNSET,
              metadata: dict[str, Any] | None = None, tokens: int = 0,
              vector: Any = None) -> int:
        """Store ``response`` for a request (see :meth:`lookup`); returns the entry id.

        ``text`` is embedded (or ``vector`` used) for the semantic tier of the entry's
        partition (namespace + ``scope``); it is also the stored prompt."""
        with self._gate:
            ns = self._ns(namespace)
            material = check_key(key)
            text = check_prompt(text, "text") if text else None
            unit = None if vector is None else self._vector(vector)
            now = self._clock()
            entry = self._entries.new_entry(
                key=request_key_hash(material, ns), namespace=ns, scope=check_scope(scope),
                prompt=text, response=response, vector=unit, ttl=ttl, metadata=metadata,
                tokens=tokens, now=now)
            entry.key_material = material
            if unit is None and text is not None and self._pipeline.semantic:
                self._entries.attach(entry, self._pipeline.embed([text])[0])
            return write_entries(self._writer, [entry], self._settings.tunables(), now,
                                 self._bound.outcomes_for([entry], now))[0]

    def claim(self, key: bytes | str, *, namespace: str | None = None,
              wait: float = 30.0) -> Claim:
        """Coalesce identical misses: claim the right to fetch the answer of request
        ``key`` (:meth:`lookup`'s key). Returns at once when nobody else is fetching it;
        otherwise waits (at most ``wait`` seconds) until the caller that is - in any process
        sharing the cache - releases its claim. When ``claim.waited`` is True, look the cache
        up again before calling the model. Release the claim (``with cache.claim(...)``)
        after storing the answer, or when the call failed (docs/architecture.md)."""
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < 1e6:
            raise InvalidInputError(f"wait must be seconds in [0, 1e6); got {wait!r}")
        with self._gate:
            return self._coalescer.claim(request_key_hash(check_key(key), self._ns(namespace)),
                                         float(wait))

    def restore(self, entries: Sequence[Entry],
                on_error: Callable[[int, SemcacheError], None] | None = None) -> list[int]:
        """Write exported entries in one transaction, keeping their timestamps, hit counts
        and vectors; returns the new ids (replacing entries with the same keys). Values are
        validated as a put's; keys are derived again for each entry's own namespace
        (``EntryFactory.restored``). Imported entries are not puts. An entry's ``verdicts``
        are recorded for its new id in the same transaction (moved, not doubled, when it is
        restored again). A bad entry raises (nothing is written), or, with ``on_error``, is
        reported as ``on_error(index, error)`` and skipped."""
        with self._gate:
            now = self._clock()
            ready = self._entries.restorable(entries, self._vector, on_error)
            return restore_entries(self._writer, ready, self._settings.tunables(), now) if ready else []

    def restore_verdicts(self, verdicts: Sequence[Verdict],
                         pools: dict[str, Sequence[OutcomePool]] | None = None) -> int:
        """Record exported verdicts whose entry no longer exists (entry id 0: they feed
        calibrate, never block), and namespaces' outcome ``pools`` (a bin keeps the larger
        counts); returns how many verdicts. Restoring again does not double them."""
        with self._gate:
            return restore_orphan_verdicts(self._writer, verdicts, pools or {})

    def check_restorable(self, entry: Entry) -> None:
        """Raise the error :meth:`restore` would raise for ``entry`` (writes nothing)."""
        with self._gate:
            self._entries.restorable([entry], self._vector)

    # -- removal -------------------------------------------------------------------------------

    def delete(self, entry_id: int) -> bool:
        """Delete one entry by id; True if it existed."""
        check_entry_id(entry_id)
        return bool(self._delete(EntryFilter(ids=(entry_id,))))

    def invalidate(self, prompt: Any, namespace: str | None = None) -> int:
        """Delete the exact entry of a prompt (or vector); returns how many were deleted."""
        ns = self._ns(namespace)
        if is_vector(prompt):
            self._vector(prompt)
            key = vector_key_hash(prompt, ns)
        else:
            key = prompt_key_hash(check_prompt(prompt), ns)
        return self._delete(EntryFilter(key_hash=key))

    def clear(self, namespace: str | None = None) -> int:
        """Delete every entry (of one namespace when given); returns how many."""
        if namespace is not None:
            return self._delete(EntryFilter(namespace=check_namespace(namespace)))
        with self._gate, self._writer.write() as w:
            return w.txn.clear_all()

    def _delete(self, where: EntryFilter) -> int:
        with self._gate, self._writer.write() as w:
            return len(w.txn.delete(where))

    def purge_expired(self) -> int:
        """Delete expired entries now; returns how many (also counted as expirations)."""
        with self._gate, self._writer.write() as w:
            n = w.txn.purge_expired(self._clock())
            w.count(expirations=n)
            return n

    def purge(self, *, namespace: str | None = None, expired: bool | None = None,
              older_than: float | None = None, everything: bool = False) -> int:
        """Delete the entries the filters select (all of them with ``everything=True``;
        no filter and not ``everything`` is refused). Returns how many were deleted."""
        with self._gate:
            where = purge_selection(namespace, expired, older_than, everything, self._clock())
            with self._writer.write() as w:
                if where is None:
                    return w.txn.clear_all()
                ids = w.txn.delete(where)
                if expired:
                    w.count(expirations=len(ids))
                return len(ids)

    def drop(self) -> None:
        """Close the cache and delete it, entries included: the file and its companions, or
        the PostgreSQL schema (only semcache's tables when it holds anything else). For a
        cache a program created and could not fill (``semcache import``)."""
        def release() -> None:
            self._writer.stop()
            self._store.drop()

        self._gate.check()  # a closed cache is not dropped: open it again to say which
        self._gate.close(release, wait=CLOSE_WAIT_S)
        OPEN_CACHES.discard(self)

    # -- operators' reads ------------------------------------------------------------------------

    def entries(self, *, namespace: str | None = None, expired: bool | None = None,
                older_than: float | None = None, order: EntryOrder = "newest",
                limit: int | None = None, after_id: int | None = None,
                with_vectors: bool = False) -> list[Entry]:
        """Entries, decoded, newest first (``order``: newest, oldest, hits, accessed, id);
        ``expired`` True/False: only expired/live; ``older_than`` seconds; ``after_id`` pages."""
        with self._gate:
            where = selection(namespace, expired, older_than, self._clock())
            recs = self._store.list_entries(where, order=order, limit=limit, after_id=after_id,
                                            with_vector=with_vectors)
            return [decode_record(r) for r in recs]

    def entry(self, entry_id: int) -> Entry | None:
        """One entry by id, with its vector (None if there is no such entry)."""
        check_entry_id(entry_id)
        with self._gate:
            recs = self._store.list_entries(EntryFilter(ids=(entry_id,)), with_vector=True)
            return decode_record(recs[0]) if recs else None

    def count(self, *, namespace: str | None = None, expired: bool | None = None,
              older_than: float | None = None) -> int:
        """How many entries :meth:`entries` (or :meth:`purge`) would select."""
        with self._gate:
            return self._store.count_entries(selection(namespace, expired, older_than,
                                                       self._clock()))

    def namespaces(self) -> list[NamespaceSummary]:
        """Entries, expired entries, hits and bytes of each namespace, biggest first."""
        with self._gate:
            return self._store.namespace_summary(self._clock())

    # -- trust ------------------------------------------------------------------------------

    def feedback(self, hit: Hit | int, correct: bool, *, namespace: str | None = None,
                 query: str | None = None, similarity: float | None = None) -> None:
        """Record a verdict on a served hit: was its answer right for the query?

        ``hit`` is the :class:`Hit` that was served, or an entry id (e.g. from
        ``semcache.cache_info(completion).entry_id``) with the ``query`` that was asked.
        Feedback acts only within ``namespace`` (default: the cache's): an entry of another
        namespace, or one that no longer exists, raises :class:`InvalidInputError` and
        nothing changes; a :class:`Hit` must agree with the stored entry (namespace, scope,
        and for an exact hit its key). A wrong verdict means that entry is never served for
        that query again, by any process; on an exact entry (an exact ``Hit``, an id without
        a query, or a query with the entry's own exact key) it deletes the entry. Verdicts
        feed ``semcache calibrate``; on semantic hits they are the error bound's outcomes."""
        ns = self._ns(namespace)
        subject = verdict_subject(hit, query, similarity, ns)
        check_bool(correct, "correct")
        with self._gate:
            record_verdict(self._writer, self._store, subject, ns, correct, self._clock(),
                           self._pipeline.prior)

    def verdicts(self, namespace: str | None = None) -> list[Verdict]:
        """Recorded verdicts (of one namespace when given), oldest first."""
        with self._gate:
            return self._store.verdicts(None if namespace is None else
                                        check_namespace(namespace))

    def outcomes(self, namespace: str | None = None) -> list[Outcome]:
        """The error bound's kept outcomes (of one namespace when given), oldest first."""
        with self._gate:
            return self._store.outcomes(None if namespace is None else check_namespace(namespace))

    def outcome_pools(self, namespace: str | None = None) -> list[OutcomePool]:
        """A namespace's pooled outcomes per score bin: what its error bound learnt."""
        with self._gate:
            return self._store.outcome_pools(self._ns(namespace))

    def threshold(self, namespace: str | None = None) -> float:
        """The similarity threshold in force for a namespace (re-read each second)."""
        with self._gate:
            return self._settings.threshold(self._ns(namespace))

    def set_threshold(self, namespace: str, value: float | None) -> None:
        """Give ``namespace`` its own similarity threshold, stored in the file for every
        process (None: back to the cache's default)."""
        with self._gate:
            # (set_namespace_threshold checks the value)
            self._settings.set_namespace_threshold(self._store, check_namespace(namespace), value)

    def error_bound(self, namespace: str | None = None) -> float | None:
        """The error bound in force for a namespace (None: threshold decisions)."""
        with self._gate:
            return self._settings.error_bound(self._ns(namespace))

    def set_error_bound(self, namespace: str, value: float | None) -> None:
        """Bound the fraction of ``namespace``'s lookups that serve a wrong answer (e.g. 0.01;
        None: the cache's ``error_bound``), stored in the file (docs/quality.md)."""
        with self._gate:
            self._settings.set_namespace_error_bound(self._store, check_namespace(namespace),
                                                     check_error_bound(value))

    # -- stats, lifecycle ---------------------------------------------------------------------------

    def vacuum(self, progress: VacuumProgress | None = None) -> dict[str, int]:
        """Purge expired entries, repair the engine's derived data after hand-made SQL,
        compact the storage and rebuild its indexes. Returns what was done.
        ``progress(step, done, steps)`` is called as each step starts, and at the end."""
        tell = progress or (lambda step, done, steps: None)
        tell("purging expired entries", 0, 0)
        expired = self.purge_expired()
        with self._gate:
            return {"expired": expired, **self._store.vacuum(
                lambda step, done, steps: tell(step, done + 1, steps + 1))}

    def flush(self) -> None:
        """Write batched access times, hit counts and counters now (raises on failure)."""
        with self._gate:
            self._writer.flush(timeout=None)

    def stats(self) -> dict[str, Any]:
        """Counters shared by every process (after flushing this one's), plus sizes."""
        with self._gate:
            self._writer.try_flush()
            return current_stats(self._store, self._identity.name)

    def stats_history(self, *, minutes: int = 60,
                      days: int = 30) -> dict[str, list[dict[str, int]]]:
        """The shared counters over time, summed over every process and host: the last
        ``minutes`` minutes and ``days`` UTC days, oldest first, as ``{"minutes": [...],
        "days": [...]}`` of ``{"start": epoch seconds, "hits": n, ...}`` (every counter of
        :meth:`stats` that counts events, 0 where none happened, bucketed by the minute its
        batch was written). Kept for 30 days."""
        check_history_span(minutes, days)
        with self._gate:
            self._writer.try_flush()
            return history(self._store, self._clock(), minutes, days)

    def warmup(self) -> None:
        """Load the embedder and map the search index now (e.g. in a server's startup hook)."""
        with self._gate:
            inner = getattr(self._identity.embedder, "inner", self._identity.embedder)
            load = getattr(inner, "load", None)
            if callable(load) and not self.hash_only:
                load()
            if self._identity.encoder is not None:
                self._store.warmup()

    def close(self) -> None:
        """Flush batched updates and close. Idempotent; never blocks much longer than
        CLOSE_WAIT_S: batched hit counts that cannot be written by then (another process
        holds the write lock, the disk is full) are dropped with a warning naming them."""
        self._gate.close(lambda: self._writer.close_store(CLOSE_WAIT_S), wait=CLOSE_WAIT_S)
        OPEN_CACHES.discard(self)

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._gate.closed else f"embedder={self.embedder_name!r}"
        return f"<semcache.Cache {self.location!r} {state}>"

    def memoize(self, namespace: str | None = None, ttl: Any = UNSET, *,
                semantic: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator caching a ``str -> JSON`` function (sync or async) in this cache; exact
        unless ``semantic=True`` (a summary of another text is a wrong answer)."""
        return memoize(self, namespace=namespace, ttl=ttl, semantic=semantic)


__all__ = ["Cache", "is_vector"]
