"""``semcache.verify(path)``: check a cache without changing it.

The engine checks itself (``Store.check``), each part against its source of truth: for a
file, the database (``PRAGMA integrity_check``, schema version, bookkeeping rows, damaged
stored vectors), the code mirror ``<db>-codes`` and the sqlite-vec table; for PostgreSQL,
the schema, its index, the counters and the rows (see ``semcache/store/sqlite/check.py``
and ``semcache/store/postgres/admin.py``).

The report is a plain dict (JSON-serializable). ``ok`` is False only for problems that
lose or misdirect data; a missing or stale mirror is derived data that the next search
rebuilds, and is reported with ``"rebuild": True`` but does not make the file bad.
"""

from __future__ import annotations

import os
from typing import Any

from semcache.errors import NotASemcacheFileError, SchemaVersionError, SemcacheError
from semcache.store import display_location, location_text, open_store


def verify(path: str | os.PathLike[str], *, quick: bool = False) -> dict[str, Any]:
    """Check the cache at ``path`` (a file or a ``postgresql://`` URL) without changing it.

    Opens it read-only and writes nothing (the mirror is not rebuilt here). ``quick`` runs
    ``PRAGMA quick_check`` instead of the full ``integrity_check`` (PostgreSQL: skips the
    row counts). Raises :class:`~semcache.errors.CacheNotFoundError` when there is no cache
    at ``path``, :class:`NotASemcacheFileError` for something that is not a semcache cache
    and :class:`SchemaVersionError` for one from a newer semcache; damage (a corrupt
    database, mirror or vec0 table, damaged vectors) is reported with ``ok: False`` and
    the ``problems`` found.
    """
    where = location_text(path)
    report: dict[str, Any] = {"path": display_location(where), "ok": False, "problems": [],
                              "database": {}}
    problems: list[str] = report["problems"]
    try:
        store = open_store(where, readonly=True, create=False)
    except (NotASemcacheFileError, SchemaVersionError, FileNotFoundError):
        raise  # nothing to verify: missing, not a semcache cache, or from a newer version
    except SemcacheError as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
        report["database"]["error"] = str(exc)
        return report
    try:
        sections, found = store.check(quick=quick)
        report.update(sections)
        problems.extend(found)
    except SemcacheError as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        store.close()
    report["ok"] = not problems
    return report


__all__ = ["verify"]
