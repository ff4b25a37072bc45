"""The embedder protocol, its validation, and helpers shared by the backends.

An embedder is any object with:

- ``name: str`` -- a stable identifier pinned in the cache file (``"hashing:v1:256"``);
  two embedders with the same name must produce the same vectors for the same text.
- ``dim: int`` -- the vector length, known *without* loading a model, because the cache
  file records name and dimension at creation time, before anything heavy is loaded.
- ``embed(texts: list[str]) -> np.ndarray`` -- shape ``(len(texts), dim)``, float32,
  rows L2-normalized.

Optionally ``load() -> None``: get ready to embed (load a model, create a client), so that
the first request does not pay for it. ``Cache.warmup()`` calls it. It must be idempotent,
thread-safe and cheap once done; every built-in embedder has one (a no-op where there is
nothing to load).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from semcache.errors import EmbedderError, EmptyPromptError, InvalidTypeError, SemcacheError

logger = logging.getLogger("semcache")

# A row whose norm is below this is treated as a zero vector: it has no direction, so
# cosine similarity against it is meaningless and normalizing it would amplify noise.
_MIN_NORM = 1e-12


@runtime_checkable
class Embedder(Protocol):
    """What semcache needs from an embedder (structural: no base class required)."""

    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` into a ``(len(texts), dim)`` float32 array of unit rows."""
        ...


def validate_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list after checking every item is a non-blank ``str``.

    A bare ``str`` is rejected rather than iterated, since embedding its characters one by
    one is never what the caller meant.
    """
    if isinstance(texts, (str, bytes)):
        raise InvalidTypeError(
            f"embed() takes a list of strings, got a single {type(texts).__name__}; "
            "wrap it in a list: embed([text])"
        )
    if not isinstance(texts, Sequence):
        raise InvalidTypeError(
            f"embed() takes a list of strings, got {type(texts).__name__}"
        )
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidTypeError(
                f"embed() item {i} is {type(text).__name__}, expected str"
            )
        if not text.strip():
            raise EmptyPromptError(
                f"embed() item {i} is empty or only whitespace ({text!r}); "
                "expected non-blank text"
            )
    return out


def l2_normalize(matrix: np.ndarray, *, name: str) -> np.ndarray:
    """Return ``matrix`` as C-contiguous float32 with unit-length rows.

    Raises :class:`EmbedderError` for a zero row: it has no direction to normalize.
    """
    arr = np.ascontiguousarray(matrix, dtype=np.float32)
    if arr.size == 0:
        return arr
    # Norms in float64 so that long vectors of small values do not lose precision.
    norms = np.linalg.norm(arr.astype(np.float64, copy=False), axis=1)
    bad = np.flatnonzero(norms < _MIN_NORM)
    if bad.size:
        raise EmbedderError(
            f"embedder {name!r} returned an all-zero vector for input {int(bad[0])}; "
            "expected a non-zero vector"
        )
    arr /= norms[:, None].astype(np.float32)
    return arr


def check_embeddings(result: Any, *, n: int, dim: int, name: str) -> np.ndarray:
    """Validate the output of an ``embed`` call and return it as normalized float32.

    Checks the shape is ``(n, dim)``, the dtype is a real number type, every value is
    finite and no row is zero. Rows are re-normalized (cheap, and user embedders often
    forget), so callers can rely on unit rows. Raises :class:`EmbedderError`.
    """
    try:
        arr = np.asarray(result)
    except (TypeError, ValueError) as exc:
        raise EmbedderError(
            f"embedder {name!r} returned {type(result).__name__}, which is not an array: {exc}"
        ) from exc
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise EmbedderError(
            f"embedder {name!r} returned an array of dtype {arr.dtype}; "
            "expected float32 (or another real number type)"
        )
    if arr.shape != (n, dim):
        raise EmbedderError(
            f"embedder {name!r} returned shape {arr.shape}; expected ({n}, {dim})"
        )
    if not np.all(np.isfinite(arr)):
        raise EmbedderError(f"embedder {name!r} returned NaN or infinite values")
    return l2_normalize(arr, name=name)


def check_embedder(obj: Any) -> Embedder:
    """Validate that ``obj`` follows the embedder protocol and return a usable embedder.

    semcache's own embedders are returned as they are. Any other object is checked for
    ``name`` (non-empty str), ``dim`` (positive int) and a callable ``embed``, then wrapped
    in a :class:`ValidatedEmbedder`, which checks every ``embed`` result (shape, dtype,
    finiteness) and re-normalizes it, so a faulty user embedder fails loudly with
    :class:`EmbedderError` instead of storing garbage vectors.

    Raises :class:`InvalidTypeError` naming every missing or wrongly typed attribute.
    """
    if isinstance(obj, (TrustedEmbedder, ValidatedEmbedder)):
        return obj
    problems: list[str] = []
    name = getattr(obj, "name", None)
    dim = getattr(obj, "dim", None)
    embed = getattr(obj, "embed", None)
    if name is None:
        problems.append("missing attribute 'name' (str)")
    elif not isinstance(name, str) or not name.strip():
        problems.append(f"'name' must be a non-empty str, got {name!r}")
    if dim is None:
        problems.append("missing attribute 'dim' (int)")
    elif isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
        problems.append(f"'dim' must be a positive int, got {dim!r}")
    if embed is None:
        problems.append("missing method 'embed(texts: list[str]) -> np.ndarray'")
    elif not callable(embed):
        problems.append("'embed' is not callable")
    if problems:
        raise InvalidTypeError(
            f"{type(obj).__name__} object is not an embedder: " + "; ".join(problems)
        )
    return ValidatedEmbedder(obj)


class TrustedEmbedder(ABC):
    """Abstract base class of semcache's own embedders, whose output needs no re-checking.

    Subclasses set ``name`` and ``dim`` and implement :meth:`_embed` for a validated,
    non-empty list of texts; this class handles input validation and the empty batch.
    """

    name: str
    dim: int

    def load(self) -> None:  # noqa: B027 - a no-op by default, not abstract
        """Get ready to embed (idempotent; a no-op unless the backend has a model to load)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` into a ``(len(texts), dim)`` float32 array of unit rows."""
        items = validate_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed(items)

    @abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray: ...

    def _check_dim(self, got: int) -> None:
        """Refuse a model whose output size is not the ``dim`` this embedder promised."""
        if int(got) != self.dim:
            raise EmbedderError(
                f"embedder {self.name!r} produces {int(got)}-dim vectors, expected {self.dim}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class ValidatedEmbedder:
    """Wraps a user embedder so every result is checked and normalized.

    Exceptions raised by the user's ``embed`` (other than semcache's own) are re-raised
    as :class:`EmbedderError`, so callers have one error type to handle.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name: str = str(inner.name)
        self.dim: int = int(inner.dim)

    def load(self) -> None:
        """Call the wrapped embedder's ``load()`` if it has one (errors as :class:`EmbedderError`)."""
        load = getattr(self.inner, "load", None)
        if not callable(load):
            return
        try:
            load()
        except SemcacheError:
            raise
        except Exception as exc:
            raise EmbedderError(
                f"embedder {self.name!r} failed to load: {type(exc).__name__}: {exc}"
            ) from exc

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` with the wrapped embedder and validate the result."""
        items = validate_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            result = self.inner.embed(items)
        except SemcacheError:
            raise
        except Exception as exc:
            raise EmbedderError(
                f"embedder {self.name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return check_embeddings(result, n=len(items), dim=self.dim, name=self.name)

    def __repr__(self) -> str:
        return f"ValidatedEmbedder({self.inner!r})"
