"""Export and import of cache entries as JSON Lines (``semcache export`` / ``import``).

Format (UTF-8, one JSON object per line)::

    {"semcache_export": 1, "embedder": "minilm:all-MiniLM-L6-v2", "dim": 384,
     "projection_seed": 0, "settings": {...}, "exported_at": 1700000000.0}   <- header
    {"id": 7, "key_hash": "<64 hex>", "namespace": "default", "scope": "", "prompt": "...",
     "response": <the JSON value>, "metadata": {...} | null, "tokens": 42,
     "created_at": 1700000000.0, "accessed_at": 1700000100.0, "expires_at": ... | null,
     "ttl": 86400.0 | null, "hits": 3, "vector": "<base64 of little-endian float32>" | null}

The header is optional on import (hand-written files may omit it); when present it
must be the first line, and its embedder and dimension must match the target file's
(vectors of different models cannot be compared). ``id`` is informational: imported
entries get new ids, and an entry whose ``key_hash`` already exists replaces it. The
256-bit code of an entry is not exported: it is recomputed from the vector with the
target file's projection seed (identical codes when the seeds are equal).

Import writes through the store in batched transactions (``batch_size`` entries each)
under the cross-process write lock, and the code mirror is updated after every commit,
exactly as for ``put``. Bad lines are reported with their line numbers: skipped by
default, or, with ``strict=True``, the whole file is checked first and nothing is written
if any line is bad. Counters (hits, misses...) are not part of the export; imported
entries do not count as puts.

Never pickle: every value is JSON; vectors are base64 of raw float32 bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from semcache.errors import (
    EmbedderMismatchError,
    InvalidInputError,
    SemcacheError,
)
from semcache.store.base import NewEntry
from semcache.store.codecs import (
    decode_metadata,
    decode_response,
    decode_vector,
    encode_metadata,
    encode_response,
)
from semcache.validation import check_namespace

#: Version of the export format written in the header line.
FORMAT_VERSION = 1
#: Entries per write transaction on import.
DEFAULT_BATCH = 500
#: Rows read per query on export.
_EXPORT_PAGE = 1000
#: At most this many bad lines are kept in a report (all are counted).
MAX_REPORTED = 1000

_TUNABLES = ("similarity_threshold", "max_entries", "ttl", "namespace", "refresh_on_access",
             "store_prompts")


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported, "lines": self.lines, "skipped": self.bad_count,
            "bad_lines": [{"line": b.line, "error": b.error} for b in self.bad_lines],
            "seconds": round(self.seconds, 3), "created": self.created,
        }


# -- export ------------------------------------------------------------------------------

def header_for(cache: Any) -> dict[str, Any]:
    """The header line describing ``cache`` (embedder, dimension, seed, tunables)."""
    s = cache.settings
    stored = cache._store.settings
    return {
        "semcache_export": FORMAT_VERSION,
        "embedder": s["embedder"], "dim": s["dim"],
        "projection_seed": None if stored.get("projection_seed") is None
        else int(stored["projection_seed"]),
        # Only the tunables the file itself stores (not this process's defaults).
        "settings": {k: json.loads(stored[k]) for k in _TUNABLES if k in stored},
        "exported_at": time.time(),
    }


def iter_export(cache: Any) -> Iterator[dict[str, Any]]:
    """Every entry of ``cache`` as an export record, in id order (expired ones included).

    Rows are read in pages by id; an entry replaced during the export may appear twice
    (old and new id): import keeps the last one, as the key is the same.
    """
    last = 0
    while True:
        rows = cache._store.query(
            "SELECT e.id, e.key_hash, e.namespace, p.scope, e.prompt, e.response, e.metadata, "
            "e.tokens, e.created_at, e.accessed_at, e.expires_at, e.ttl, e.hits, e.vector "
            "FROM entries e JOIN partitions p ON p.id = e.partition_id "
            "WHERE e.id > ? ORDER BY e.id LIMIT ?", (last, _EXPORT_PAGE))
        if not rows:
            return
        for (eid, key, ns, scope, prompt, resp, meta, tokens, created, accessed, expires,
             ttl, hits, vector) in rows:
            yield {
                "id": eid, "key_hash": bytes(key).hex(), "namespace": ns, "scope": scope,
                "prompt": prompt, "response": decode_response(resp),
                "metadata": decode_metadata(meta), "tokens": tokens,
                "created_at": created, "accessed_at": accessed, "expires_at": expires,
                "ttl": ttl, "hits": hits,
                "vector": None if vector is None else base64.b64encode(vector).decode("ascii"),
            }
        last = rows[-1][0]


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


def export_jsonl(cache: Any, out: IO[str]) -> int:
    """Write the header and every entry of ``cache`` to ``out``; returns the entry count."""
    out.write(dumps_line(header_for(cache)) + "\n")
    n = 0
    for record in iter_export(cache):
        out.write(dumps_line(record) + "\n")
        n += 1
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
    if version != FORMAT_VERSION:
        raise TransferError(
            f"export format version {version!r} is not supported (this semcache reads "
            f"version {FORMAT_VERSION})")
    dim = obj.get("dim")
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise TransferError(f"header line: dim must be a positive int or null; got {dim!r}")
    if obj.get("embedder") is not None and not isinstance(obj["embedder"], str):
        raise TransferError(f"header line: embedder must be a string; got {obj['embedder']!r}")
    return obj


def _number(rec: dict[str, Any], name: str, *, optional: bool = False,
            minimum: float | None = None) -> float | None:
    value = rec.get(name)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}; got {value!r}")
    return float(value)


def _count(rec: dict[str, Any], name: str) -> int:
    value = rec.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0; got {value!r}")
    return value


@dataclass(slots=True)
class _Parsed:
    entry: NewEntry
    accessed_at: float
    hits: int
    vector: np.ndarray | None


def parse_record(rec: Any, dim: int | None) -> _Parsed:
    """Validate one export record; raises ValueError (or a SemcacheError) naming the field."""
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object; got {type(rec).__name__}")
    key = rec.get("key_hash")
    if not isinstance(key, str) or len(key) != 64:
        raise ValueError(f"key_hash must be 64 hex characters; got {key!r}")
    try:
        key_bytes = bytes.fromhex(key)
    except ValueError:
        raise ValueError(f"key_hash is not hexadecimal: {key!r}") from None
    namespace = check_namespace(rec.get("namespace"))
    scope = rec.get("scope", "")
    if not isinstance(scope, str):
        raise ValueError(f"scope must be a string; got {scope!r}")
    prompt = rec.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string or null; got {type(prompt).__name__}")
    if "response" not in rec:
        raise ValueError("response is missing")
    response = encode_response(rec["response"])
    metadata = encode_metadata(rec.get("metadata"))
    created = _number(rec, "created_at")
    accessed = _number(rec, "accessed_at", optional=True)
    expires = _number(rec, "expires_at", optional=True)
    ttl = _number(rec, "ttl", optional=True, minimum=0)
    assert created is not None
    vector_blob: bytes | None = None
    vector: np.ndarray | None = None
    raw = rec.get("vector")
    if raw is not None:
        if not isinstance(raw, str):
            raise ValueError("vector must be a base64 string or null")
        try:
            vector_blob = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("vector is not valid base64") from None
        if len(vector_blob) % 4:
            raise ValueError(f"vector has {len(vector_blob)} bytes, not a whole number of float32")
        vector = decode_vector(vector_blob)
        if dim is None:
            raise ValueError("entry has a vector but the target cache has no vector dimension")
        if vector.shape[0] != dim:
            raise ValueError(f"vector has dimension {vector.shape[0]}; the cache expects {dim}")
        if not np.all(np.isfinite(vector)) or not np.any(vector):
            raise ValueError("vector has NaN/inf values or is all zeros")
    entry = NewEntry(
        key_hash=key_bytes, namespace=namespace, scope=scope, prompt=prompt, response=response,
        metadata=metadata, tokens=_count(rec, "tokens"), created_at=created,
        expires_at=expires, ttl=ttl, code=None, vector=vector_blob)
    return _Parsed(entry, created if accessed is None else accessed, _count(rec, "hits"), vector)


def iter_lines(stream: IO[str], dim: int | None,
               skip_first: bool) -> Iterator[tuple[int, _Parsed | None, str | None, int]]:
    """(line number, parsed entry or None, error or None, characters read so far)."""
    read = 0
    for lineno, line in enumerate(stream, start=1):
        read += len(line)
        if lineno == 1 and skip_first:
            continue
        if not line.strip():
            continue  # blank lines (a trailing newline, hand edits) are not entries
        try:
            rec = json.loads(line)
        except ValueError as exc:
            yield lineno, None, f"not valid JSON ({exc})", read
            continue
        try:
            yield lineno, parse_record(rec, dim), None, read
        except (ValueError, TypeError) as exc:
            yield lineno, None, str(exc), read


# -- import: writing ----------------------------------------------------------------------

def check_compatible(cache: Any, header: dict[str, Any] | None) -> None:
    """Refuse an export whose embedder or dimension differs from the target file's."""
    if header is None:
        return
    h_emb, h_dim = header.get("embedder"), header.get("dim")
    t_emb, t_dim = cache.settings["embedder"], cache.settings["dim"]
    if h_dim is not None and t_dim is not None and h_dim != t_dim:
        raise EmbedderMismatchError(
            f"the export has vectors of dimension {h_dim} ({h_emb}); {cache.path!r} "
            f"uses dimension {t_dim} ({t_emb}): import into a new file instead")
    if h_emb is not None and t_emb is not None and h_emb != t_emb:
        raise EmbedderMismatchError(
            f"the export was made with embedder {h_emb!r}; {cache.path!r} uses {t_emb!r}. "
            "Vectors of different models cannot be compared: import into a new file instead")
    if h_dim is not None and t_dim is None:
        raise EmbedderMismatchError(
            f"the export has vectors (dimension {h_dim}) but {cache.path!r} is a hash-only "
            "cache without a vector dimension: import into a new file instead")


def open_options_for(header: dict[str, Any] | None) -> dict[str, Any]:
    """``semcache.open`` arguments that recreate the exported file's definition and
    stored tunables in a new file."""
    if header is None:
        return {}
    opts: dict[str, Any] = {}
    emb, dim = header.get("embedder"), header.get("dim")
    if emb == "none" and dim:
        opts.update(embedder=None, dim=dim)
    elif emb:
        opts["embedder"] = emb
    elif dim is None:
        opts["hash_only"] = True
    seed = header.get("projection_seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        opts["seed"] = seed
    settings = header.get("settings")
    if isinstance(settings, dict):
        opts.update({k: v for k, v in settings.items() if k in _TUNABLES})
    return opts


def _write_batch(cache: Any, batch: list[_Parsed]) -> None:
    """One transaction: insert (replacing same keys), then restore access time and hits."""
    encoder = cache._encoder
    for p in batch:
        if p.vector is not None and encoder is not None:
            from semcache.kernels.projection import validate_vector

            p.entry.code = encoder.encode(validate_vector(p.vector, cache.dim)).tobytes()
        elif encoder is None:
            p.entry.vector = None
    with cache._lock, cache._write() as txn:
        for p in batch:
            entry_id = txn.insert(p.entry)
            txn.conn.execute("UPDATE entries SET accessed_at = ?, hits = ? WHERE id = ?",
                             (p.accessed_at, p.hits, entry_id))
        cache._enforce_limit(txn)


def import_jsonl(cache: Any, path: str, *, strict: bool = False,
                 batch_size: int = DEFAULT_BATCH,
                 progress: Callable[[int, int, int], None] | None = None,
                 on_bad_line: Callable[[BadLine], None] | None = None,
                 lines: list[str] | None = None) -> ImportReport:
    """Import the JSON Lines file at ``path`` into ``cache``.

    ``lines``: the file's lines already read (e.g. from stdin, which cannot be read
    twice); ``path`` then only names them in messages.

    ``progress(chars_read, total_chars_estimate, imported)`` is called after every batch.
    With ``strict`` the whole file is validated first and TransferError is raised (nothing
    written) if any line is bad. Returns an :class:`ImportReport`.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1; got {batch_size!r}")
    start = time.monotonic()
    report = ImportReport()
    dim = cache.dim

    def record_bad(bad: BadLine) -> None:
        report.bad_count += 1
        if len(report.bad_lines) < MAX_REPORTED:
            report.bad_lines.append(bad)
        if on_bad_line is not None:
            on_bad_line(bad)

    if lines is not None:
        total = sum(len(x) for x in lines)
    else:
        total = os.path.getsize(path)

    def open_stream() -> Any:
        if lines is not None:
            import io

            return io.StringIO("".join(lines))
        return open(path, encoding="utf-8", errors="strict", newline="")  # noqa: SIM115

    try:
        with open_stream() as f:
            first = f.readline()
    except UnicodeDecodeError as exc:
        raise TransferError(f"{path}: not UTF-8 text ({exc})") from None
    header = read_header(first) if first else None
    check_compatible(cache, header)
    keep_prompts = bool(cache.settings.get("store_prompts", True))

    def entries() -> Iterator[tuple[int, _Parsed | None, str | None, int]]:
        with open_stream() as f:
            try:
                yield from iter_lines(f, dim, header is not None)
            except UnicodeDecodeError as exc:
                raise TransferError(f"{path}: not UTF-8 text ({exc})") from None

    if strict:
        for lineno, _parsed, error, _ in entries():
            if error is not None:
                record_bad(BadLine(lineno, error))
        if report.bad_count:
            first_bad = report.bad_lines[0]
            raise TransferError(
                f"{report.bad_count} bad line(s) in {path}, nothing imported (--strict); "
                f"first: line {first_bad.line}: {first_bad.error}")

    batch: list[_Parsed] = []
    read = 0
    for lineno, parsed, error, read in entries():
        report.lines = lineno
        if parsed is None:
            if not strict:
                record_bad(BadLine(lineno, error or "bad line"))
            continue
        if not keep_prompts:
            parsed.entry.prompt = None
        batch.append(parsed)
        if len(batch) >= batch_size:
            _write_batch(cache, batch)
            report.imported += len(batch)
            batch = []
            if progress is not None:
                progress(read, total, report.imported)
    if batch:
        _write_batch(cache, batch)
        report.imported += len(batch)
    if progress is not None:
        progress(total, total, report.imported)
    report.seconds = time.monotonic() - start
    return report


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
