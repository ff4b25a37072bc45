"""OpenAI embeddings through the official ``openai`` SDK, with our own retry/backoff.

The SDK's built-in retries are turned off (``max_retries=0``): we retry ourselves so the
policy (attempts, Retry-After, cap, injectable sleep for tests) is in one visible place and
a persistent failure surfaces as :class:`EmbedderError` naming the model and the status.
The ``openai`` package is imported only when the first client is created.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from semcache.embedders.base import TrustedEmbedder, l2_normalize
from semcache.errors import ConfigurationError, EmbedderError

logger = logging.getLogger("semcache")

DEFAULT_MODEL = "text-embedding-3-small"
NATIVE_DIMS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
# Models that accept the `dimensions` parameter (shortened Matryoshka embeddings).
_SHORTENABLE = ("text-embedding-3-",)
MAX_BATCH = 2048  # the API's limit on inputs per request
# Statuses worth retrying, as the SDK itself does: timeout, lock conflict, rate limit, 5xx.
_RETRY_STATUSES = frozenset({408, 409, 429})
_KEY_RE = re.compile(r"(sk-[A-Za-z0-9*_\-]{2})[A-Za-z0-9*_\-]+")


def _redact(text: str, secret: str | None) -> str:
    """Remove API keys (ours and anything shaped like one) from an error message."""
    if secret:
        text = text.replace(secret, "***")
    return _KEY_RE.sub(r"\1***", text)


def _retry_after_seconds(headers: Any) -> float | None:
    """Delay asked for by the server (``retry-after-ms`` or ``retry-after``), if any."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
    except (TypeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # HTTP-date form
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIEmbedder(TrustedEmbedder):
    """Embeddings from the OpenAI API (or a compatible server via ``base_url``).

    ``name`` is ``"openai:<model>:<dim>"``. Asking for the model's native size with
    ``dimensions=`` is the same as not asking, and gives the same name.

    Args:
        model: embedding model id.
        dimensions: shorter output size (text-embedding-3-* only); required for models
            whose native size is not in :data:`NATIVE_DIMS`.
        client: an ``openai.OpenAI`` client to use (re-configured with ``max_retries=0``);
            otherwise one is created on first use from ``api_key`` / ``base_url`` (or the
            ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` environment variables).
        timeout: per-request timeout in seconds for a client we create.
        max_retries: retries after the first attempt on 408/409/429/5xx/connection errors.
        backoff_base, backoff_max: exponential backoff ``base * 2**attempt`` (with jitter),
            capped; a server's Retry-After is honoured up to the cap.
        batch_size: inputs per request (at most 2048).
        sleep: called with the delay in seconds between attempts (inject for tests).

    ``tokens_used`` and ``requests`` count successful requests' usage.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dimensions: int | None = None,
        client: Any = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        batch_size: int = MAX_BATCH,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"openai model must be a non-empty str, got {model!r}")
        native = NATIVE_DIMS.get(model)
        if dimensions is not None:
            if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions <= 0:
                raise ConfigurationError(f"dimensions must be a positive int, got {dimensions!r}")
            if native is not None and dimensions > native:
                raise ConfigurationError(
                    f"model {model!r} has {native} dimensions; dimensions={dimensions} is larger"
                )
            if native is not None and dimensions != native and not model.startswith(_SHORTENABLE):
                raise ConfigurationError(
                    f"model {model!r} does not support dimensions= (only text-embedding-3-*)"
                )
        elif native is None:
            raise ConfigurationError(
                f"unknown output size for OpenAI model {model!r}; pass dimensions= "
                f"(known models: {', '.join(sorted(NATIVE_DIMS))})"
            )
        if not 1 <= batch_size <= MAX_BATCH:
            raise ConfigurationError(f"batch_size must be in [1, {MAX_BATCH}], got {batch_size!r}")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries!r}")
        self.model = model
        self.dim: int = dimensions if dimensions is not None else native  # type: ignore[assignment]
        # Only send `dimensions` when it changes the output; the native size is the default.
        self._dimensions = dimensions if dimensions is not None and dimensions != native else None
        self.name = f"openai:{model}:{self.dim}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.batch_size = batch_size
        self.sleep = sleep
        self.tokens_used = 0
        self.requests = 0
        self._api_key = api_key
        self._base_url = base_url
        self._given_client = client
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIEmbedder(name={self.name!r})"

    def load(self) -> None:
        """Import openai and create the client now (idempotent; no request is made)."""
        self._get_client()

    def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        with self._lock:
            if self._client is None:
                if self._given_client is not None:
                    client = self._given_client
                    with_options = getattr(client, "with_options", None)
                    self._client = with_options(max_retries=0) if with_options else client
                else:
                    try:
                        import openai
                    except ImportError as exc:
                        raise EmbedderError(
                            f"embedder {self.name!r} needs the openai package: "
                            "pip install 'semcache-sqlite[openai]'"
                        ) from exc
                    try:
                        self._client = openai.OpenAI(
                            api_key=self._api_key, base_url=self._base_url,
                            timeout=self.timeout, max_retries=0,
                        )
                    except openai.OpenAIError as exc:
                        raise EmbedderError(
                            f"embedder {self.name!r} could not create an OpenAI client: "
                            f"{_redact(str(exc), self._api_key)}"
                        ) from exc
        return self._client

    def _embed(self, texts: list[str]) -> np.ndarray:
        client = self._get_client()
        parts = [
            self._request(client, texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return l2_normalize(np.concatenate(parts), name=self.name)

    def _request(self, client: Any, batch: list[str]) -> np.ndarray:
        import openai  # imported by _get_client already (or the client came from it)

        kwargs: dict[str, Any] = {"model": self.model, "input": batch}
        if self._dimensions is not None:
            kwargs["dimensions"] = self._dimensions
        attempt = 0
        while True:
            try:
                response = client.embeddings.create(**kwargs)
                break
            except openai.APIStatusError as exc:
                status: str = str(exc.status_code)
                retryable = exc.status_code in _RETRY_STATUSES or exc.status_code >= 500
                server_delay = _retry_after_seconds(getattr(exc.response, "headers", None))
                detail = _redact(getattr(exc, "message", None) or str(exc), self._api_key)
                error: Exception = exc
            except openai.APIConnectionError as exc:
                status = "connection error" if not isinstance(exc, openai.APITimeoutError) else "timeout"
                retryable, server_delay, error = True, None, exc
                detail = _redact(str(exc), self._api_key)
            if not retryable or attempt >= self.max_retries:
                raise EmbedderError(
                    f"OpenAI embeddings with model {self.model!r} failed after {attempt + 1} "
                    f"attempt(s); last status {status}: {detail}"
                ) from error
            if server_delay is not None:
                delay = min(server_delay, self.backoff_max)
            else:
                # Jitter spreads out the retries of many workers hit by the same limit.
                delay = min(self.backoff_base * 2**attempt, self.backoff_max)
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - not security related
            logger.warning(
                "OpenAI embeddings (%s): status %s, retry %d/%d in %.2fs",
                self.model, status, attempt + 1, self.max_retries, delay,
            )
            self.sleep(delay)
            attempt += 1
        return self._parse(response, len(batch))

    def _parse(self, response: Any, n: int) -> np.ndarray:
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != n:
            raise EmbedderError(
                f"OpenAI embeddings with model {self.model!r} returned {len(data)} vectors "
                f"for {n} inputs"
            )
        try:
            matrix = np.asarray([d.embedding for d in data], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbedderError(
                f"OpenAI embeddings with model {self.model!r} returned malformed vectors: {exc}"
            ) from exc
        if matrix.shape != (n, self.dim):
            raise EmbedderError(
                f"OpenAI embeddings with model {self.model!r} returned shape {matrix.shape}; "
                f"expected ({n}, {self.dim})"
            )
        if not np.all(np.isfinite(matrix)):
            raise EmbedderError(f"OpenAI embeddings with model {self.model!r} returned NaN/inf")
        usage = getattr(response, "usage", None)
        tokens = getattr(usage, "total_tokens", None) or getattr(usage, "prompt_tokens", 0) or 0
        with self._lock:
            self.tokens_used += int(tokens)
            self.requests += 1
        return matrix
