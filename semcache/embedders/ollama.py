"""Embeddings from a local Ollama server (``POST /api/embed``), over stdlib HTTP.

Uses ``urllib`` so that this backend needs no extra dependency.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.parse
from typing import Any

import numpy as np

from semcache.embedders.base import TrustedEmbedder, l2_normalize
from semcache.errors import ConfigurationError, EmbedderError

logger = logging.getLogger("semcache")

DEFAULT_MODEL = "nomic-embed-text"
DEFAULT_HOST = "http://127.0.0.1:11434"
KNOWN_DIMS: dict[str, int] = {
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "all-minilm": 384,
    "snowflake-arctic-embed": 1024,
    "bge-m3": 1024,
}


def resolve_host(host: str | None = None) -> str:
    """Base URL of the Ollama server: ``host``, else ``$OLLAMA_HOST``, else the default.

    Accepts the forms Ollama itself accepts: ``host``, ``host:port``, ``http://host:port``.
    A bind-all address (``0.0.0.0``) is where the server listens, not where to connect, so
    it becomes ``127.0.0.1``.
    """
    raw = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"invalid Ollama host {raw!r}; expected e.g. {DEFAULT_HOST}")
    hostname = "127.0.0.1" if parts.hostname in ("0.0.0.0", "::") else parts.hostname
    if ":" in hostname:  # IPv6 literal
        hostname = f"[{hostname}]"
    # Like Ollama's own clients: plain http without a port means Ollama's port.
    port = parts.port or (11434 if parts.scheme == "http" else None)
    netloc = f"{hostname}:{port}" if port else hostname
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _model_key(model: str) -> str:
    # "nomic-embed-text" and "nomic-embed-text:latest" are the same model in Ollama;
    # one pinned name for both keeps a cache file usable with either spelling.
    return model.removesuffix(":latest")


class OllamaEmbedder(TrustedEmbedder):
    """Ollama ``/api/embed``; ``name`` is ``"ollama:<model>"``.

    Args:
        model: Ollama model name (``nomic-embed-text`` by default).
        dim: output size; required for models not in :data:`KNOWN_DIMS`.
        host: server base URL (default ``$OLLAMA_HOST`` or ``http://127.0.0.1:11434``).
        timeout: seconds per request (the first call may load the model into memory).
        batch_size: inputs per request.
        keep_alive: passed through to Ollama (how long it keeps the model loaded).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dim: int | None = None,
        host: str | None = None,
        timeout: float = 60.0,
        batch_size: int = 256,
        keep_alive: str | int | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"ollama model must be a non-empty str, got {model!r}")
        key = _model_key(model)
        known = KNOWN_DIMS.get(key)
        if dim is None:
            if known is None:
                raise ConfigurationError(
                    f"unknown output size for Ollama model {model!r}; pass dim= "
                    f"(known models: {', '.join(sorted(KNOWN_DIMS))})"
                )
            dim = known
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ConfigurationError(f"ollama dim must be a positive int, got {dim!r}")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size!r}")
        self.model = model
        self.name = f"ollama:{key}"
        self.dim = dim
        self.host = resolve_host(host)
        self.url = self.host + "/api/embed"
        self.timeout = timeout
        self.batch_size = batch_size
        self.keep_alive = keep_alive
        self.tokens_used = 0
        self.requests = 0
        self._lock = threading.Lock()

    def _embed(self, texts: list[str]) -> np.ndarray:
        parts = [
            self._request(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return l2_normalize(np.concatenate(parts), name=self.name)

    def _request(self, batch: list[str]) -> np.ndarray:
        # urllib.request (with ssl) costs ~15 ms to import: only processes that embed pay it.
        import urllib.error
        import urllib.request

        body: dict[str, Any] = {"model": self.model, "input": batch}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        where = f"Ollama embeddings with model {self.model!r} at {self.host}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310 - http(s) only, checked in resolve_host
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            hint = f" (try: ollama pull {self.model})" if exc.code == 404 else ""
            raise EmbedderError(f"{where} failed: status {exc.code}: {detail}{hint}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EmbedderError(
                f"{where} failed: cannot connect ({reason}); is `ollama serve` running?"
            ) from exc
        except ValueError as exc:
            raise EmbedderError(f"{where} returned invalid JSON: {exc}") from exc
        vectors = payload.get("embeddings") if isinstance(payload, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(batch):
            got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
            raise EmbedderError(f"{where} returned {got} embeddings for {len(batch)} inputs")
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbedderError(f"{where} returned malformed vectors: {exc}") from exc
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise EmbedderError(
                f"{where} returned vectors of shape {matrix.shape}; expected dim {self.dim} "
                "(pass dim= matching the model)"
            )
        if not np.all(np.isfinite(matrix)):
            raise EmbedderError(f"{where} returned NaN/inf values")
        with self._lock:
            self.tokens_used += int(payload.get("prompt_eval_count") or 0)
            self.requests += 1
        return matrix


def _error_detail(exc: Any) -> str:
    """Ollama's ``{"error": "..."}`` message, or the start of the body."""
    try:
        raw = exc.read()
    except OSError:
        return str(exc.reason)
    try:
        return str(json.loads(raw).get("error") or raw[:200])
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace") or str(exc.reason)
