"""Every setting of a cache, in one place: which settings a cache keeps, their defaults,
how arguments meet what the file stores, thresholds per namespace, and which embedder,
dimension and projection a file is pinned to.

Two kinds of settings live in the ``settings`` table:

* file-defining: schema of the codes (``code_bits``, ``projection_seed``), the embedder
  (``embedder``, ``dim``) and the file's identity (``db_uid``). Set once at creation
  (:func:`resolve_identity`); an argument that disagrees raises, because vectors from
  another model or projection cannot be compared with the stored ones.
* tunable: ``similarity_threshold``, ``max_entries``, ``max_bytes``, ``ttl``,
  ``refresh_on_access``, ``store_prompts``, ``namespace``, ``guard``; and per-namespace thresholds
  (``threshold:<namespace>``) and error bounds (``error_bound:<namespace>``). An argument
  passed to ``open`` is stored, so every process that opens the file later shares it (as
  diskcache does); an omitted one is read from the file (:class:`CacheSettings`). The
  namespace values are read again every :data:`NAMESPACE_SETTINGS_TTL`, so what one process
  sets reaches the others' open caches.

Thresholds: ``similarity_threshold`` is the default of every namespace; a namespace may
carry its own (``Cache.set_threshold``, ``semcache calibrate --apply``). Without any, the
embedder family's measured default applies (:data:`DEFAULT_THRESHOLDS` with the semantic
decision on, :data:`COSINE_ONLY_THRESHOLDS` for the cosine alone, ``guard=False``).

File identity (:func:`resolve_identity`), the decision table:

==================  ==========================  =====================================
``embedder=``        file not pinned yet         file pinned to N (dim D)
==================  ==========================  =====================================
omitted              the default embedder*       rebuild N (custom N: vectors only)
``None``             vectors only, needs ``dim``  vectors only (``dim`` from the file)
a name or object     that embedder               must be N with dim D, else an error
==================  ==========================  =====================================

(*) ``hash_only=True`` pins nothing: exact tier only, until a later open brings vectors;
neither does an open of an existing cache with ``create=False`` (operators' commands).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from semcache.errors import (
    ConfigurationError,
    CorruptCacheError,
    EmbedderMismatchError,
    InvalidTypeError,
    SemcacheError,
)
from semcache.kernels.projection import BinaryEncoder
from semcache.store.base import Store
from semcache.validation import (
    UNSET,
    check_bool,
    check_dim,
    check_error_bound,
    check_max_bytes,
    check_max_entries,
    check_namespace,
    check_seed,
    check_threshold,
    check_ttl,
)

log = logging.getLogger("semcache")

#: Default TTL: one day. ``None`` means entries never expire.
DEFAULT_TTL = 86_400.0
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_NAMESPACE = "default"
CODE_BITS = 256
DEFAULT_SEED = 0

#: Default floors (``similarity_threshold``) with the semantic decision on (``guard=True``,
#: the default), keyed by embedder family (the part of the pinned name before ':').
#: minilm: chosen by scripts/train_decision.py on the development family streams (dev and
#: dev2): the highest floor at which both reach 21% hits (decision.json "default_floor";
#: docs/quality.md, "Look-alike questions"); the others as measured before the decision.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "minilm": 0.84,
    # openai and ollama are NOT measured here (no network, no Ollama server): 0.90 is a
    # starting point; run scripts/quality.py with that embedder before relying on it.
    "openai": 0.90,
    "ollama": 0.90,
    "hashing": 0.90,  # measured: spelling-only matcher; see docs/quality.md
}
#: Default floors for the cosine alone (``guard=False``): measured by scripts/quality.py on
#: the paraphrase pairs (minilm 0.92: 62% correct hits, 1.9% wrong; docs/quality.md).
COSINE_ONLY_THRESHOLDS: dict[str, float] = {
    "minilm": 0.92, "openai": 0.90, "ollama": 0.90, "hashing": 0.90,
}
FALLBACK_THRESHOLD = 0.92
#: What ``init_cache`` gives a new file (OneLLM's defaults); a file in use keeps its own
#: stored settings unless the caller passes a value explicitly (CacheSettings.load).
INIT_DEFAULTS: dict[str, Any] = {"max_entries": 1000, "similarity_threshold": 0.95,
                                 "ttl": 86_400}
#: Settings-table prefix of per-namespace thresholds.
THRESHOLD_PREFIX = "threshold:"
#: Settings-table prefix of per-namespace error bounds.
ERROR_BOUND_PREFIX = "error_bound:"


@dataclass
class Tunables:
    similarity_threshold: float | None  # None: the embedder's measured default
    max_entries: int | None
    ttl: float | None
    refresh_on_access: bool
    store_prompts: bool
    namespace: str
    guard: bool = True
    max_bytes: int | None = None  # what the entries may occupy (store.base.entry_size)
    error_bound: float | None = None


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "similarity_threshold": lambda v: None if v is None else check_threshold(v),
    "max_entries": check_max_entries,
    "ttl": check_ttl,
    "refresh_on_access": lambda v: check_bool(v, "refresh_on_access"),
    "store_prompts": lambda v: check_bool(v, "store_prompts"),
    "namespace": check_namespace,
    "guard": lambda v: check_bool(v, "guard"),
    "max_bytes": check_max_bytes,
    "error_bound": check_error_bound,
}
_DEFAULTS: dict[str, Any] = {
    "similarity_threshold": None,
    "max_entries": DEFAULT_MAX_ENTRIES,
    "ttl": DEFAULT_TTL,
    "refresh_on_access": True,
    "store_prompts": True,
    "namespace": DEFAULT_NAMESPACE,
    "guard": True,
    "max_bytes": None,
    "error_bound": None,
}
#: Names of the tunables (stored in the settings table under these names).
TUNABLES = tuple(_DEFAULTS)


def validate_tunables(args: dict[str, Any]) -> dict[str, Any]:
    """Check every explicitly passed tunable (before anything is opened or written)."""
    unknown = sorted(set(args) - set(_CHECKS))
    if unknown:
        raise ConfigurationError(f"unknown setting(s) {', '.join(unknown)}; expected some of "
                                 f"{', '.join(TUNABLES)}")
    return {name: _CHECKS[name](value) for name, value in args.items() if value is not UNSET}


def decode_stored(name: str, text: str) -> Any:
    """A tunable as stored in the settings table; raises ValueError if unusable."""
    try:
        return _CHECKS[name](json.loads(text))
    except (ValueError, TypeError, SemcacheError) as exc:
        raise ValueError(f"stored setting {name}={text!r} is invalid: {exc}") from None


def merge_tunables(given: dict[str, Any], stored: dict[str, str],
                   defaults: dict[str, Any] | None = None) -> tuple[Tunables, dict[str, str]]:
    """Tunables in force, and the settings rows to write.

    A given value is written when it differs from the stored one. ``defaults`` (already
    validated) fill in what the file does not store yet, and are written so that every
    process agrees; a value the file stores is never replaced by a default.
    """
    values: dict[str, Any] = {}
    to_write: dict[str, str] = {}
    defaults = defaults or {}
    for name, default in _DEFAULTS.items():
        if name in given or (name in defaults and name not in stored):
            values[name] = given[name] if name in given else defaults[name]
            encoded = json.dumps(values[name])
            if stored.get(name) != encoded:
                to_write[name] = encoded
        elif name in stored:
            try:
                values[name] = decode_stored(name, stored[name])
            except ValueError:
                values[name] = default  # a hand-edited bad value: fall back, don't refuse the file
        else:
            values[name] = default
    return Tunables(**values), to_write



# -- tunables in force ---------------------------------------------------------------------


#: Seconds a process decides with the namespace thresholds and error bounds it last read:
#: what another process sets (``set_threshold``, ``set_error_bound``, ``semcache calibrate
#: --apply``) takes effect here within this, at the cost of one read of the small settings
#: table per interval, paid by a semantic lookup (exact hits never read it).
NAMESPACE_SETTINGS_TTL = 1.0


class CacheSettings:
    """Tunables in force for one open cache."""

    def __init__(self, given: dict[str, Any], defaults: dict[str, Any]) -> None:
        self._given = given
        self._defaults = defaults
        self._tunables: Tunables | None = None
        self._family = ""
        self._namespace_thresholds: dict[str, float] = {}
        self._namespace_bounds: dict[str, float | None] = {}
        self._store: Store | None = None
        self._namespace_read_at = 0.0
        self._guard: Any = None

    @classmethod
    def check_arguments(cls, given: dict[str, Any], defaults: dict[str, Any] | None,
                        hash_only: bool) -> CacheSettings:
        """Validate everything before any file is opened (a bad argument creates nothing)."""
        check_bool(hash_only, "hash_only")
        checked_defaults = validate_tunables(dict(defaults or {}))
        return cls(validate_tunables(given), checked_defaults)

    def load(self, store: Store, embedder_name: str | None) -> None:
        """Merge with what the file stores; write the given values that differ.

        The defaults given to the constructor (``init_cache``'s) apply to a new cache only:
        one this open created, or one that holds no entry yet (another process's first
        open racing this one). A cache in use keeps what it stores and, for what it does
        not store, the defaults every plain ``open`` uses: ``init_cache(path)`` on a file
        an application filled must not shrink its ``max_entries`` (evicting entries) or
        change its threshold."""
        defaults = self._defaults
        if defaults and not store.created and store.counters().get("entries", 0) > 0:
            defaults = {}
        tunables, to_write = merge_tunables(self._given, store.settings, defaults)
        if to_write and not store.readonly:
            store.write_settings(to_write)
        self._tunables = tunables
        self._family = (embedder_name or "").split(":", 1)[0]
        self._store = store
        self.reload_thresholds(store.settings)

    def reload_thresholds(self, stored: dict[str, str]) -> None:
        """The namespace thresholds and error bounds of ``stored`` (read at open, again
        when the cache was replaced under us, and every :data:`NAMESPACE_SETTINGS_TTL`)."""
        self._namespace_thresholds = read_namespace_thresholds(stored)
        self._namespace_bounds = read_namespace_bounds(stored)
        self._namespace_read_at = time.monotonic()

    def _fresh(self) -> None:
        """Read the namespace values again when the last read is older than the TTL."""
        if time.monotonic() - self._namespace_read_at >= NAMESPACE_SETTINGS_TTL \
                and self._store is not None:
            self.reload_thresholds(self._store.read_settings())

    def tunables(self) -> Tunables:
        assert self._tunables is not None
        return self._tunables

    def default_threshold(self) -> float:
        """The floor in force: the stored ``similarity_threshold``, else the embedder's
        measured default - lower with the semantic decision on than for the cosine alone
        (``guard=False``), which needs a higher floor to stay as safe."""
        t = self.tunables().similarity_threshold
        if t is not None:
            return t
        table = DEFAULT_THRESHOLDS if self.tunables().guard else COSINE_ONLY_THRESHOLDS
        return table.get(self._family, FALLBACK_THRESHOLD)

    def threshold(self, namespace: str) -> float:
        self._fresh()
        own = self._namespace_thresholds.get(namespace)
        return self.default_threshold() if own is None else own

    def namespace_thresholds(self) -> dict[str, float]:
        self._fresh()
        return dict(self._namespace_thresholds)

    def set_namespace_threshold(self, store: Store, namespace: str, value: float | None) -> None:
        name = THRESHOLD_PREFIX + namespace
        if value is None:
            store.write_settings({name: "null"})
            self._namespace_thresholds.pop(namespace, None)
        else:
            checked = check_threshold(value)
            store.write_settings({name: json.dumps(checked)})
            self._namespace_thresholds[namespace] = checked

    def error_bound(self, namespace: str) -> float | None:
        """The error bound in force for ``namespace``: its own, else the cache's."""
        self._fresh()
        own = self._namespace_bounds.get(namespace)
        return self.tunables().error_bound if own is None else own

    def set_namespace_error_bound(self, store: Store, namespace: str,
                                  value: float | None) -> None:
        store.write_settings({ERROR_BOUND_PREFIX + namespace: json.dumps(value)})
        self._namespace_bounds[namespace] = value

    def refresh_on_access(self) -> bool:
        # On every hit of an entry with a ttl: the attribute, not tunables() (a call less).
        return self._tunables.refresh_on_access  # type: ignore[union-attr]

    def guard(self) -> Any:
        """The semantic decision (near-miss guard and contrast checks), or None when turned
        off (``guard=False``)."""
        if not self.tunables().guard:
            return None
        if self._guard is None:
            from semcache.guard.decision import SemanticDecision

            self._guard = SemanticDecision()
        return self._guard

    def describe(self, path: str, identity: Any, stored: dict[str, str],
                 hash_only: bool) -> dict[str, Any]:
        t = self.tunables()
        return {
            "path": path, "embedder": identity.name, "dim": identity.dim,
            "code_bits": CODE_BITS, "projection_seed": stored.get("projection_seed"),
            "similarity_threshold": self.default_threshold(), "max_entries": t.max_entries,
            "max_bytes": t.max_bytes, "ttl": t.ttl, "namespace": t.namespace,
            "refresh_on_access": t.refresh_on_access,
            "store_prompts": t.store_prompts, "guard": t.guard, "hash_only": hash_only,
            "namespace_thresholds": self.namespace_thresholds(),
            "error_bound": t.error_bound, "namespace_error_bounds": {
                ns: v for ns, v in self._namespace_bounds.items() if v is not None},
        }


def read_namespace_thresholds(stored: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, text in stored.items():
        if not name.startswith(THRESHOLD_PREFIX):
            continue
        try:
            value = json.loads(text)
            if value is not None:
                out[name[len(THRESHOLD_PREFIX):]] = check_threshold(value)
        except (ValueError, TypeError):
            log.warning("semcache: ignoring invalid stored setting %s=%r", name, text)
    return out


def read_namespace_bounds(stored: dict[str, str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, text in stored.items():
        if name.startswith(ERROR_BOUND_PREFIX):
            try:
                out[name[len(ERROR_BOUND_PREFIX):]] = check_error_bound(json.loads(text))
            except (ValueError, TypeError, SemcacheError):
                log.warning("semcache: ignoring invalid stored setting %s=%r", name, text)
    return out


# -- file identity --------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """What a cache file is pinned to, as this process will use it."""

    embedder: Any  # an EmbeddingMemo over the embedder, or None (vectors only / exact only)
    name: str | None  # the pinned name ("none" for vectors only), None when nothing pinned
    dim: int | None
    encoder: BinaryEncoder | None


def from_encoder(encoder: Any, dim: int | None, seed: int | None) -> tuple[int, int]:
    """``(dim, seed)`` of a :class:`BinaryEncoder` (the binary cache's style of open)."""
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


def _rebuild_pinned(name: str, dim: int) -> Any:
    """The embedder a file was pinned to, rebuilt from its name (None for custom ones)."""
    if name == "none":
        return None
    from semcache.embedders import resolve_from_pinned

    try:
        return resolve_from_pinned(name, dim)
    except ConfigurationError as exc:
        # A custom embedder cannot be rebuilt from its name: vectors still work.
        log.info("semcache: embedder %r not rebuilt (%s); text is exact-only", name, exc)
        return None


def _default_embedder(location: str) -> Any:
    from semcache.embedders import default_embedder_name, get_embedder

    name = default_embedder_name()
    if name == "hashing":
        from semcache.embedders.models import default_missing

        missing = default_missing()
        # One warning (not a log line as well: with logging unconfigured both reach stderr).
        warnings.warn(
            f"semcache: creating {location!r} with the 'hashing' embedder: the default "
            f"embedder (MiniLM) needs {'; and '.join(missing) or 'its runtime and weights'}. "
            "Paraphrases will rarely hit, and the cache stays pinned to this embedder: "
            "install what is missing, then move it with `semcache reembed "
            f"{_shell_word(location)} NEW_CACHE --embedder minilm`; or pass embedder=... "
            "explicitly (embedder='hashing' silences this warning).", UserWarning,
            stacklevel=_outside_semcache())
    return get_embedder(name)


def _shell_word(location: str) -> str:
    """``location`` as one word of a shell command line (a URL without its password)."""
    import shlex

    return shlex.quote(location)


def _outside_semcache() -> int:
    """The ``stacklevel`` of the first caller outside this package (``semcache.open``,
    ``init_cache``, the proxy...), so that a warning points at the application's line."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _chosen(embedder: Any, dim: int | None, pinned: str | None, pinned_dim: int | None,
            pin_default: bool, location: str) -> tuple[Any, str, int] | None:
    """(embedder object or None, name, dim) before checks; None = pin nothing."""
    if embedder is UNSET and dim is not None:
        embedder = None  # vectors only: open(path, dim=1536)
    if embedder is None:
        if dim is None and pinned_dim is None:
            raise ConfigurationError("embedder=None (vectors only) needs dim=<vector length>")
        return None, "none", dim if dim is not None else int(pinned_dim)  # type: ignore[arg-type]
    if embedder is UNSET:
        if pinned is not None and pinned_dim is not None:
            return _rebuild_pinned(pinned, pinned_dim), pinned, pinned_dim
        if not pin_default:
            return None
        obj = _default_embedder(location)
        return obj, obj.name, int(obj.dim)
    from semcache.embedders import get_embedder

    obj = get_embedder(embedder)
    return obj, obj.name, int(obj.dim)


def _check_against_file(location: str, name: str, dim: int, given_dim: int | None,
                        pinned: str | None, pinned_dim: int | None,
                        seed: int | None, stored_seed: str | None) -> None:
    if given_dim is not None and given_dim != dim:
        raise ConfigurationError(f"dim={given_dim} does not match embedder {name!r} (dim {dim})")
    if pinned is not None and (pinned != name or pinned_dim != dim):
        raise EmbedderMismatchError(
            f"{location!r} was created with embedder {pinned!r} (dim {pinned_dim}); "
            f"got {name!r} (dim {dim}). A file keeps the vectors of the embedder it is pinned "
            "to, by name (another model's cannot be compared; the same model under another "
            "runtime's name is refused too): open it without embedder= (or with the same "
            "one), or copy it with `semcache reembed`")
    if seed is not None and stored_seed is not None and int(stored_seed) != seed:
        raise ConfigurationError(f"{location!r} uses projection seed {stored_seed}; got seed={seed}")


def resolve_identity(store: Store, *, embedder: Any, dim: int | None, seed: int | None,
                     encoder: Any, pin_default: bool = True) -> Identity:
    """Pin the embedder in a new file, or check the arguments against the pinned one.
    ``pin_default=False`` (``hash_only``, ``create=False``): a file not pinned yet and no
    embedder asked for stays exact-only."""
    if encoder is not None:
        dim, seed = from_encoder(encoder, dim, seed)
    dim = None if dim is None else check_dim(dim)
    seed = None if seed is None else check_seed(seed)
    for _ in range(2):  # the second pass checks against a pin another open decided first
        settings = store.settings
        pinned = settings.get("embedder")
        pinned_dim = None if settings.get("dim") is None else int(settings["dim"])
        chosen = _chosen(embedder, dim, pinned, pinned_dim, pin_default, store.location)
        if chosen is None:
            return Identity(None, None, None, None)
        obj, name, edim = chosen
        _check_against_file(store.location, name, edim, dim, pinned, pinned_dim, seed,
                            settings.get("projection_seed"))
        if pinned is not None or store.readonly:
            break
        # The pin is decided once, in one write transaction: of two first opens at the
        # same instant, the second finds the first's pin there and is checked against it
        # on the next pass (EmbedderMismatchError for another embedder; an open that named
        # none adopts the pinned one).
        store.pin_settings({
            "embedder": name, "dim": str(edim), "code_bits": str(CODE_BITS),
            "projection_seed": str(DEFAULT_SEED if seed is None else seed),
            "db_uid": settings.get("db_uid") or uuid.uuid4().hex,
        })
    else:  # pragma: no cover - pin_settings always leaves a pin
        raise CorruptCacheError(f"{store.location!r}: the embedder pin could not be read back")
    if obj is not None:
        from semcache.embedders.memo import EmbeddingMemo

        obj = EmbeddingMemo(obj)
    if encoder is None:
        projection_seed = int(settings.get("projection_seed",
                                           DEFAULT_SEED if seed is None else seed))
        encoder = BinaryEncoder(edim, CODE_BITS, projection_seed)
    return Identity(obj, name, edim, encoder)  # a given encoder: the very object, checked


def check_same_pin(location: str, identity: Identity, stored: dict[str, str]) -> None:
    """A cache replaced under this process (another incarnation) may be used only if it is
    pinned like the one this process opened: its vectors would mix otherwise."""
    if identity.name is None:
        return  # hash-only: nothing pinned here, nothing to mix
    pinned = (stored.get("embedder"), stored.get("dim"), stored.get("projection_seed"))
    ours = (identity.name, str(identity.dim),
            None if identity.encoder is None else str(identity.encoder.seed))
    if pinned != ours:
        raise EmbedderMismatchError(
            f"{location!r} was replaced by another cache, pinned to embedder {pinned[0]!r} "
            f"(dim {pinned[1]}, seed {pinned[2]}); this process uses {ours[0]!r} (dim "
            f"{ours[1]}, seed {ours[2]}): open it again")


__all__ = [
    "CODE_BITS", "COSINE_ONLY_THRESHOLDS", "DEFAULT_MAX_ENTRIES", "DEFAULT_NAMESPACE",
    "DEFAULT_SEED", "DEFAULT_THRESHOLDS", "DEFAULT_TTL", "FALLBACK_THRESHOLD", "INIT_DEFAULTS",
    "THRESHOLD_PREFIX", "TUNABLES", "UNSET",
    "CacheSettings", "Identity", "Tunables", "check_same_pin", "decode_stored", "from_encoder",
    "merge_tunables",
    "read_namespace_thresholds", "resolve_identity", "validate_tunables",
]
