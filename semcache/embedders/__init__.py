"""Embedders: turn text into unit vectors for the semantic tier.

Backends (docs/embedders.md): ``minilm`` (all-MiniLM-L6-v2 on numpy, no torch; the default
when its runtime and weights are installed), ``sentence-transformers`` / ``st`` (any
sentence-transformers model by name, on torch: the ``[torch]`` extra), ``openai``,
``ollama`` and ``hashing`` (dependency-free). Any object with ``name``, ``dim`` and
``embed(list[str]) -> np.ndarray`` works too (and a ``load()`` method, if it has one, is what
``Cache.warmup()`` calls).

Importing this package is cheap: tokenizers, safetensors, torch, sentence_transformers and
openai are imported only when a model is loaded or a request is made.
"""

from __future__ import annotations

from typing import Any

from semcache.embedders.base import (
    Embedder,
    TrustedEmbedder,
    ValidatedEmbedder,
    check_embedder,
    check_embeddings,
    l2_normalize,
    validate_texts,
)
from semcache.embedders.hashing import HashingEmbedder
from semcache.embedders.memo import EmbeddingMemo
from semcache.embedders.minilm import MiniLMEmbedder
from semcache.embedders.models import DEFAULT_MODEL as MINILM_DEFAULT_MODEL
from semcache.embedders.models import KNOWN_DIMS as MINILM_DIMS
from semcache.embedders.models import minilm_available
from semcache.embedders.ollama import OllamaEmbedder
from semcache.embedders.openai import OpenAIEmbedder
from semcache.embedders.sbert import SentenceTransformerEmbedder, sentence_transformers_available
from semcache.errors import ConfigurationError, EmbedderMismatchError

KNOWN_BACKENDS = ("minilm", "sentence-transformers", "openai", "ollama", "hashing")
# Short names accepted in a spec; the pinned name always uses the full backend name.
_ALIASES = {"st": "sentence-transformers"}

_SPEC_HELP = (
    "known embedders: 'minilm', 'sentence-transformers:<model>' (or 'st:<model>'), 'openai', "
    "'ollama', 'hashing', or a pinned name such as 'minilm:all-MiniLM-L6-v2', "
    "'openai:text-embedding-3-small:1536', 'ollama:nomic-embed-text', 'hashing:v1:256'; "
    "or an object with name, dim and embed()"
)


def default_embedder_name() -> str:
    """``"minilm"`` when its torch-free runtime and weights are installed, else ``"hashing"``.

    See :func:`minilm_available`: checked with :func:`importlib.util.find_spec` and a few
    ``stat`` calls, so nothing heavy is imported.
    """
    return "minilm" if minilm_available() else "hashing"


def _size(kwargs: dict[str, Any], name: str, size: str, dim: int | None, spec: str) -> None:
    """The output size argument of an embedder: the size in the spec, else the stored
    ``dim``, unless the caller gave one."""
    if size:
        kwargs.setdefault(name, _parse_int(size, spec))
    elif dim is not None:
        kwargs.setdefault(name, dim)


def _parse_int(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(
            f"embedder spec {spec!r}: {text!r} is not an integer dimension"
        ) from None


def _build(spec: str, dim: int | None, kwargs: dict[str, Any]) -> Embedder:
    """Build an embedder from a short or pinned name (``dim`` from the file, if known)."""
    backend, _, rest = spec.strip().partition(":")
    backend = _ALIASES.get(backend.lower(), backend.lower())
    if backend == "hashing":
        version, _, size = rest.partition(":")
        if version not in ("", "v1"):
            raise ConfigurationError(
                f"embedder spec {spec!r}: hashing version {version!r} is unknown (this "
                "semcache has 'v1'); the file was made by a newer semcache"
            )
        _size(kwargs, "dim", size, dim, spec)
        return HashingEmbedder(**kwargs)
    if backend == "minilm":
        model = rest or kwargs.get("model_name") or MINILM_DEFAULT_MODEL
        if rest:
            kwargs.setdefault("model_name", rest)
        # A known model's size is fixed: a different stored dim is a mismatch, reported by
        # resolve_from_pinned, not a setting to pass on.
        if dim is not None and str(model).removeprefix("sentence-transformers/") not in MINILM_DIMS:
            kwargs.setdefault("dim", dim)
        return MiniLMEmbedder(**kwargs)
    if backend == "sentence-transformers":
        return _build_sentence_transformers(spec, rest, dim, kwargs)
    if backend == "openai":
        # The model id never contains ":"; the dimension is the last field.
        model, _, size = rest.partition(":")
        if model:
            kwargs.setdefault("model", model)
        _size(kwargs, "dimensions", size, dim, spec)
        return OpenAIEmbedder(**kwargs)
    if backend == "ollama":
        # Ollama model names may carry a tag ("all-minilm:l6-v2"): keep everything after
        # the first colon.
        if rest:
            kwargs.setdefault("model", rest)
        if dim is not None:
            kwargs.setdefault("dim", dim)
        return OllamaEmbedder(**kwargs)
    raise ConfigurationError(f"unknown embedder {spec!r}; {_SPEC_HELP}")


def _build_sentence_transformers(
    spec: str, model: str, dim: int | None, kwargs: dict[str, Any]
) -> Embedder:
    """``sentence-transformers:<model>``: the model id is everything after the first colon."""
    if model:
        kwargs.setdefault("model_name", model)
    if "model_name" not in kwargs:
        raise ConfigurationError(
            f"embedder spec {spec!r} names no model; expected 'sentence-transformers:<model>', "
            "e.g. 'sentence-transformers:all-mpnet-base-v2'"
        )
    short = str(kwargs["model_name"]).removeprefix("sentence-transformers/")
    if dim is not None and short not in MINILM_DIMS:
        kwargs.setdefault("dim", dim)
    return SentenceTransformerEmbedder(**kwargs)


def get_embedder(spec: str | Any | None = None, **kwargs: Any) -> Embedder:
    """Return an embedder for ``spec``.

    ``spec`` is ``None`` (the default backend, see :func:`default_embedder_name`), a backend
    name (``"minilm"``, ``"openai"``, ``"ollama"``, ``"hashing"``), a model of a backend
    (``"minilm:all-MiniLM-L12-v2"``, ``"sentence-transformers:all-mpnet-base-v2"`` or
    ``"st:all-mpnet-base-v2"``), a pinned full name as
    stored in a cache file (``"hashing:v1:256"``, ``"openai:text-embedding-3-large:256"``),
    or an embedder object (validated by :func:`check_embedder`). ``kwargs`` go to the
    backend's constructor (``api_key=``, ``host=``, ``dim=``...).

    Raises :class:`ConfigurationError` for an unknown name (listing the known ones) or a
    bad setting, :class:`InvalidTypeError` for an object that is not an embedder.
    """
    if spec is None:
        spec = default_embedder_name()
    if not isinstance(spec, str):
        if kwargs:
            raise ConfigurationError(
                f"options {sorted(kwargs)} apply to an embedder name, not to an embedder object"
            )
        return check_embedder(spec)
    if not spec.strip():
        raise ConfigurationError(f"empty embedder name; {_SPEC_HELP}")
    return _build(spec, None, dict(kwargs))


def resolve_from_pinned(name: str, dim: int, **kwargs: Any) -> Embedder:
    """Rebuild the embedder a cache file was created with, from its stored name and dim.

    ``kwargs`` supply what the file does not store (``api_key=``, ``host=``...).
    Raises :class:`ConfigurationError` if the name is not a built-in embedder (the file was
    made with a custom one: pass that object as ``embedder=``), and
    :class:`EmbedderMismatchError` if the rebuilt embedder's name or dim differs from the
    stored ones.
    """
    backend = name.partition(":")[0].lower() if isinstance(name, str) else ""
    if backend not in KNOWN_BACKENDS:
        raise ConfigurationError(
            f"the cache file was created with embedder {name!r}, which is not built in; "
            f"pass the same embedder object as embedder= ({_SPEC_HELP})"
        )
    embedder = _build(name, dim, dict(kwargs))
    if embedder.name != name or embedder.dim != dim:
        raise EmbedderMismatchError(
            f"the cache file pins embedder {name!r} (dim {dim}), but it rebuilds as "
            f"{embedder.name!r} (dim {embedder.dim})"
        )
    return embedder


__all__ = [
    "KNOWN_BACKENDS",
    "Embedder",
    "EmbeddingMemo",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "OllamaEmbedder",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "TrustedEmbedder",
    "ValidatedEmbedder",
    "check_embedder",
    "check_embeddings",
    "default_embedder_name",
    "get_embedder",
    "l2_normalize",
    "minilm_available",
    "resolve_from_pinned",
    "sentence_transformers_available",
    "validate_texts",
]
