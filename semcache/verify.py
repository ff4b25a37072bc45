"""``semcache.verify(path)``: check a cache file without changing it.

Three things are checked, each against SQLite, which is the truth:

* the database: ``PRAGMA integrity_check``, the schema version, the bookkeeping rows;
* the code mirror ``<db>-codes``: header and every block checksum valid, same database, and
  (when it claims the database's exact current state, ``change_seq`` and ``state_token``)
  the same live rows as ``entries``;
* the sqlite-vec table ``entry_codes``: one row per entry with a code (no orphans, none
  missing), same partition and code.

The report is a plain dict (JSON-serializable). ``ok`` is False only for problems that
lose or misdirect data; a missing or stale mirror is derived data that the next search
rebuilds, and is reported with ``"rebuild": True`` but does not make the file bad.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from semcache.errors import (
    CacheFileError,
    NotASemcacheFileError,
    SchemaVersionError,
    SemcacheError,
)

#: Ids listed per category in the report (the counts are always complete).
_MAX_LISTED = 20


def _listed(ids: set[int] | list[int]) -> list[int]:
    return sorted(ids)[:_MAX_LISTED]


def verify(path: str | os.PathLike[str], *, quick: bool = False) -> dict[str, Any]:
    """Check the cache at ``path`` (a file or a ``postgresql://`` URL) without changing it.

    For a file: the database, the code mirror and the vec0 table. Opens the file read-only
    and writes nothing (the mirror is not rebuilt here). ``quick`` runs
    ``PRAGMA quick_check`` instead of the full ``integrity_check``.
    Raises :class:`CacheFileError` when the file does not exist,
    :class:`NotASemcacheFileError` for a file that is not a semcache cache and
    :class:`SchemaVersionError` for one from a newer semcache; damage (a corrupt database,
    mirror or vec0 table) is reported with ``ok: False`` and the ``problems`` found.
    """
    from semcache.store import display_location, is_server_location, open_store, store_exists
    from semcache.store.base import LocalCodeSource

    db = os.fspath(path)
    if not is_server_location(db) and not os.path.exists(db):
        raise CacheFileError(f"no cache file at {db!r}")
    if is_server_location(db) and not store_exists(db):
        raise CacheFileError(f"no semcache cache at {display_location(db)}")
    report: dict[str, Any] = {"path": display_location(db), "ok": False, "problems": [],
                              "database": {}}
    problems: list[str] = report["problems"]
    try:
        store, _ = open_store(db, readonly=True)
    except (NotASemcacheFileError, SchemaVersionError):
        raise  # not a semcache file (or one from a newer version): nothing to verify
    except SemcacheError as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
        report["database"]["error"] = str(exc)
        return report
    try:
        report["database"], found = store.check(quick=quick)
        problems.extend(found)
        if not problems and isinstance(store, LocalCodeSource):
            report["database"]["change_seq"] = store.change_seq()
            code_rows = store.code_rows()
            report["mirror"] = {"path": store.mirror_path}
            _check_mirror(store, store.mirror_path, code_rows, report["mirror"], problems)
            report["vec0"], found = store.check_code_index(code_rows)
            problems.extend(found)
    except SemcacheError as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        store.close()
    report["ok"] = not problems
    return report


def _check_mirror(store: Any, mpath: str, code_rows: tuple, out: dict[str, Any],
                  problems: list[str]) -> None:
    from semcache.store.sqlite.index import _expires_u32_array
    from semcache.store.sqlite.mirror import CodeMirror, MirrorInvalid

    ids, parts, expires, codes, seq, token = code_rows
    out.update({"present": os.path.exists(mpath), "valid": False, "agrees": False,
                "rebuild": True, "db_seq": seq})
    if not out["present"]:
        out["reason"] = "missing (built on the next semantic search)"
        return
    uid = store.settings.get("db_uid")
    if uid is None:
        out["reason"] = "database has no db_uid yet (hash-only file)"
        return
    try:
        mirror = CodeMirror.open(mpath, uid, writable=False)
    except (MirrorInvalid, OSError, ValueError) as exc:
        out["reason"] = f"invalid ({exc}); rebuilt on the next semantic search"
        return
    try:
        try:
            mirror.verify_all()
        except MirrorInvalid as exc:
            out["reason"] = f"invalid ({exc}); rebuilt on the next semantic search"
            return
        out["valid"] = True
        out["seq"] = mirror.seq
        out["bytes_per_row"] = round(mirror.file_size / max(mirror.capacity, 1), 2)
        live = mirror.read_rows(np.flatnonzero(
            mirror.read_rows(np.arange(mirror.count))["partitions"] >= 0))
        out["rows"] = int(live["entry_ids"].shape[0])
        if mirror.state != (seq, token):
            # Derived data built from another database state: the next search rebuilds it,
            # exactly as the index decides (it trusts only an exact state match).
            how = ("ahead of the database: restored from a backup, or commits lost in a "
                   "power failure" if mirror.seq > seq else
                   "behind the database" if mirror.seq < seq else
                   "same change_seq, another history (state token differs)")
            out["reason"] = f"stale (seq {mirror.seq}, database {seq}; {how}); rebuilt on " \
                            "the next semantic search"
            return
        out["rebuild"] = False
        m_ids = live["entry_ids"]
        same_ids = m_ids.shape == ids.shape and bool(np.array_equal(m_ids, ids))
        if not same_ids:
            m_set, d_set = set(m_ids.tolist()), set(ids.tolist())
            out["extra"] = _listed(m_set - d_set)
            out["missing"] = _listed(d_set - m_set)
            problems.append(f"mirror at seq {seq} disagrees with entries: "
                            f"{len(m_set - d_set)} extra, {len(d_set - m_set)} missing rows")
            return
        bad = ~(np.all(live["codes"] == codes, axis=1)
                & (live["partitions"] == parts)
                & (live["expires"] == _expires_u32_array(expires)))
        if bad.any():
            out["mismatched"] = _listed(ids[bad].tolist())
            problems.append(f"mirror at seq {seq}: {int(bad.sum())} rows differ from entries")
            return
        out["agrees"] = True
    finally:
        mirror.close()


__all__ = ["verify"]
