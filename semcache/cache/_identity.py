"""File identity: which embedder, dimension and projection a cache file is pinned to.

Vectors from different models (or projected with different seeds) cannot be compared, so
the first open of a file that needs vectors pins them in its settings, and every later
open either rebuilds the same embedder from the pinned name or checks that the one given
matches. The decision table:

==================  ==========================  =====================================
``embedder=``        file not pinned yet         file pinned to N (dim D)
==================  ==========================  =====================================
omitted              the default embedder*       rebuild N (custom N: vectors only)
``None``             vectors only, needs ``dim``  vectors only (``dim`` from the file)
a name or object     that embedder               must be N with dim D, else an error
==================  ==========================  =====================================

(*) ``hash_only=True`` pins nothing: exact tier only, until a later open brings vectors.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

from semcache.errors import (
    ConfigurationError,
    CorruptCacheError,
    EmbedderMismatchError,
    InvalidTypeError,
)
from semcache.kernels.projection import BinaryEncoder
from semcache.settings import CODE_BITS, DEFAULT_SEED
from semcache.store.base import Store
from semcache.validation import UNSET, check_dim, check_seed

log = logging.getLogger("semcache")


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
        from semcache.embedders.minilm import default_missing

        missing = default_missing()
        # One warning (not a log line as well: with logging unconfigured both reach stderr).
        # TODO(issue 24): once `semcache reembed SRC DST --embedder minilm` exists, say
        # here how to move a file created this way to MiniLM.
        warnings.warn(
            f"semcache: creating {location!r} with the 'hashing' embedder: the default "
            f"embedder (MiniLM) needs {'; and '.join(missing) or 'its runtime and weights'}. "
            "Paraphrases will rarely hit, and the file keeps this embedder for good: install "
            "what is missing before creating the file, or pass embedder=... explicitly "
            "(embedder='hashing' silences this warning).", UserWarning,
            stacklevel=_outside_semcache())
    return get_embedder(name)


def _outside_semcache() -> int:
    """The ``stacklevel`` of the first caller outside this package (``semcache.open``,
    ``init_cache``, the proxy...), so that a warning points at the application's line."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _chosen(embedder: Any, dim: int | None, pinned: str | None, pinned_dim: int | None,
            hash_only: bool, location: str) -> tuple[Any, str, int] | None:
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
        if hash_only:
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
            f"got {name!r} (dim {dim}). Vectors of different models cannot be compared: "
            "open it without embedder= (or with the same one), or use another file")
    if seed is not None and stored_seed is not None and int(stored_seed) != seed:
        raise ConfigurationError(f"{location!r} uses projection seed {stored_seed}; got seed={seed}")


def resolve_identity(store: Store, *, embedder: Any, dim: int | None, seed: int | None,
                     encoder: Any, hash_only: bool) -> Identity:
    """Pin the embedder in a new file, or check the arguments against the pinned one."""
    if encoder is not None:
        dim, seed = from_encoder(encoder, dim, seed)
    dim = None if dim is None else check_dim(dim)
    seed = None if seed is None else check_seed(seed)
    for _ in range(2):  # the second pass checks against a pin another open decided first
        settings = store.settings
        pinned = settings.get("embedder")
        pinned_dim = None if settings.get("dim") is None else int(settings["dim"])
        chosen = _chosen(embedder, dim, pinned, pinned_dim, hash_only, store.location)
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
    projection_seed = int(settings.get("projection_seed", DEFAULT_SEED if seed is None else seed))
    return Identity(obj, name, edim, BinaryEncoder(edim, CODE_BITS, projection_seed))


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


__all__ = ["Identity", "check_same_pin", "from_encoder", "resolve_identity"]
