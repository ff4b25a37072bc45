"""Which settings a cache file keeps, their defaults, and how arguments meet the file.

Two kinds of settings live in the ``settings`` table:

* file-defining: schema of the codes (``code_bits``, ``projection_seed``), the embedder
  (``embedder``, ``dim``) and the file's identity (``db_uid``). Set once at creation; an
  argument that disagrees raises, because vectors from another model or projection
  cannot be compared with the stored ones.
* tunable: ``similarity_threshold``, ``max_entries``, ``ttl``, ``refresh_on_access``,
  ``store_prompts``, ``namespace``. An argument passed to ``open`` is stored, so every
  process that opens the file later shares it (as diskcache does); an omitted one is
  read from the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from semcache.errors import ConfigurationError
from semcache.validation import (
    check_max_entries,
    check_namespace,
    check_threshold,
    check_ttl,
)

#: Default TTL: one day. ``None`` means entries never expire.
DEFAULT_TTL = 86_400.0
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_NAMESPACE = "default"
CODE_BITS = 256
DEFAULT_SEED = 0

#: Cosine thresholds measured by scripts/quality.py on the paraphrase pairs
#: (docs/quality.md). Keyed by embedder family (the part of the pinned name before ':').
DEFAULT_THRESHOLDS: dict[str, float] = {
    "minilm": 0.92,  # measured: 62% correct hits, 1.9% wrong
    # openai and ollama are NOT measured here (no network, no Ollama server): 0.90 is a
    # starting point; run scripts/quality.py with that embedder before relying on it.
    "openai": 0.90,
    "ollama": 0.90,
    "hashing": 0.90,  # measured: spelling-only matcher; see docs/quality.md
}
FALLBACK_THRESHOLD = 0.92


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


@dataclass
class Tunables:
    similarity_threshold: float | None  # None: the embedder's measured default
    max_entries: int | None
    ttl: float | None
    refresh_on_access: bool
    store_prompts: bool
    namespace: str


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False; got {value!r}")
    return value


_CHECKS = {
    "similarity_threshold": lambda v: None if v is None else check_threshold(v),
    "max_entries": check_max_entries,
    "ttl": check_ttl,
    "refresh_on_access": lambda v: _check_bool("refresh_on_access", v),
    "store_prompts": lambda v: _check_bool("store_prompts", v),
    "namespace": check_namespace,
}
_DEFAULTS: dict[str, Any] = {
    "similarity_threshold": None,
    "max_entries": DEFAULT_MAX_ENTRIES,
    "ttl": DEFAULT_TTL,
    "refresh_on_access": True,
    "store_prompts": True,
    "namespace": DEFAULT_NAMESPACE,
}


def validate_tunables(args: dict[str, Any]) -> dict[str, Any]:
    """Check every explicitly passed tunable (before anything is opened or written)."""
    return {name: _CHECKS[name](value) for name, value in args.items() if value is not UNSET}


def merge_tunables(given: dict[str, Any], stored: dict[str, str]) -> tuple[Tunables, dict[str, str]]:
    """Tunables in force, and the settings rows to write (those passed and different)."""
    values: dict[str, Any] = {}
    to_write: dict[str, str] = {}
    for name, default in _DEFAULTS.items():
        if name in given:
            values[name] = given[name]
            encoded = json.dumps(given[name])
            if stored.get(name) != encoded:
                to_write[name] = encoded
        elif name in stored:
            try:
                values[name] = _CHECKS[name](json.loads(stored[name]))
            except (ValueError, ConfigurationError):
                values[name] = default  # a hand-edited bad value: fall back, don't refuse the file
        else:
            values[name] = default
    return Tunables(**values), to_write
