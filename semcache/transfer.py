"""Export and import of cache entries as JSON Lines (``semcache export`` / ``import``).

Format 3 (UTF-8, one JSON object per line)::

    {"semcache_export": 3, "embedder": "minilm:all-MiniLM-L6-v2", "dim": 384,
     "projection_seed": 0, "settings": {...}, "exported_at": 1700000000.0}   <- header
    {"id": 7, "namespace": "default", "scope": "", "prompt": "...", "key": "<hex>" | null,
     "response": <the JSON value>, "metadata": {...} | null, "tokens": 42,
     "created_at": 1700000000.0, "accessed_at": 1700000100.0, "expires_at": ... | null,
     "ttl": 86400.0 | null, "hits": 3, "vector": "<base64 of little-endian float32>" | null,
     "trust": {"verdicts": [...]}}                          <- per-entry trust state
    {"namespace_state": "billing", "settings": {"similarity_threshold": 0.97},
     "trust": {"verdicts": [...]}}                           <- per-namespace settings

The two trust sections are described in :mod:`semcache.transfer_trust`. Import writes an
entry's verdicts with it (for its new id) and, when it creates the cache (or with
``apply_settings=True``), the namespaces' settings, so that the copy refuses what the
original refuses. Versions 1 and 2 (no trust state) are read too.

The header is optional on import (hand-written files may omit it); when present it
must be the first line, and its embedder and dimension must match the target cache's
(vectors of different models cannot be compared). ``id`` is informational: imported
entries get new ids. Exact keys are never read from the file: the cache derives them
again for each entry's namespace from its prompt, or from ``key`` (the exact-key material
of an entry stored by request), so an edited file cannot make one tenant's key answer for
another. Vectors are validated and normalized. Version 1 files (with ``key_hash``) are
read too; their ``key_hash`` is ignored.

Import writes through :meth:`semcache.Cache.restore` in batches (``batch_size`` entries
per transaction). Bad lines are reported with their line numbers and skipped, or, with
``strict=True``, the whole file is checked first and nothing is written if any line is bad.
An import that stops midway (disk full, interrupted) can simply be run again: entries
replace the ones with the same keys, so a second run ends in the same state.
Counters (hits, misses...) are not part of the export; imported entries do not count as
puts. Never pickle: every value is JSON; vectors are base64 of raw float32 bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from semcache.cache import Cache, Entry
from semcache.errors import EmbedderMismatchError, InvalidInputError, SemcacheError
from semcache.settings import TUNABLES, decode_stored
from semcache.store.codecs import decode_vector
from semcache.transfer_trust import NamespaceState, apply_namespace_states

#: Version of the export format written in the header line (versions 1 and 2 are read).
FORMAT_VERSION = 3
READ_VERSIONS = (1, 2, 3)
#: Entries per write transaction on import.
DEFAULT_BATCH = 500
#: Rows read per page on export.
_EXPORT_PAGE = 1000
#: At most this many bad lines are kept in a report (all are counted).
MAX_REPORTED = 1000


class TransferError(SemcacheError, ValueError):
    """An import file that cannot be used (bad header, bad lines under ``strict``)."""


@dataclass
class BadLine:
    line: int
    error: str


@dataclass
class ImportReport:
    """What an import did."""

    imported: int = 0
    lines: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    bad_count: int = 0
    seconds: float = 0.0
    created: bool = False
    #: Verdicts of the namespace sections (entries' own verdicts come with them).
    namespace_verdicts: int = 0
    #: Per-namespace settings not applied (an existing cache keeps its own).
    settings_kept: list[str] = field(default_factory=list)
    #: Keys of trust sections this version does not read (a newer semcache's export).
    ignored_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported, "lines": self.lines, "skipped": self.bad_count,
            "bad_lines": [{"line": b.line, "error": b.error} for b in self.bad_lines],
            "seconds": round(self.seconds, 3), "created": self.created,
            "namespace_verdicts": self.namespace_verdicts,
            "settings_kept": self.settings_kept, "ignored_keys": self.ignored_keys,
        }


# -- export ------------------------------------------------------------------------------

def header_for(cache: Cache) -> dict[str, Any]:
    """The header line describing ``cache`` (embedder, dimension, seed, tunables)."""
    s = cache.settings
    stored = cache.stored_settings()
    seed = s.get("projection_seed")
    return {
        "semcache_export": FORMAT_VERSION,
        "embedder": s["embedder"], "dim": s["dim"],
        "projection_seed": None if seed is None else int(seed),
        # Only the tunables the file itself stores (not this process's defaults).
        "settings": {k: json.loads(stored[k]) for k in TUNABLES if k in stored},
        "exported_at": time.time(),
    }


def _record(e: Entry) -> dict[str, Any]:
    return {
        "id": e.id, "namespace": e.namespace, "scope": e.scope, "prompt": e.prompt,
        "key": None if e.key is None else e.key.hex(), "response": e.response,
        "metadata": e.metadata, "tokens": e.tokens, "created_at": e.created_at,
        "accessed_at": e.accessed_at, "expires_at": e.expires_at, "ttl": e.ttl, "hits": e.hits,
        "vector": None if e.vector is None else base64.b64encode(
            np.ascontiguousarray(e.vector, dtype="<f4").tobytes()).decode("ascii"),
    }


def iter_export(cache: Cache) -> Iterator[dict[str, Any]]:
    """Every entry of ``cache`` as an export record, in id order (expired ones included).

    Entries are read in pages by id; an entry replaced during the export may appear twice
    (old and new id): import keeps the last one, as the key is the same.
    """
    last: int | None = None
    while True:
        page = cache.entries(order="id", after_id=last, limit=_EXPORT_PAGE, with_vectors=True)
        if not page:
            return
        for entry in page:
            yield _record(entry)
        last = page[-1].id


# Characters that some line splitters (str.splitlines, JavaScript) treat as line breaks;
# json.dumps(ensure_ascii=False) leaves them raw, so they are escaped to keep one record
# per line for every reader. They can only occur inside JSON strings: escaping is exact.
_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def dumps_line(record: dict[str, Any]) -> str:
    """One record as a single line of JSON (UTF-8 text, Unicode line breaks escaped)."""
    text = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, escaped in _LINE_BREAKS.items():
        if raw in text:
            text = text.replace(raw, escaped)
    return text


def export_jsonl(cache: Cache, out: IO[str],
                 progress: Callable[[int], object] | None = None) -> int:
    """Write the header, every entry of ``cache`` with its trust state, then the
    per-namespace settings to ``out``; returns the entry count. ``progress(n)`` is called
    with the number of entries written since its last call (every page)."""
    from semcache.transfer_trust import TrustExport

    out.write(dumps_line(header_for(cache)) + "\n")
    trust = TrustExport(cache)
    n = 0
    for record in iter_export(cache):
        out.write(dumps_line(trust.attach(record)) + "\n")
        n += 1
        if progress is not None and n % _EXPORT_PAGE == 0:
            progress(_EXPORT_PAGE)
    if progress is not None and n % _EXPORT_PAGE:
        progress(n % _EXPORT_PAGE)
    for line in trust.namespace_lines():
        out.write(dumps_line(line) + "\n")
    return n


# -- import: parsing and validation ------------------------------------------------------

def read_header(first_line: str) -> dict[str, Any] | None:
    """The header if ``first_line`` is one, else None. Raises TransferError if malformed."""
    try:
        obj = json.loads(first_line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or "semcache_export" not in obj:
        return None
    version = obj.get("semcache_export")
    if version not in READ_VERSIONS:
        raise TransferError(
            f"export format version {version!r} is not supported (this semcache reads "
            f"versions {', '.join(map(str, READ_VERSIONS))})")
    try:
        open_options_for(obj)  # the settings it would give a new file must be valid
    except SemcacheError as exc:
        raise TransferError(f"header line: {exc}") from None
    return obj


def _number(rec: dict[str, Any], name: str, *, optional: bool = False) -> float | None:
    value = rec.get(name)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _count(rec: dict[str, Any], name: str) -> int:
    value = rec.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0; got {value!r}")
    return value


def _vector(raw: Any) -> np.ndarray | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("vector must be a base64 string or null")
    try:
        blob = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("vector is not valid base64") from None
    if len(blob) % 4:
        raise ValueError(f"vector has {len(blob)} bytes, not a whole number of float32")
    return decode_vector(blob)


def _key(raw: Any) -> bytes | None:
    if raw is None:
        return None
    try:
        key = bytes.fromhex(raw) if isinstance(raw, str) else None
    except ValueError:
        key = None
    if not key:
        raise ValueError(f"key must be non-empty hexadecimal or null; got {raw!r:.80}")
    return key


def parse_record(rec: Any, unknown: list[str] | None = None) -> Entry:
    """One export record as an :class:`~semcache.Entry` (the cache validates the values
    when restoring it); raises ValueError naming the field that is malformed. Keys of its
    trust section this version does not read are added to ``unknown``."""
    from semcache.transfer_trust import parse_outcomes, parse_verdicts

    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object; got {type(rec).__name__}")
    if "response" not in rec:
        raise ValueError("response is missing")
    for name in ("namespace", "scope", "prompt"):
        value = rec.get(name, "" if name == "scope" else None)
        if not isinstance(value, str) and not (value is None and name == "prompt"):
            raise ValueError(f"{name} must be a string; got {value!r:.80}")
    metadata = rec.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"metadata must be an object or null; got {type(metadata).__name__}")
    return Entry(
        namespace=rec["namespace"], response=rec["response"], scope=rec.get("scope", ""),
        prompt=rec.get("prompt"), metadata=metadata, tokens=_count(rec, "tokens"),
        created_at=_number(rec, "created_at") or 0.0,
        accessed_at=_number(rec, "accessed_at", optional=True),
        expires_at=_number(rec, "expires_at", optional=True),
        ttl=_number(rec, "ttl", optional=True), hits=_count(rec, "hits"),
        vector=_vector(rec.get("vector")), key=_key(rec.get("key")),
        verdicts=tuple(parse_verdicts(rec.get("trust"), [] if unknown is None else unknown)),
        outcomes=tuple(parse_outcomes(rec.get("trust"))))


Line = tuple[int, Entry | NamespaceState | None, str | None, int]


def iter_lines(stream: IO[str], skip_first: bool,
               unknown: list[str] | None = None) -> Iterator[Line]:
    """(line number, parsed entry or per-namespace line or None, error or None, characters
    read so far)."""
    from semcache.transfer_trust import NAMESPACE_KEY, parse_namespace_line

    read = 0
    for lineno, line in enumerate(stream, start=1):
        read += len(line)
        if (lineno == 1 and skip_first) or not line.strip():
            continue  # the header; blank lines (a trailing newline, hand edits)
        try:
            obj = json.loads(line)
            if isinstance(obj, dict) and NAMESPACE_KEY in obj:
                state = parse_namespace_line(obj)
                if unknown is not None:
                    unknown.extend(state.unknown)
                yield lineno, state, None, read
            else:
                yield lineno, parse_record(obj, unknown), None, read
        except (ValueError, TypeError, RecursionError) as exc:
            yield lineno, None, _describe(exc), read


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc})"
    return str(exc)


# -- import: writing ----------------------------------------------------------------------

def check_compatible(cache: Cache, header: dict[str, Any] | None) -> None:
    """Refuse an export whose embedder or dimension differs from the target cache's."""
    if header is None:
        return
    h_emb, h_dim = header.get("embedder"), header.get("dim")
    t_emb, t_dim = cache.settings["embedder"], cache.settings["dim"]
    if h_dim is not None and t_dim is not None and h_dim != t_dim:
        raise EmbedderMismatchError(
            f"the export has vectors of dimension {h_dim} ({h_emb}); {cache.location!r} "
            f"uses dimension {t_dim} ({t_emb}): import into a new cache instead")
    if h_emb is not None and t_emb is not None and h_emb != t_emb:
        raise EmbedderMismatchError(
            f"the export was made with embedder {h_emb!r}; {cache.location!r} uses {t_emb!r}. "
            "Vectors of different models cannot be compared: import into a new cache instead")
    if h_dim is not None and t_dim is None:
        raise EmbedderMismatchError(
            f"the export has vectors (dimension {h_dim}) but {cache.location!r} is a "
            "hash-only cache without a vector dimension: import into a new cache instead")


def open_options_for(header: dict[str, Any] | None) -> dict[str, Any]:
    """``semcache.open`` arguments that recreate the exported cache's definition and
    stored tunables in a new cache; every value is validated (ConfigurationError)."""
    from semcache.validation import check_dim, check_seed

    if header is None:
        return {}
    opts: dict[str, Any] = {}
    emb, dim = header.get("embedder"), header.get("dim")
    if emb is not None and not isinstance(emb, str):
        raise InvalidInputError(f"embedder must be a string; got {emb!r}")
    if dim is not None:
        dim = check_dim(dim)
    if emb == "none" and dim:
        opts.update(embedder=None, dim=dim)
    elif emb:
        opts["embedder"] = emb
    elif dim is None:
        opts["hash_only"] = True
    seed = header.get("projection_seed")
    if seed is not None:
        opts["seed"] = check_seed(seed)
    settings = header.get("settings")
    if isinstance(settings, dict):
        for name in TUNABLES:
            if name in settings:
                try:
                    opts[name] = decode_stored(name, json.dumps(settings[name]))
                except (ValueError, TypeError) as exc:
                    raise InvalidInputError(str(exc)) from None
    return opts


def import_jsonl(cache: Cache, path: str, *, strict: bool = False,
                 batch_size: int = DEFAULT_BATCH,
                 progress: Callable[[int, int, int], None] | None = None,
                 on_bad_line: Callable[[BadLine], None] | None = None,
                 lines: list[str] | None = None,
                 apply_settings: bool = False) -> ImportReport:
    """Import the JSON Lines file at ``path`` into ``cache``.

    ``lines``: the file's lines already read (e.g. from stdin, which cannot be read
    twice); ``path`` then only names them in messages. ``apply_settings``: write the
    export's per-namespace settings (thresholds) into ``cache`` - what ``semcache import``
    does for a cache it creates; otherwise they are left as the cache has them and listed
    in the report. Entries' trust state (verdicts) is always imported with them.

    ``progress(chars_read, total_chars_estimate, imported)`` is called after every batch.
    With ``strict`` the whole file is validated first and TransferError is raised (nothing
    written) if any line is bad. Returns an :class:`ImportReport`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an int >= 1; got {batch_size!r}")
    start = time.monotonic()
    report = ImportReport()
    total = sum(len(x) for x in lines) if lines is not None else os.path.getsize(path)

    held: list[BadLine] = []  # reported in line order once their batch is written

    def record_bad(bad: BadLine) -> None:
        held.append(bad)

    def report_held() -> None:
        for bad in sorted(held, key=lambda b: b.line):
            report.bad_count += 1
            if len(report.bad_lines) < MAX_REPORTED:
                report.bad_lines.append(bad)
            if on_bad_line is not None:
                on_bad_line(bad)
        held.clear()

    def open_stream() -> IO[str]:
        if lines is not None:
            return io.StringIO("".join(lines))
        return open(path, encoding="utf-8", errors="strict", newline="")  # noqa: SIM115

    unknown: list[str] = []
    states: list[NamespaceState] = []

    def entries(keys: list[str] | None = None) -> Iterator[Line]:
        try:
            with open_stream() as f:
                first = f.readline()
                header = read_header(first) if first else None
                check_compatible(cache, header)
                f.seek(0)
                yield from iter_lines(f, header is not None, keys)
        except UnicodeDecodeError as exc:
            raise TransferError(f"{path}: not UTF-8 text ({exc})") from None

    if strict:
        _check_all(cache, entries(), record_bad, path)
        report_held()
        if report.bad_count:
            first = report.bad_lines[0]
            raise TransferError(f"{report.bad_count} bad line(s) in {path}, nothing imported "
                                f"(--strict); first: line {first.line}: {first.error}")
    batch: list[tuple[int, Entry]] = []
    read = 0
    for lineno, entry, error, read in entries(unknown):
        report.lines = lineno
        if entry is None:
            record_bad(BadLine(lineno, error or "bad line"))
            continue
        if isinstance(entry, NamespaceState):
            states.append(entry)  # applied once every entry is in
            continue
        batch.append((lineno, entry))
        if len(batch) >= batch_size:
            report.imported += _write_batch(cache, batch, record_bad)
            batch = []
            report_held()
            if progress is not None:
                progress(read, total, report.imported)
    report.imported += _write_batch(cache, batch, record_bad)
    report_held()
    report.namespace_verdicts, report.settings_kept = apply_namespace_states(
        cache, states, settings=apply_settings)
    report.ignored_keys = sorted(set(unknown))
    if progress is not None:
        progress(total, total, report.imported)
    report.seconds = time.monotonic() - start
    return report


def _write_batch(cache: Cache, batch: list[tuple[int, Entry]],
                 record_bad: Callable[[BadLine], None]) -> int:
    if not batch:
        return 0
    ids = cache.restore([e for _, e in batch], on_error=lambda i, exc: record_bad(
        BadLine(batch[i][0], str(exc))))
    return len(ids)


def _check_all(cache: Cache, lines: Iterator[Line], record_bad: Callable[[BadLine], None],
               path: str) -> None:
    """Strict mode: every line must parse and pass the cache's validation."""
    for lineno, entry, error, _ in lines:
        if entry is None:
            record_bad(BadLine(lineno, error or "bad line"))
            continue
        if isinstance(entry, NamespaceState):
            continue  # validated when parsed
        try:
            cache.check_restorable(entry)
        except SemcacheError as exc:
            record_bad(BadLine(lineno, str(exc)))


__all__ = [
    "DEFAULT_BATCH",
    "FORMAT_VERSION",
    "BadLine",
    "ImportReport",
    "TransferError",
    "export_jsonl",
    "header_for",
    "import_jsonl",
    "iter_export",
    "open_options_for",
    "parse_record",
    "read_header",
]
