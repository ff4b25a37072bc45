"""The public facade: :func:`open` and :class:`Cache`.

Data flow of a lookup (docs/architecture.md has the diagram)::

    get(text) -> exact key (sha256) -> entries.key_hash index        -> Hit(kind="exact")
              -> embed (memoized) -> 256-bit code -> mirror Hamming scan (partition, expiry)
              -> rescoring: exact cosine on the stored float vectors -> Hit(kind="semantic")

Writes embed first (outside any lock), then take the cross-process write lock for one
SQLite transaction, then update the code mirror before releasing the lock.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from zstandard import ZstdError

from semcache.errors import (
    CacheClosedError,
    CacheFileError,
    ConfigurationError,
    CorruptCacheError,
    EmbedderMismatchError,
    InvalidInputError,
    InvalidTypeError,
)
from semcache.settings import (
    CODE_BITS,
    DEFAULT_SEED,
    DEFAULT_THRESHOLDS,
    FALLBACK_THRESHOLD,
    UNSET,
    Tunables,
    merge_tunables,
    validate_tunables,
)
from semcache.store.base import AccessUpdate, Changes, EntryRow, NewEntry
from semcache.store.codecs import (
    decode_metadata,
    decompress_response,
    encode_metadata,
    encode_response,
    encode_vector,
    loads,
)
from semcache.store.sqlite import SQLiteStore, WriteTxn
from semcache.validation import check_entry_id, check_namespace, check_prompt, check_ttl

log = logging.getLogger("semcache")

#: How many Hamming candidates are rescored with exact cosine.
RESCORE_K = 16
#: Batched access-time updates and counters are written at least this often (seconds).
FLUSH_INTERVAL = 1.0
# Flushes are time-driven; the count bound only caps memory (~100 B per pending entry).
_FLUSH_MAX_PENDING = 20_000

#: Bytes of decompressed responses kept per process (see ResponseMemo).
RESPONSE_MEMO_BYTES = 32 * 1024 * 1024

_open_caches: weakref.WeakSet[Cache] = weakref.WeakSet()


class ResponseMemo:
    """Decompressed JSON of recently hit entries, by entry id.

    An entry's content never changes under its id (a replacement gets a new id and
    SQLite still decides whether the id is alive), so a repeated hit can skip zstd.
    Values are decoded afresh on every hit: callers may mutate what they get.
    """

    def __init__(self, budget: int = RESPONSE_MEMO_BYTES) -> None:
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._budget = budget

    def decode(self, entry_id: int, blob: bytes) -> Any:
        raw = self._items.get(entry_id)
        if raw is None:
            raw = decompress_response(blob)
            self._items[entry_id] = raw
            self._bytes += len(raw)
            while self._bytes > self._budget and self._items:
                self._bytes -= len(self._items.popitem(last=False)[1])
        else:
            self._items.move_to_end(entry_id)
        return loads(raw)


@dataclass(slots=True)
class Hit:
    """A cached answer. ``similarity`` is 1.0 for exact hits, the cosine otherwise."""

    response: Any
    kind: str
    similarity: float
    entry_id: int
    namespace: str
    created_at: float
    expires_at: float | None
    prompt: str | None = None
    metadata: dict[str, Any] | None = None
    tokens: int = 0


def _digest(kind: bytes, namespace: str, payload: bytes) -> bytes:
    return hashlib.sha256(b"%s\x00%s\x00%s" % (kind, namespace.encode("utf-8"), payload)).digest()


def prompt_key(prompt: str, namespace: str) -> bytes:
    """Exact key of a plain prompt: SHA-256 of namespace + prompt (byte-exact)."""
    return _digest(b"prompt", namespace, prompt.encode("utf-8", "surrogatepass"))


def _is_vector(value: Any) -> bool:
    if isinstance(value, str):
        return False
    return isinstance(value, np.ndarray) or (
        isinstance(value, (list, tuple)) and bool(value)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    )


class Cache:
    """A semantic cache in one SQLite file, shared by every process that opens it.

    Use :func:`semcache.open` to create one. Thread-safe; fork-safe (a child reconnects).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        embedder: Any = UNSET,
        similarity_threshold: Any = UNSET,
        max_entries: Any = UNSET,
        ttl: Any = UNSET,
        namespace: Any = UNSET,
        refresh_on_access: Any = UNSET,
        store_prompts: Any = UNSET,
        hash_only: bool = False,
        dim: int | None = None,
        seed: int | None = None,
        encoder: Any = None,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
        stream_chunk_strategy: str = "words",
        stream_chunk_length: int = 8,
        use_mirror: bool = True,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError(f"path must be a str or path-like; got {type(path).__name__}")
        self.path = os.fspath(path)
        if not self.path or self.path == ":memory:":
            raise InvalidInputError(
                f"path must name a file (semcache is persistent); got {self.path!r}")
        given = validate_tunables({
            "similarity_threshold": similarity_threshold, "max_entries": max_entries,
            "ttl": ttl, "namespace": namespace, "refresh_on_access": refresh_on_access,
            "store_prompts": store_prompts,
        })
        if not isinstance(hash_only, bool):
            raise ConfigurationError(f"hash_only must be True or False; got {hash_only!r}")
        if not isinstance(stream_chunk_length, int) or stream_chunk_length < 1:
            raise ConfigurationError(
                f"stream_chunk_length must be an int >= 1; got {stream_chunk_length!r}")
        if stream_chunk_strategy not in ("words", "sentences", "paragraphs", "characters"):
            raise ConfigurationError(
                "stream_chunk_strategy must be one of words, sentences, paragraphs, characters; "
                f"got {stream_chunk_strategy!r}")
        if encoder is not None:
            # The binary cache's style: BinaryEncoder(embedding_dim, code_bits=256) defines
            # a vectors-only cache of that dimension and projection seed.
            dim, seed = self._from_encoder(encoder, dim, seed)
        self._clock = clock
        self.hash_only = hash_only
        self.stream_chunk_strategy = stream_chunk_strategy
        self.stream_chunk_length = stream_chunk_length
        self._closed = False
        self._lock = threading.RLock()
        self._pending_access: dict[int, AccessUpdate] = {}
        self._pending_counts: dict[str, int] = {}
        self._last_flush = clock()
        self._partitions: dict[tuple[str, str], int] = {}
        self._responses = ResponseMemo()

        self._store = SQLiteStore(self.path, readonly=readonly)
        try:
            self._embedder, self._dim, self.embedder_name = self._resolve_embedder(
                embedder, dim, given, seed)
            self._tunables: Tunables
            self._tunables, to_write = merge_tunables(given, self._store.settings)
            if to_write and not self._store.readonly:
                self._store.write_settings(to_write)
            self._encoder = None
            self._index = None
            if self._dim is not None:
                from semcache.kernels.projection import BinaryEncoder
                from semcache.search import SemanticIndex

                self._encoder = BinaryEncoder(
                    self._dim, CODE_BITS, int(self._store.settings["projection_seed"]))
                self._index = SemanticIndex(
                    self._store, self.path + "-codes", self._store.settings["db_uid"],
                    use_mirror=use_mirror)
        except BaseException:
            self._store.close()
            raise
        _open_caches.add(self)

    # -- settings -----------------------------------------------------------------------

    def _resolve_embedder(self, embedder: Any, dim: int | None, given: dict[str, Any],
                          seed: int | None) -> tuple[Any, int | None, str | None]:
        """Pin the embedder in a new file, or check the argument against the pinned one."""
        settings = self._store.settings
        pinned, pinned_dim = settings.get("embedder"), settings.get("dim")
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            raise ConfigurationError(f"dim must be an int >= 1; got {dim!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ConfigurationError(f"seed must be an int >= 0; got {seed!r}")
        obj: Any = None
        if embedder is UNSET and dim is not None:
            embedder = None  # vector-only use: open(path, dim=1536)
        if embedder is None:
            name = "none"
            if dim is None and pinned_dim is None:
                raise ConfigurationError("embedder=None (vectors only) needs dim=<vector length>")
            edim = dim if dim is not None else int(pinned_dim)  # type: ignore[arg-type]
        elif embedder is UNSET:
            if pinned is not None:
                name, edim = pinned, int(pinned_dim)  # type: ignore[arg-type]
                obj = self._embedder_from_pinned(name, edim)
            elif self.hash_only:
                return None, None, None
            else:
                from semcache.embedders import default_embedder_name, get_embedder

                obj = get_embedder(default_embedder_name())
                name, edim = obj.name, int(obj.dim)
        else:
            from semcache.embedders import get_embedder

            obj = get_embedder(embedder)
            name, edim = obj.name, int(obj.dim)
        if dim is not None and dim != edim:
            raise ConfigurationError(f"dim={dim} does not match embedder {name!r} (dim {edim})")
        if pinned is not None and (pinned != name or int(pinned_dim) != edim):  # type: ignore[arg-type]
            raise EmbedderMismatchError(
                f"{self.path!r} was created with embedder {pinned!r} (dim {pinned_dim}); "
                f"got {name!r} (dim {edim}). Vectors of different models cannot be compared: "
                "open it without embedder= (or with the same one), or use another file"
            )
        stored_seed = settings.get("projection_seed")
        if seed is not None and stored_seed is not None and int(stored_seed) != seed:
            raise ConfigurationError(
                f"{self.path!r} uses projection seed {stored_seed}; got seed={seed}")
        if pinned is None and not self._store.readonly:
            self._store.write_settings({
                "embedder": name, "dim": str(edim), "code_bits": str(CODE_BITS),
                "projection_seed": str(DEFAULT_SEED if seed is None else seed),
                "db_uid": settings.get("db_uid") or uuid.uuid4().hex,
            })
        if obj is not None:
            from semcache.embedders.memo import EmbeddingMemo

            obj = EmbeddingMemo(obj)
        return obj, edim, name

    @staticmethod
    def _from_encoder(encoder: Any, dim: int | None, seed: int | None) -> tuple[int, int]:
        from semcache.kernels.projection import BinaryEncoder

        if not isinstance(encoder, BinaryEncoder):
            raise InvalidTypeError(
                f"encoder must be a semcache.BinaryEncoder; got {type(encoder).__name__}")
        if encoder.code_bits != CODE_BITS:
            raise ConfigurationError(
                f"semcache files use {CODE_BITS}-bit codes; got code_bits={encoder.code_bits}")
        for name, given, own in (("dim", dim, encoder.embedding_dim), ("seed", seed, encoder.seed)):
            if given is not None and given != own:
                raise ConfigurationError(f"{name}={given} conflicts with the encoder's {own}")
        return encoder.embedding_dim, encoder.seed

    @staticmethod
    def _embedder_from_pinned(name: str, dim: int) -> Any:
        if name == "none":
            return None
        from semcache.embedders import resolve_from_pinned

        try:
            return resolve_from_pinned(name, dim)
        except ConfigurationError as exc:
            # A custom embedder cannot be rebuilt from its name: vectors still work.
            log.info("semcache: embedder %r not rebuilt (%s); text is exact-only", name, exc)
            return None

    @property
    def similarity_threshold(self) -> float:
        t = self._tunables.similarity_threshold
        if t is not None:
            return t
        family = (self.embedder_name or "").split(":", 1)[0]
        return DEFAULT_THRESHOLDS.get(family, FALLBACK_THRESHOLD)

    @property
    def namespace(self) -> str:
        return self._tunables.namespace

    @property
    def ttl(self) -> float | None:
        return self._tunables.ttl

    @property
    def max_entries(self) -> int | None:
        return self._tunables.max_entries

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def embedder(self) -> Any:
        return self._embedder

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting in force (file-defining and tunable)."""
        t = self._tunables
        return {
            "path": self.path, "embedder": self.embedder_name, "dim": self._dim,
            "code_bits": CODE_BITS, "projection_seed": self._store.settings.get("projection_seed"),
            "similarity_threshold": self.similarity_threshold, "max_entries": t.max_entries,
            "ttl": t.ttl, "namespace": t.namespace, "refresh_on_access": t.refresh_on_access,
            "store_prompts": t.store_prompts, "hash_only": self.hash_only,
        }

    # -- helpers --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise CacheClosedError(f"cache {self.path!r} is closed")

    def _ns(self, namespace: str | None) -> str:
        return self._tunables.namespace if namespace is None else check_namespace(namespace)

    def _vector(self, value: Any) -> np.ndarray:
        """Validate a vector against the pinned dimension; returns normalized float32."""
        from semcache.kernels.projection import validate_vector

        if self._dim is None:
            raise ConfigurationError(
                f"{self.path!r} has no pinned vector dimension (hash_only cache); "
                "open it with dim= or an embedder to use vectors")
        return validate_vector(np.asarray(value), self._dim)

    def _semantic_enabled(self) -> bool:
        return self._index is not None and not self.hash_only

    def _embed(self, texts: list[str]) -> np.ndarray | None:
        if not self._semantic_enabled() or self._embedder is None:
            return None
        from semcache.kernels.projection import validate_vector

        out = self._embedder.embed(texts)
        return np.stack([validate_vector(v, self._dim) for v in out])  # type: ignore[arg-type]

    def _count(self, **deltas: int) -> None:
        for k, v in deltas.items():
            self._pending_counts[k] = self._pending_counts.get(k, 0) + v

    def _hit_from_row(self, row: EntryRow, kind: str, similarity: float, now: float) -> Hit:
        """Build the Hit and batch the hit's effects (access time, refresh, counters)."""
        expires = row.expires_at
        update = self._pending_access.get(row.id)
        if update is None:
            update = self._pending_access[row.id] = AccessUpdate(accessed_at=now)
        elif update.expires_at is not None and expires is not None:
            expires = max(expires, update.expires_at)
        if row.ttl is not None and self._tunables.refresh_on_access:
            expires = update.expires_at = now + row.ttl
        if now > update.accessed_at:
            update.accessed_at = now
        update.hits += 1
        counts = self._pending_counts
        counts["hits"] = counts.get("hits", 0) + 1
        kind_key = "exact_hits" if kind == "exact" else "semantic_hits"
        counts[kind_key] = counts.get(kind_key, 0) + 1
        if row.tokens:
            counts["tokens_saved"] = counts.get("tokens_saved", 0) + row.tokens
        try:
            response = self._responses.decode(row.id, row.response)
            metadata = None if row.metadata is None else decode_metadata(row.metadata)
        except (ZstdError, ValueError, TypeError) as exc:
            raise self._corrupt_entry(row.id, exc) from None
        return Hit(
            response=response, kind=kind, similarity=similarity,
            entry_id=row.id, namespace=row.namespace, created_at=row.created_at,
            expires_at=expires, prompt=row.prompt, metadata=metadata, tokens=row.tokens,
        )

    def _corrupt_entry(self, entry_id: int, exc: BaseException) -> CorruptCacheError:
        return CorruptCacheError(
            f"entry {entry_id} of cache file {self.path!r} is corrupt "
            f"({type(exc).__name__}: {exc}); delete it (cache.delete({entry_id})) "
            "or delete the file to start a new cache")

    def _alive(self, row: EntryRow, now: float) -> bool:
        if row.expires_at is None or row.expires_at > now:
            return True
        pending = self._pending_access.get(row.id)
        return pending is not None and pending.expires_at is not None and pending.expires_at > now

    def _partition(self, namespace: str, scope: str) -> int | None:
        pid = self._partitions.get((namespace, scope))
        if pid is None:
            pid = self._store.find_partition(namespace, scope)
            if pid is not None:
                self._partitions[(namespace, scope)] = pid
        return pid

    # -- lookups ---------------------------------------------------------------------------

    def _lookup(self, key: bytes | None, namespace: str, scope: str,
                vector: np.ndarray | None, now: float) -> Hit | None:
        """Exact tier by key, then semantic tier by vector; no counting of misses."""
        if key is not None:
            row = self._store.get_by_key(key)
            if row is not None and self._alive(row, now):
                return self._hit_from_row(row, "exact", 1.0, now)
        if vector is None or self._index is None:
            return None
        pid = self._partition(namespace, scope)
        if pid is None:
            return None
        best = self._rescore(vector, pid, now)
        if best is None:
            return None
        row, similarity = best
        return self._hit_from_row(row, "semantic", similarity, now)

    def _rescore(self, vector: np.ndarray, partition_id: int,
                 now: float) -> tuple[EntryRow, float] | None:
        """Hamming candidates from the index, decided by exact cosine on stored vectors."""
        return self._index.best(vector, partition_id, now, self.similarity_threshold, self._alive)  # type: ignore[union-attr]

    def get(self, prompt: Any, *, namespace: str | None = None,
            exact_only: bool = False) -> Hit | None:
        """Look up a prompt (exact tier, then semantic tier) or a vector (semantic only).

        Returns a :class:`Hit` or None. Expired entries are never returned.
        """
        self._check_open()
        ns = self._ns(namespace)
        with self._lock:
            now = self._clock()
            self._maybe_flush(now)
            if _is_vector(prompt):
                vec = self._vector(prompt)
                hit = self._lookup(None, ns, "", vec, now)
            else:
                text = check_prompt(prompt)
                key = prompt_key(text, ns)
                hit = self._lookup(key, ns, "", None, now)
                if hit is None and not exact_only and self._semantic_enabled():
                    vectors = self._embed([text])
                    if vectors is not None:
                        hit = self._lookup(None, ns, "", vectors[0], now)
            if hit is None:
                self._count(misses=1)
            return hit

    def get_many(self, prompts: Sequence[Any], *, namespace: str | None = None,
                 exact_only: bool = False) -> list[Hit | None]:
        """Like :meth:`get` for several prompts; the misses of the exact tier are embedded
        in one batch."""
        self._check_open()
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise InvalidTypeError(
                f"get_many takes a list of prompts; got {type(prompts).__name__}")
        ns = self._ns(namespace)
        items = [p if _is_vector(p) else check_prompt(p) for p in prompts]
        with self._lock:
            now = self._clock()
            self._maybe_flush(now)
            results: list[Hit | None] = [None] * len(items)
            to_embed: list[int] = []
            for i, item in enumerate(items):
                if isinstance(item, str):
                    results[i] = self._lookup(prompt_key(item, ns), ns, "", None, now)
                    if results[i] is None and not exact_only:
                        to_embed.append(i)
                else:
                    results[i] = self._lookup(None, ns, "", self._vector(item), now)
            if to_embed and self._semantic_enabled():
                vectors = self._embed([items[i] for i in to_embed])
                if vectors is not None:
                    for i, vec in zip(to_embed, vectors, strict=True):
                        results[i] = self._lookup(None, ns, "", vec, now)
            self._count(misses=sum(r is None for r in results))
            return results

    # -- writes ------------------------------------------------------------------------------

    def _new_entry(self, key: bytes, namespace: str, scope: str, prompt: str | None,
                   response: Any, vector: np.ndarray | None, ttl: Any, metadata: Any,
                   tokens: int, now: float) -> NewEntry:
        ttl_s = self._tunables.ttl if ttl is UNSET else check_ttl(ttl)
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise InvalidInputError(f"tokens must be an int >= 0; got {tokens!r}")
        code = None
        if vector is not None and self._encoder is not None:
            code = self._encoder.encode_unit(vector).tobytes()
        return NewEntry(
            key_hash=key, namespace=namespace, scope=scope,
            prompt=prompt if self._tunables.store_prompts else None,
            response=encode_response(response), metadata=encode_metadata(metadata),
            tokens=tokens, created_at=now,
            expires_at=None if ttl_s is None else now + ttl_s, ttl=ttl_s,
            code=code, vector=None if code is None else encode_vector(vector),  # type: ignore[arg-type]
        )

    def _prepare(self, prompt: Any, response: Any, namespace: str, vector: Any, ttl: Any,
                 metadata: Any, tokens: int, now: float) -> tuple[NewEntry, str | None]:
        """Validate and encode one put; returns the entry and the text still to embed."""
        if _is_vector(prompt):
            if vector is not None:
                raise InvalidInputError("pass the vector either as the prompt or as vector=")
            vec = self._vector(prompt)
            key = _digest(b"vector", namespace, np.asarray(prompt, dtype="<f4").tobytes())
            return self._new_entry(key, namespace, "", None, response, vec, ttl, metadata,
                                   tokens, now), None
        text = check_prompt(prompt)
        vec = None if vector is None else self._vector(vector)
        entry = self._new_entry(prompt_key(text, namespace), namespace, "", text, response,
                                vec, ttl, metadata, tokens, now)
        embed_text = text if vec is None and self._semantic_enabled() \
            and self._embedder is not None else None
        return entry, embed_text

    def _attach_vectors(self, entries: list[NewEntry], texts: list[str | None]) -> None:
        todo = [i for i, t in enumerate(texts) if t is not None]
        if not todo:
            return
        vectors = self._embed([texts[i] for i in todo])  # type: ignore[misc]
        if vectors is None:
            return
        assert self._encoder is not None
        for i, vec in zip(todo, vectors, strict=True):
            entries[i].code = self._encoder.encode_unit(vec).tobytes()
            entries[i].vector = encode_vector(vec)

    def put(self, prompt: Any, response: Any, *, vector: Any = None, ttl: Any = UNSET,
            namespace: str | None = None, metadata: dict[str, Any] | None = None,
            tokens: int = 0) -> int:
        """Store ``response`` (any JSON-serializable value) for a prompt or a vector.

        ``ttl`` in seconds (None: never expires; default: the cache's ttl). Returns the
        entry id. A put that returned is durable.
        """
        return self.put_many([(prompt, response)], vector=vector, ttl=ttl,
                             namespace=namespace, metadata=metadata, tokens=tokens)[0]

    def put_many(self, items: Iterable[tuple[Any, Any]], *, vector: Any = None,
                 ttl: Any = UNSET, namespace: str | None = None,
                 metadata: dict[str, Any] | None = None, tokens: int = 0) -> list[int]:
        """Store several (prompt, response) pairs in one transaction (all or nothing)."""
        self._check_open()
        ns = self._ns(namespace)
        now = self._clock()
        entries: list[NewEntry] = []
        texts: list[str | None] = []
        for item in items:
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidTypeError(
                    f"put_many takes (prompt, response) pairs; got {type(item).__name__}")
            entry, text = self._prepare(item[0], item[1], ns, vector, ttl, metadata, tokens, now)
            entries.append(entry)
            texts.append(text)
        self._attach_vectors(entries, texts)  # embedding happens before the lock
        return self._write_entries(entries)

    def _write_entries(self, entries: list[NewEntry]) -> list[int]:
        if not entries:
            return []
        with self._lock, self._write() as txn:
            ids = [txn.insert(e) for e in entries]
            self._count(puts=len(entries))
            self._enforce_limit(txn)
            return ids

    def _enforce_limit(self, txn: WriteTxn) -> None:
        limit = self._tunables.max_entries
        if limit is None:
            return
        excess = txn.entry_count() - limit
        if excess <= 0:
            return
        expired = txn.purge_expired(self._clock())
        self._count(expirations=expired)
        excess -= expired
        if excess > 0:
            self._count(evictions=txn.evict_lru(excess))

    def _write(self, timeout: float | None = None) -> Any:
        """A write transaction that also flushes batched hits and counters."""
        on_commit = self._index.apply if self._index is not None else None
        return _FlushingWrite(self, on_commit, timeout)

    # -- request-level API used by the integrations ------------------------------------------

    def _request_key(self, key: bytes, namespace: str) -> bytes:
        return _digest(b"request", namespace, key)

    def _lookup_request(self, key: bytes, *, namespace: str, scope: str,
                        text: str | None) -> Hit | None:
        """Exact lookup by a request key, then semantic search in (namespace, scope)."""
        self._check_open()
        ns = check_namespace(namespace)
        with self._lock:
            now = self._clock()
            self._maybe_flush(now)
            hit = self._lookup(self._request_key(key, ns), ns, scope, None, now)
            if hit is None and text and self._semantic_enabled():
                vectors = self._embed([check_prompt(text)])
                if vectors is not None:
                    hit = self._lookup(None, ns, scope, vectors[0], now)
            if hit is None:
                self._count(misses=1)
            return hit

    def _store_request(self, key: bytes, response: Any, *, namespace: str, scope: str,
                       text: str | None, ttl: Any = UNSET, metadata: Any = None,
                       tokens: int = 0) -> int:
        """Store a response under a request key; ``text`` is embedded for the semantic tier."""
        self._check_open()
        ns = check_namespace(namespace)
        now = self._clock()
        entry = self._new_entry(self._request_key(key, ns), ns, scope, text, response, None,
                                ttl, metadata, tokens, now)
        embed_text = check_prompt(text) if text else None
        self._attach_vectors([entry], [embed_text if self._semantic_enabled() else None])
        return self._write_entries([entry])[0]

    # -- removal -------------------------------------------------------------------------------

    def delete(self, entry_id: int) -> bool:
        """Delete one entry by id; True if it existed."""
        self._check_open()
        check_entry_id(entry_id)
        with self._lock, self._write() as txn:
            return bool(txn.delete_ids([entry_id]))

    def invalidate(self, prompt: Any, namespace: str | None = None) -> int:
        """Delete the exact entry for a prompt (or vector); returns how many were deleted."""
        self._check_open()
        ns = self._ns(namespace)
        if _is_vector(prompt):
            self._vector(prompt)
            key = _digest(b"vector", ns, np.asarray(prompt, dtype="<f4").tobytes())
        else:
            key = prompt_key(check_prompt(prompt), ns)
        with self._lock, self._write() as txn:
            return len(txn.delete_where("key_hash = ?", (key,)))

    def clear(self, namespace: str | None = None) -> int:
        """Delete every entry (of one namespace when given); returns how many."""
        self._check_open()
        with self._lock, self._write() as txn:
            if namespace is None:
                return txn.clear_all()
            return len(txn.delete_where("namespace = ?", (check_namespace(namespace),)))

    def purge_expired(self) -> int:
        """Delete expired entries now; returns how many (also counted as expirations)."""
        self._check_open()
        with self._lock, self._write() as txn:
            n = txn.purge_expired(self._clock())
            self._count(expirations=n)
            return n

    def vacuum(self) -> dict[str, int]:
        """Purge expired entries, repair the sqlite-vec table after hand-made SQL, rebuild
        the code mirror, and compact the file. Returns what was done."""
        self._check_open()
        with self._lock:
            with self._write() as txn:
                expired = txn.purge_expired(self._clock())
                self._count(expirations=expired)
                orphans, added = txn.repair_codes()
            self._store.vacuum()
            if self._index is not None and self._store.lock is not None:
                with self._store.lock.hold():
                    self._index.rebuild()
        return {"expired": expired, "orphan_codes": orphans, "missing_codes": added}

    # -- batching of hits and counters -------------------------------------------------------------

    def _maybe_flush(self, now: float) -> None:
        if not (self._pending_access or self._pending_counts):
            return
        if now - self._last_flush < FLUSH_INTERVAL and \
                len(self._pending_access) < _FLUSH_MAX_PENDING:
            return
        # The hot path never waits for another writer: try, and try again next time.
        if self._store.readonly:
            return
        self._try_flush(timeout=0)

    def _try_flush(self, timeout: float | None) -> bool:
        if self._store.lock is None:
            return False
        if not self._store.lock.acquire(timeout=timeout):
            return False
        try:
            with self._write():
                pass  # _FlushingWrite writes the pending updates
        finally:
            self._store.lock.release()
        return True

    def flush(self) -> None:
        """Write batched access times, hit counts and counters now."""
        self._check_open()
        with self._lock:
            if (self._pending_access or self._pending_counts) and not self._store.readonly:
                self._try_flush(timeout=None)

    # -- stats, lifecycle ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters shared by every process (after flushing this one's), plus sizes."""
        self.flush()
        c = self._store.counters()
        lookups = c["hits"] + c["misses"]
        out: dict[str, Any] = {
            "hits": c["hits"], "exact_hits": c["exact_hits"],
            "semantic_hits": c["semantic_hits"], "misses": c["misses"],
            "hit_rate": c["hits"] / lookups if lookups else 0.0,
            "puts": c["puts"], "entries": c["entries"], "evictions": c["evictions"],
            "expirations": c["expirations"], "bytes": c["bytes"],
            "tokens_saved": c["tokens_saved"],
        }
        out["file_bytes"] = sum(
            os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))
        return out

    def close(self) -> None:
        """Flush batched updates and close the file. Idempotent.

        If the batched hit counts and access times cannot be written (disk full, I/O
        error), they are dropped with a warning: closing a cache that was only read must
        not fail. Call :meth:`flush` first to see such errors.
        """
        if self._closed:
            return
        with self._lock:
            try:
                if not self._store.readonly:
                    self.flush()
            except CacheFileError as exc:
                log.warning("semcache: batched hit counts and access times of %s were not "
                            "written at close: %s", self.path, exc)
            finally:
                self._closed = True
                if self._index is not None:
                    self._index.close()
                self._store.close()
                _open_caches.discard(self)

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"embedder={self.embedder_name!r}"
        return f"<semcache.Cache {self.path!r} {state}>"

    def memoize(self, namespace: str | None = None, ttl: Any = UNSET,
                exact_only: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator caching a ``str -> JSON`` function (sync or async) in this cache."""
        from semcache.memoize import memoize

        kwargs: dict[str, Any] = {"namespace": namespace, "exact_only": exact_only}
        if ttl is not UNSET:
            kwargs["ttl"] = ttl
        return memoize(self, **kwargs)


class _FlushingWrite:
    """A store write that also writes this process's batched hits and counters.

    If the transaction fails, the batched updates are put back for the next flush and the
    counts made inside the transaction (puts, evictions) are dropped with it.
    """

    def __init__(self, cache: Cache, on_commit: Callable[[Changes], None] | None,
                 timeout: float | None) -> None:
        self._cache = cache
        self._cm = cache._store.write(on_commit=on_commit, timeout=timeout)
        self._txn: WriteTxn | None = None

    def __enter__(self) -> WriteTxn:
        c = self._cache
        self._txn = txn = self._cm.__enter__()
        self._access, self._counts = c._pending_access, c._pending_counts
        c._pending_access, c._pending_counts = {}, {}
        try:
            if self._access:
                txn.apply_access(self._access)
        except BaseException as exc:
            self._restore()
            self._cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return txn

    def _restore(self) -> None:
        c = self._cache
        for k, v in self._access.items():
            c._pending_access.setdefault(k, v)
        c._pending_counts = dict(self._counts)

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool | None:
        c = self._cache
        assert self._txn is not None
        if et is not None:
            self._restore()
            return self._cm.__exit__(et, ev, tb)
        counts = dict(self._counts)
        for k, v in c._pending_counts.items():  # counted inside the transaction
            counts[k] = counts.get(k, 0) + v
        try:
            self._txn.add_counters(counts)
        except BaseException as exc:
            self._restore()
            self._cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        try:
            result = self._cm.__exit__(None, None, None)  # COMMIT, then the mirror update
        except BaseException:
            self._restore()
            raise
        c._pending_counts = {}
        c._last_flush = c._clock()
        return result


def open(path: str | os.PathLike[str], **settings: Any) -> Cache:  # noqa: A001
    """Create or open the cache file at ``path``. See :class:`Cache` for settings."""
    return Cache(path, **settings)


@atexit.register
def _close_all() -> None:
    # Access times and counters batched in memory must not be lost at exit.
    for cache in list(_open_caches):
        try:
            cache.close()
        except Exception as exc:  # noqa: BLE001 - best effort at interpreter exit
            log.warning("semcache: flushing %s at exit failed: %s", cache.path, exc)
