"""Which settings a cache file keeps, their defaults, and how arguments meet the file.

Two kinds of settings live in the ``settings`` table:

* file-defining: schema of the codes (``code_bits``, ``projection_seed``), the embedder
  (``embedder``, ``dim``) and the file's identity (``db_uid``). Set once at creation; an
  argument that disagrees raises, because vectors from another model or projection
  cannot be compared with the stored ones.
* tunable: ``similarity_threshold``, ``max_entries``, ``ttl``, ``refresh_on_access``,
  ``store_prompts``, ``namespace``, ``guard``; and per-namespace thresholds
  (``threshold:<namespace>``). An argument passed to ``open`` is stored, so every
  process that opens the file later shares it (as diskcache does); an omitted one is
  read from the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from semcache.errors import ConfigurationError, SemcacheError
from semcache.validation import (
    UNSET,
    check_bool,
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


@dataclass
class Tunables:
    similarity_threshold: float | None  # None: the embedder's measured default
    max_entries: int | None
    ttl: float | None
    refresh_on_access: bool
    store_prompts: bool
    namespace: str
    guard: bool = True


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "similarity_threshold": lambda v: None if v is None else check_threshold(v),
    "max_entries": check_max_entries,
    "ttl": check_ttl,
    "refresh_on_access": lambda v: check_bool(v, "refresh_on_access"),
    "store_prompts": lambda v: check_bool(v, "store_prompts"),
    "namespace": check_namespace,
    "guard": lambda v: check_bool(v, "guard"),
}
_DEFAULTS: dict[str, Any] = {
    "similarity_threshold": None,
    "max_entries": DEFAULT_MAX_ENTRIES,
    "ttl": DEFAULT_TTL,
    "refresh_on_access": True,
    "store_prompts": True,
    "namespace": DEFAULT_NAMESPACE,
    "guard": True,
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


__all__ = [
    "CODE_BITS", "COSINE_ONLY_THRESHOLDS", "DEFAULT_MAX_ENTRIES", "DEFAULT_NAMESPACE", "DEFAULT_SEED", "DEFAULT_THRESHOLDS",
    "DEFAULT_TTL", "FALLBACK_THRESHOLD", "TUNABLES", "UNSET", "Tunables", "decode_stored",
    "merge_tunables", "validate_tunables",
]
