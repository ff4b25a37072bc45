"""The public facade: :func:`open` and :class:`Cache`.

Data flow of a lookup (docs/architecture.md has the diagram)::

    get(text) / lookup(key, text=, scope=)
      -> exact key (SHA-256 of kind, namespace, material) -> store.get_by_key -> Hit("exact")
      -> embed the text, outside any lock -> 256-bit code -> search (mirror scan or server)
      -> exact cosine on the stored vectors -> threshold -> near-miss guard -> Hit("semantic")

Writes validate and embed first (outside any lock), then run one store transaction that
also carries this process's batched hit counts.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from semcache.cache._admin import CacheAdmin
from semcache.cache._batcher import HitBatcher
from semcache.cache._coalesce import Claim, Coalescer
from semcache.cache._gate import Gate
from semcache.cache._identity import check_same_pin, resolve_identity
from semcache.cache._keys import PromptKeys, prompt_key, request_key, vector_key
from semcache.cache._pipeline import LookupPipeline, Query
from semcache.cache._settings import CacheSettings
from semcache.cache._writes import EntryFactory, is_vector, write_entries
from semcache.cache.hit import Hit
from semcache.embedders.base import Embedder
from semcache.errors import ConfigurationError, InvalidInputError, InvalidTypeError
from semcache.kernels.projection import BinaryEncoder, validate_vector, validate_vectors
from semcache.store import open_store, remove_new_store
from semcache.store.base import EntryFilter, LocalCodeSource
from semcache.validation import (
    UNSET,
    check_entry_id,
    check_key,
    check_namespace,
    check_prompt,
    check_scope,
)

log = logging.getLogger("semcache")

#: close() waits at most this long for operations in flight, then for the write lock to
#: write the batched hit counts; past that it returns and says what it dropped.
CLOSE_WAIT_S = 2.0

_open_caches: weakref.WeakSet[Cache] = weakref.WeakSet()


class Cache(CacheAdmin):
    """A semantic cache in one SQLite file (or one PostgreSQL schema), shared by every
    process that opens it. Use :func:`semcache.open` to create one.

    Thread-safe and fork-safe (a child process reconnects). See docs/configuration.md for
    every setting: ``embedder``, ``similarity_threshold``, ``max_entries``, ``ttl``,
    ``namespace``, ``refresh_on_access``, ``store_prompts`` and ``guard`` are stored in the
    file when given (and read from it when omitted); ``defaults`` gives values used only
    when the file is new. ``hash_only`` (exact tier only), ``dim``/``seed``/``encoder``
    (vectors only), ``readonly``, ``clock``, ``use_mirror`` and ``schema`` (PostgreSQL)
    apply to this process only.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 embedder: str | Embedder | None = UNSET,
                 similarity_threshold: Any = UNSET, max_entries: Any = UNSET, ttl: Any = UNSET,
                 namespace: Any = UNSET, refresh_on_access: Any = UNSET,
                 store_prompts: Any = UNSET, guard: Any = UNSET, hash_only: bool = False,
                 dim: int | None = None, seed: int | None = None,
                 encoder: BinaryEncoder | None = None,
                 readonly: bool = False, clock: Callable[[], float] = time.time,
                 use_mirror: bool = True, defaults: dict[str, Any] | None = None,
                 schema: str | None = None) -> None:
        given = {"similarity_threshold": similarity_threshold, "max_entries": max_entries,
                 "ttl": ttl, "namespace": namespace, "refresh_on_access": refresh_on_access,
                 "store_prompts": store_prompts, "guard": guard}
        self._settings = CacheSettings.check_arguments(given, defaults, hash_only)
        store, created = open_store(path, readonly=readonly, schema=schema)
        try:
            identity = resolve_identity(store, embedder=embedder, dim=dim, seed=seed,
                                        encoder=encoder, hash_only=hash_only)
            self._settings.load(store, identity.name)
            search = None
            if identity.encoder is not None:
                from semcache.search import make_search

                search = make_search(store, identity.encoder, use_mirror=use_mirror)
        except BaseException:
            store.close()
            # A failed open leaves no file behind - unless another open pinned it meanwhile
            # (two first opens at once: the loser must not remove the winner's cache).
            if created and "embedder" not in store.settings:
                remove_new_store(store)
            raise
        self._store = store
        self._identity = identity
        self._search = search
        self.hash_only = hash_only
        self._clock = clock
        self._gate = Gate(store.location)
        self._batcher = HitBatcher(store, getattr(search, "apply", None), clock,
                                   background=_background_work(store) if search else None)
        self._pipeline = LookupPipeline(
            store=store, search=search, embedder=None if hash_only else identity.embedder,
            dim=identity.dim, batcher=self._batcher, clock=clock,
            threshold=self._settings.threshold, refresh=self._settings.refresh_on_access,
            guard=self._settings.guard)
        self._entries = EntryFactory(self._settings.tunables, identity.encoder)
        self._coalescer = Coalescer(store)
        self._keys = PromptKeys()
        self._namespace = self._settings.tunables().namespace  # fixed once opened
        store.on_incarnation = self._replaced
        _open_caches.add(self)

    def _replaced(self) -> None:
        """The engine found another incarnation of the cache under this one (a file
        restored over, a schema dropped and created again): drop every memo of the old one
        and go on if it is pinned like this process, else refuse (its vectors would mix)."""
        self._pipeline.forget()
        self._batcher.forget()
        self._settings.reload_thresholds(self._store.settings)
        check_same_pin(self.location, self._identity, self._store.settings)

    # -- settings -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file (resolved), or the URL without its password."""
        return getattr(self._store, "path", self._store.location)

    @property
    def location(self) -> str:
        return self._store.location

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

    def _ns(self, namespace: str | None) -> str:
        return self._namespace if namespace is None else check_namespace(namespace)

    def _vector(self, value: Any) -> np.ndarray:
        """Validate a vector against the pinned dimension; returns a unit float32 vector."""
        return validate_vector(value, self._dim())

    def _vectors(self, values: list[Any]) -> np.ndarray:
        """:meth:`_vector` of each, as one (n, dim) array (identical rows, same errors)."""
        return validate_vectors(values, self._dim())

    def _dim(self) -> int:
        if self._identity.dim is None:
            raise ConfigurationError(
                f"{self.location!r} has no pinned vector dimension (hash_only cache); "
                "open it with dim= or an embedder to use vectors")
        return self._identity.dim

    # -- lookups ----------------------------------------------------------------------------

    def get(self, prompt: Any, *, namespace: str | None = None,
            exact_only: bool = False) -> Hit | None:
        """Look up a prompt (exact tier, then semantic tier) or a vector (semantic only).

        Returns a :class:`Hit` or None. Expired entries are never returned.
        """
        with self._gate:
            ns = self._namespace if namespace is None else check_namespace(namespace)
            if type(prompt) is str:  # the common case, kept lean: no Query unless it misses
                text, key = self._keys.key(prompt, ns)
                return self._pipeline.run_key(key, ns, "", text,
                                              exact_only=exact_only or self.hash_only)
            return self._pipeline.run_one(self._query(prompt, ns),
                                          exact_only=exact_only or self.hash_only)

    def get_many(self, prompts: Sequence[Any], *, namespace: str | None = None,
                 exact_only: bool = False) -> list[Hit | None]:
        """:meth:`get` for several prompts; the exact tier's misses are embedded in one batch."""
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise InvalidTypeError(f"get_many takes a list of prompts; got {type(prompts).__name__}")
        with self._gate.enter():
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

        ``key`` is the request's exact-key material (bytes or str, e.g.
        ``semcache.keys.request_key(request)``): two requests share an answer exactly when
        they share it. ``text`` (the part a paraphrase may change, e.g. the last user
        message) is embedded and compared only with entries of the same ``scope`` (e.g. the
        model, parameters and conversation prefix) and namespace. Integrations (``wrap``,
        the proxy, LangChain) go through this method and :meth:`store`.
        """
        with self._gate.enter():
            ns = self._ns(namespace)
            query = Query(request_key(check_key(key), ns), ns, check_scope(scope),
                          text=check_prompt(text, "text") if text else None)
            return self._pipeline.run([query], exact_only=exact_only or self.hash_only)[0]

    # -- writes ------------------------------------------------------------------------------

    def put(self, prompt: Any, response: Any, *, vector: Any = None, ttl: Any = UNSET,
            namespace: str | None = None, metadata: dict[str, Any] | None = None,
            tokens: int = 0) -> int:
        """Store ``response`` (any JSON value) for a prompt or a vector; returns the entry id.

        ``ttl`` in seconds (None: never expires; omitted: the cache's ttl). A put that
        returned is durable.
        """
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
                keys=self._keys, check_vectors=self._vectors)
            if texts and self._pipeline.semantic:  # embedding happens before the lock
                self._entries.attach_all([entries[i] for i in todo], self._pipeline.embed(texts))
            return write_entries(self._batcher, entries, self.max_entries, now)

    def store(self, key: bytes | str, response: Any, *, text: str | None = None,
              scope: str = "", namespace: str | None = None, ttl: Any = UNSET,
              metadata: dict[str, Any] | None = None, tokens: int = 0,
              vector: Any = None) -> int:
        """Store ``response`` for a request (see :meth:`lookup`); returns the entry id.

        ``text`` is embedded (or ``vector`` used) for the semantic tier of the entry's
        partition (namespace + ``scope``); it is also the stored prompt.
        """
        with self._gate.enter():
            ns = self._ns(namespace)
            material = check_key(key)
            text = check_prompt(text, "text") if text else None
            unit = None if vector is None else self._vector(vector)
            now = self._clock()
            entry = self._entries.new_entry(
                key=request_key(material, ns), namespace=ns, scope=check_scope(scope),
                prompt=text, response=response, vector=unit, ttl=ttl, metadata=metadata,
                tokens=tokens, now=now)
            entry.key_material = material
            if unit is None and text is not None and self._pipeline.semantic:
                self._entries.attach(entry, self._pipeline.embed([text])[0])
            return write_entries(self._batcher, [entry], self.max_entries, now)[0]

    def claim(self, key: bytes | str, *, namespace: str | None = None,
              wait: float = 30.0) -> Claim:
        """Coalesce identical misses: claim the right to fetch the answer of request
        ``key`` (the same key as :meth:`lookup`'s).

        Returns at once when nobody else is fetching it; otherwise waits (at most
        ``wait`` seconds) until the caller that is - in this process or any other sharing
        the cache - releases its claim. When ``claim.waited`` is True, look the cache up
        again before calling the model. Release the claim (``with cache.claim(...)``) after
        storing the answer, or when the call failed::

            hit = cache.lookup(key, text=text, scope=scope)
            if hit is None:
                with cache.claim(key) as claim:
                    if claim.waited:
                        hit = cache.lookup(key, text=text, scope=scope)
                    if hit is None:
                        answer = call_model()
                        cache.store(key, answer, text=text, scope=scope)
        """
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < 1e6:
            raise InvalidInputError(f"wait must be seconds in [0, 1e6); got {wait!r}")
        with self._gate.enter():
            return self._coalescer.claim(request_key(check_key(key), self._ns(namespace)),
                                         float(wait))

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
            key = vector_key(prompt, ns)
        else:
            key = prompt_key(check_prompt(prompt), ns)
        return self._delete(EntryFilter(key_hash=key))

    def clear(self, namespace: str | None = None) -> int:
        """Delete every entry (of one namespace when given); returns how many."""
        if namespace is not None:
            return self._delete(EntryFilter(namespace=check_namespace(namespace)))
        with self._gate.enter(), self._batcher.write() as w:
            return w.txn.clear_all()

    def _delete(self, where: EntryFilter) -> int:
        with self._gate.enter(), self._batcher.write() as w:
            return len(w.txn.delete(where))

    def purge_expired(self) -> int:
        """Delete expired entries now; returns how many (also counted as expirations)."""
        with self._gate.enter(), self._batcher.write() as w:
            n = w.txn.purge_expired(self._clock())
            w.count(expirations=n)
            return n

    def vacuum(self) -> dict[str, int]:
        """Purge expired entries, repair the engine's derived tables after hand-made SQL,
        compact the storage and rebuild the code mirror. Returns what was done."""
        expired = self.purge_expired()
        with self._gate.enter():
            repairs = self._store.vacuum()
            if self._search is not None:
                self._search.rebuild_now()
        return {"expired": expired, **repairs}

    # -- stats, lifecycle ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write batched access times, hit counts and counters now (raises on failure)."""
        with self._gate.enter():
            self._batcher.flush(timeout=None)

    def stats(self) -> dict[str, Any]:
        """Counters shared by every process (after flushing this one's), plus sizes."""
        with self._gate.enter():
            self._batcher.try_flush()
            c = self._store.counters()
            lookups = c["hits"] + c["misses"]
            out: dict[str, Any] = {
                name: c.get(name, 0) for name in (
                    "hits", "exact_hits", "semantic_hits", "misses", "puts", "entries",
                    "evictions", "expirations", "bytes", "tokens_saved", "guard_rejections",
                    "feedback_right", "feedback_wrong")}
            out["hit_rate"] = c["hits"] / lookups if lookups else 0.0
            out["file_bytes"] = self._store.size_bytes()
            out["embedder"] = self._identity.name
            return out

    def warmup(self) -> None:
        """Load the embedder and map the search index now, ahead of the first request
        (e.g. in a server's startup hook), instead of on the first semantic lookup."""
        with self._gate.enter():
            inner = getattr(self._identity.embedder, "inner", self._identity.embedder)
            load = getattr(inner, "load", None)
            if callable(load) and not self.hash_only:
                load()
            if self._search is not None:
                self._search.warmup()

    def close(self) -> None:
        """Flush batched updates and close. Idempotent; never blocks much longer than
        CLOSE_WAIT_S: batched hit counts that cannot be written by then (another process
        holds the write lock, the disk is full) are dropped with a warning naming them."""
        self._gate.close(self._release, wait=CLOSE_WAIT_S)
        _open_caches.discard(self)

    def _release(self) -> None:
        self._batcher.stop()
        try:
            if not self._store.readonly and self._batcher.pending:
                pending = self._batcher.describe_pending()
                if not self._batcher.flush(timeout=CLOSE_WAIT_S):
                    log.warning("semcache: closing %s: the write lock stayed busy; dropped %s",
                                self.location, pending)
        except Exception as exc:  # noqa: BLE001 - closing a cache that was read must not fail
            log.warning("semcache: closing %s: batched hit counts and access times were not "
                        "written (%s)", self.location, exc)
        finally:
            if self._search is not None:
                self._search.close()
            self._store.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._gate.closed else f"embedder={self.embedder_name!r}"
        return f"<semcache.Cache {self.location!r} {state}>"

    def memoize(self, namespace: str | None = None, ttl: Any = UNSET, *,
                semantic: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator caching a ``str -> JSON`` function (sync or async) in this cache.

        Matching is exact unless ``semantic=True`` (a summary of another text is a wrong
        answer, so paraphrase matching must be asked for)."""
        from semcache.memoize import memoize

        return memoize(self, namespace=namespace, ttl=ttl, semantic=semantic)


#: Pending entry_codes rows a flush writes (~10-20 ms under the lock).
TIMER_CATCH_UP_ROWS = 2048


def _background_work(store: Any) -> Callable[[], object] | None:
    """The engine's deferred work, done by each flush of batched hits (a write that happens
    anyway, never on an idle timer): SQLite catches its sqlite-vec table up with the
    entries this process wrote, a batch at a time, if the write lock is free."""
    if not isinstance(store, LocalCodeSource) or store.readonly:
        return None

    def catch_up() -> object:
        return store.catch_up_codes(TIMER_CATCH_UP_ROWS, 0.0) if store.codes_pending else 0

    return catch_up


def open(path: str | os.PathLike[str], **settings: Any) -> Cache:  # noqa: A001
    """Create or open the cache at ``path`` (a file, or a ``postgresql://`` URL).

    See :class:`Cache` for the settings; an unknown one raises ConfigurationError."""
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise ConfigurationError(
            f"unknown setting(s) {', '.join(unknown)} for semcache.open(); expected some of "
            f"{', '.join(sorted(_SETTINGS))} (stream replay options belong to wrap())")
    return Cache(path, **settings)


_SETTINGS = frozenset(inspect.signature(Cache.__init__).parameters) - {"self", "path"}


@atexit.register
def _close_all() -> None:
    # Access times and counters batched in memory must not be lost at exit.
    for cache in list(_open_caches):
        try:
            cache.close()
        except Exception as exc:  # noqa: BLE001 - best effort at interpreter exit
            log.warning("semcache: flushing %s at exit failed: %s", cache.location, exc)


__all__ = ["Cache", "is_vector", "open"]
