"""The SQLite engine's integrity report (``Store.check``, what ``semcache verify`` prints).

Three things are checked, each against SQLite, which is the truth:

* the database: ``PRAGMA integrity_check``, the schema version, the bookkeeping rows, and
  stored vectors that rescoring would skip as damaged;
* the code mirror ``<db>-codes``: header and every block checksum valid, same database, and
  (when it claims the database's exact current state, ``change_seq`` and ``state_token``)
  the same live rows as ``entries``;
* the sqlite-vec table ``entry_codes``: one row per entry with a code (no orphans, none
  missing), same partition and code.

Only problems that lose or misdirect data are problems; a missing or stale mirror is
derived data that the next search rebuilds, reported with ``"rebuild": True``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from semcache.store.sqlite.codes import CODES_THROUGH, code_rows, expires_to_int
from semcache.store.sqlite.connection import Database
from semcache.store.sqlite.index import expires_u32_array
from semcache.store.sqlite.mirror import CodeMirror, MirrorInvalid
from semcache.store.sqlite.schema import SCHEMA_VERSION

#: Ids listed per category in a report (the counts are always complete).
MAX_LISTED = 20

CodeRows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]


def _listed(ids: set[int] | list[int]) -> list[int]:
    return sorted(ids)[:MAX_LISTED]


def check(db: Database, settings: dict[str, str], mirror_path: str, *,
          quick: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The report's sections (``database``, ``mirror``, ``vec0``) and the problems found."""
    database, problems = check_database(db, settings, quick=quick)
    sections: dict[str, Any] = {"database": database}
    if problems:
        return sections, problems
    rows = code_rows(db)
    database["change_seq"] = rows[4]
    sections["mirror"] = {"path": mirror_path}
    check_mirror(mirror_path, settings.get("db_uid"), rows, sections["mirror"], problems)
    sections["vec0"], found = check_code_index(db, rows)
    problems.extend(found)
    check_vectors(db, settings, database, problems)
    return sections, problems


def check_database(db: Database, settings: dict[str, str], *,
                   quick: bool = False) -> tuple[dict[str, Any], list[str]]:
    """``PRAGMA integrity_check`` (``quick_check``), schema version, bookkeeping rows."""
    problems: list[str] = []
    pragma = "quick_check" if quick else "integrity_check"
    messages = [str(r[0]) for r in db.query(f"PRAGMA {pragma}")]
    report: dict[str, Any] = {
        "integrity": "ok" if messages == ["ok"] else messages[:MAX_LISTED],
        "expected_schema_version": SCHEMA_VERSION,
    }
    if messages != ["ok"]:
        problems.append(f"PRAGMA {pragma}: " + "; ".join(messages[:5]))
        return report, problems
    version = db.query("SELECT max(version) FROM schema_migrations")[0][0]
    report["schema_version"] = version
    if version != SCHEMA_VERSION:
        problems.append(f"schema version {version}, expected {SCHEMA_VERSION}")
    report["journal_mode"] = db.query("PRAGMA journal_mode")[0][0]
    entries = int(db.query("SELECT count(*) FROM entries")[0][0])
    report["entries"] = entries
    report["with_code"] = int(db.query(
        "SELECT count(*) FROM entries WHERE code IS NOT NULL")[0][0])
    counted = db.query("SELECT value FROM counters WHERE name = 'entries'")
    if not counted or counted[0][0] != entries:
        problems.append(f"counters.entries is {counted[0][0] if counted else None} "
                        f"but entries has {entries} rows")
    dangling = int(db.query(
        "SELECT count(*) FROM entries WHERE partition_id NOT IN (SELECT id FROM partitions)"
    )[0][0])
    if dangling:
        problems.append(f"{dangling} entries point at a partition that does not exist")
    return report, problems


def check_vectors(db: Database, settings: dict[str, str], report: dict[str, Any],
                   problems: list[str]) -> None:
    """Entries with a code whose stored vector rescoring would skip (see store/rescore.py)."""
    dim = settings.get("dim")
    if dim is None or not dim.isdigit():
        return
    bad = [int(r[0]) for r in db.query(
        "SELECT id FROM entries WHERE code IS NOT NULL AND (vector IS NULL OR "
        "typeof(vector) != 'blob' OR length(vector) != ?) ORDER BY id", (4 * int(dim),))]
    bad += _zero_or_not_finite(db, 4 * int(dim))
    if bad:
        report["damaged_vectors"] = _listed(bad)
        problems.append(f"{len(bad)} entries have a damaged stored vector (missing, not "
                        f"{dim} floats, zero or not finite): semantic lookups skip them "
                        f"(ids {_listed(bad)})")


def _zero_or_not_finite(db: Database, size: int) -> list[int]:
    """Ids of well-sized stored vectors that are all zeros or hold NaN/inf, read in pages."""
    bad: list[int] = []
    last = 0
    while True:
        rows = db.query("SELECT id, vector FROM entries WHERE id > ? AND code IS NOT NULL "
                        "AND length(vector) = ? ORDER BY id LIMIT 4096", (last, size))
        if not rows:
            return bad
        m = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        with np.errstate(over="ignore", invalid="ignore"):
            ss = np.einsum("ij,ij->i", m.astype(np.float64), m.astype(np.float64))
        bad += [int(rows[i][0]) for i in np.flatnonzero(~(np.isfinite(ss) & (ss > 0)))]
        last = int(rows[-1][0])


def check_mirror(mpath: str, uid: str | None, rows: CodeRows, out: dict[str, Any],
                 problems: list[str]) -> None:
    """The code mirror at ``mpath`` against ``rows`` (:func:`code_rows`)."""
    ids, parts, expires, codes, seq, token = rows
    out.update({"present": os.path.exists(mpath), "valid": False, "agrees": False,
                "rebuild": True, "db_seq": seq})
    if not out["present"]:
        out["reason"] = "missing (built on the next semantic search)"
        return
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
        if not (m_ids.shape == ids.shape and bool(np.array_equal(m_ids, ids))):
            m_set, d_set = set(m_ids.tolist()), set(ids.tolist())
            out["extra"] = _listed(m_set - d_set)
            out["missing"] = _listed(d_set - m_set)
            problems.append(f"mirror at seq {seq} disagrees with entries: "
                            f"{len(m_set - d_set)} extra, {len(d_set - m_set)} missing rows")
            return
        bad = ~(np.all(live["codes"] == codes, axis=1)
                & (live["partitions"] == parts)
                & (live["expires"] == expires_u32_array(expires)))
        if bad.any():
            out["mismatched"] = _listed(ids[bad].tolist())
            problems.append(f"mirror at seq {seq}: {int(bad.sum())} rows differ from entries")
            return
        out["agrees"] = True
    finally:
        mirror.close()


def check_code_index(db: Database, rows: CodeRows) -> tuple[dict[str, Any], list[str]]:
    """The sqlite-vec table ``entry_codes`` against the entries that have codes.

    Entries above ``sync_state.codes_through`` have no row yet by design (the table is
    caught up in batches; the SQL search scans them directly): they are reported as
    ``pending``, not missing. A row above the mark is an orphan (``vacuum`` drops it)."""
    ids, parts, expires, codes = rows[:4]
    through = int(db.query(CODES_THROUGH)[0][0])
    vec = {int(r[0]): (int(r[1]), int(r[2]), bytes(r[3])) for r in db.query(
        "SELECT entry_id, partition_id, expires_at, code FROM entry_codes")}
    found = {int(i): (int(p), expires_to_int(None if np.isnan(e) else float(e)), c.tobytes())
             for i, p, e, c in zip(ids.tolist(), parts.tolist(), expires.tolist(), codes,
                                   strict=True)}
    pending = {i for i in found if i > through}
    orphans = (set(vec) - set(found)) | {i for i in vec if i > through}
    missing = set(found) - set(vec) - pending
    differ = [i for i in set(found) & set(vec) if found[i] != vec[i] and i not in orphans]
    out: dict[str, Any] = {
        "rows": len(vec), "orphans": len(orphans), "missing": len(missing),
        "mismatched": len(differ), "agrees": not (orphans or missing or differ)}
    if pending:
        out["pending"] = len(pending)
    problems: list[str] = []
    if orphans:
        out["orphan_ids"] = _listed(orphans)
        problems.append(f"entry_codes has {len(orphans)} rows without an entry")
    if missing:
        out["missing_ids"] = _listed(missing)
        problems.append(f"{len(missing)} entries with a code are missing from entry_codes")
    if differ:
        out["mismatched_ids"] = _listed(differ)
        problems.append(f"{len(differ)} entry_codes rows differ from their entry")
    return out, problems


__all__ = ["check", "check_code_index", "check_database", "check_mirror", "check_vectors"]
