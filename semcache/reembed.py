"""Moving a cache to another embedder: ``semcache reembed SRC DST --embedder NAME``.

A cache is pinned to the embedder it was created with (its vectors and codes live in that
model's space). :func:`reembed` copies every live entry of SRC into DST, a cache pinned to
another embedder, embedding the stored prompts again in batches: exact keys (so exact hits
keep working), namespaces, scopes, responses, metadata, tokens, creation and access times,
hit counts and expiries are carried over; SRC's tunables too (TTL, size limits, default
namespace...), except ``similarity_threshold``. What is a cosine of the old embedder's
space is not carried: the default and per-namespace thresholds, verdicts (``feedback``)
and explored outcomes; DST starts from the new embedder's measured default (calibrate it
again once it has verdicts). Entries stored without a prompt (``store_prompts=False``, or
vectors given by the caller) cannot be embedded again: they are skipped and counted, and
so are expired entries.

Each batch is one transaction in DST (``Cache.restore``): an interrupted run (Ctrl-C, a
crash, ``kill -9``) leaves whole batches, and running the same command again continues -
the entries already in DST (same exact key) are skipped, nothing is embedded twice or
duplicated. It goes through the public API only, on files or ``postgresql://`` URLs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import semcache
from semcache.cache import Cache, Entry
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.settings import TUNABLES, decode_stored

#: Entries embedded per transaction (a batch of the embedder, too).
DEFAULT_BATCH = 64
#: What DST never takes from SRC (cosines of the old embedder's space).
NOT_CARRIED = ("similarity_threshold", "per-namespace thresholds", "verdicts (feedback)",
               "explored outcomes")
_PAGE = 1000


@dataclass
class ReembedReport:
    """What a run did. ``copied``: entries written to DST by this run; ``already``:
    found in DST (an earlier, interrupted run); ``no_prompt`` / ``expired``: skipped."""

    source: str = ""
    target: str = ""
    embedder: str = ""
    total: int = 0
    copied: int = 0
    already: int = 0
    no_prompt: int = 0
    expired: int = 0
    created: bool = False
    seconds: float = 0.0
    not_carried: list[str] = field(default_factory=lambda: list(NOT_CARRIED))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out


def _carried_settings(src: Cache) -> dict[str, Any]:
    """SRC's stored tunables that mean the same under another embedder."""
    stored = src.stored_settings()
    out: dict[str, Any] = {}
    for name in TUNABLES:
        if name in stored and name != "similarity_threshold":
            try:
                out[name] = decode_stored(name, stored[name])
            except ValueError:
                continue  # a hand-edited bad value: DST takes the default
    return out


def _same_cache(src: str, dst: str) -> bool:
    if "://" in src or "://" in dst:
        return src == dst
    try:
        return os.path.exists(dst) and os.path.samefile(src, dst)
    except OSError:
        return False


def _keys_in(dst: Cache) -> set[bytes]:
    """The exact keys DST holds already (what an interrupted run wrote)."""
    keys: set[bytes] = set()
    last: int | None = None
    while True:
        page = dst.entries(order="id", after_id=last, limit=_PAGE)
        if not page:
            return keys
        keys.update(e.key_hash for e in page if e.key_hash is not None)
        last = page[-1].id


def open_target(src: Cache, dst: str, embedder: str) -> Cache:
    """DST pinned to ``embedder``: created with SRC's carried settings, or an existing
    cache (an interrupted run's) that must already be pinned to that embedder. It keeps
    the prompts it is given while the copy runs (``store_prompts=True``; SRC's own value
    is written once the copy is complete): a prompt SRC kept is what DST's next reembed
    would need, and nothing SRC did not hold is stored."""
    if not isinstance(embedder, str) or not embedder:
        raise ConfigurationError(f"embedder must be an embedder name; got {embedder!r}")
    try:
        target = semcache.open(dst, create=False, embedder=embedder, store_prompts=True)
    except semcache.CacheNotFoundError:
        return semcache.open(dst, embedder=embedder,
                             **{**_carried_settings(src), "store_prompts": True})
    if target.embedder_name is None or target.hash_only:
        target.close()
        raise ConfigurationError(f"{dst!r} exists but has no embedder; reembed writes into a "
                                 f"new cache, or one an interrupted reembed started")
    return target


def reembed(source: str, target: str, embedder: str, *, batch_size: int = DEFAULT_BATCH,
            progress: Callable[[int, int], None] | None = None) -> ReembedReport:
    """Copy the cache at ``source`` into ``target``, pinned to ``embedder`` (see the
    module docstring). ``progress(done, total)`` is called after every batch, ``done``
    counting the SRC entries handled so far. Returns a :class:`ReembedReport`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an int >= 1; got {batch_size!r}")
    source, target = os.fspath(source), os.fspath(target)
    if _same_cache(source, target):
        raise InvalidInputError(f"source and target are the same cache ({source!r}); "
                                "reembed writes into another one")
    started = time.monotonic()
    with semcache.open(source, readonly=True, create=False) as src:
        report = ReembedReport(source=src.location, total=src.count(), embedder=embedder)
        dst = open_target(src, target, embedder)
        try:
            report.target, report.created = dst.location, dst.created
            report.embedder = dst.embedder_name or embedder
            done_keys = set() if dst.created else _keys_in(dst)
            done = 0
            last: int | None = None
            now = time.time()
            while True:
                page = src.entries(order="id", after_id=last, limit=_PAGE)
                if not page:
                    break
                last = page[-1].id
                todo: list[Entry] = []
                for e in page:
                    if e.prompt is None:
                        report.no_prompt += 1
                    elif e.expires_at is not None and e.expires_at <= now:
                        report.expired += 1
                    elif e.key_hash in done_keys:
                        report.already += 1
                    else:
                        todo.append(e)
                        continue
                    done += 1
                for start in range(0, len(todo), batch_size):
                    chunk = todo[start:start + batch_size]
                    _copy(dst, chunk)
                    report.copied += len(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, report.total)
                if progress is not None:
                    progress(done, report.total)
        finally:
            dst.close()
        # The copy is complete: DST takes SRC's prompt policy for what it stores next.
        semcache.open(target, create=False, store_prompts=_carried_settings(src).get(
            "store_prompts", True)).close()
    report.seconds = time.monotonic() - started
    return report


def _copy(dst: Cache, entries: list[Entry]) -> None:
    """One batch: embedded with DST's embedder, written in one transaction."""
    vectors = dst.embedder.embed([e.prompt for e in entries])
    dst.restore([Entry(
        namespace=e.namespace, response=e.response, scope=e.scope, prompt=e.prompt,
        metadata=e.metadata, tokens=e.tokens, created_at=e.created_at,
        accessed_at=e.accessed_at, expires_at=e.expires_at, ttl=e.ttl, hits=e.hits,
        vector=v, key=e.key) for e, v in zip(entries, vectors, strict=True)])


def describe(report: ReembedReport) -> str:
    """The command's summary, what was not carried included."""
    lines = [f"re-embedded {report.copied} entries from {report.source} into {report.target} "
             f"({report.embedder}) in {report.seconds:.2f}s"]
    if report.already:
        lines.append(f"{report.already} entries were already there (an earlier run): skipped")
    if report.no_prompt:
        lines.append(f"{report.no_prompt} entries stored without a prompt cannot be embedded "
                     "again: skipped")
    if report.expired:
        lines.append(f"{report.expired} expired entries: skipped")
    lines.append("not carried (cosines of the old embedder's space): "
                 + ", ".join(report.not_carried)
                 + "; run `semcache calibrate` on the new cache once it has verdicts")
    return "\n".join(lines)


__all__ = ["DEFAULT_BATCH", "NOT_CARRIED", "ReembedReport", "describe", "open_target",
           "reembed"]
