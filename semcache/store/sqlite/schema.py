"""Schema migrations and the settings table.

Migrations are the numbered ``semcache/migrations/NNNN_name.sql`` files, applied in order
under the write lock when a file is opened, each in its own transaction, and recorded in
``schema_migrations``. A file whose recorded version is newer than the newest migration
this code knows is refused rather than guessed at.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import apsw

from semcache.errors import NotASemcacheFileError, ReadOnlyCacheError, SchemaVersionError
from semcache.store.migration_files import load_migrations
from semcache.store.sqlite.connection import APPLICATION_ID, translated
from semcache.store.sqlite.locking import WriteLock

log = logging.getLogger("semcache")

# The files stay in semcache/migrations/, the layout the project documents (SPEC 4).
MIGRATIONS = load_migrations(Path(__file__).resolve().parents[2] / "migrations")
SCHEMA_VERSION = MIGRATIONS[-1].version


def file_version(conn: apsw.Connection, path: str) -> int:
    """0 for a new (empty) SQLite file, else the applied schema version.

    Raises NotASemcacheFileError for SQLite files that belong to something else.
    """
    with translated(path), conn:  # one read snapshot: another open may be migrating it
        app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == 0 and not tables:
            return 0
        if app_id != APPLICATION_ID or "schema_migrations" not in tables:
            raise NotASemcacheFileError(
                f"{path!r} is an SQLite database but not a semcache cache "
                f"(application_id={app_id:#x}, tables: {', '.join(sorted(tables)) or 'none'})"
            )
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchall()
    return int(row[0][0] or 0)


def ensure_schema(conn: apsw.Connection, path: str, lock: WriteLock | None) -> int:
    """Bring the file to SCHEMA_VERSION; returns the version found before migrating."""
    found = file_version(conn, path)
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path!r} has schema version {found}, newer than this semcache knows "
            f"({SCHEMA_VERSION}); upgrade semcache to open it"
        )
    if found == SCHEMA_VERSION:
        return found
    if lock is None:
        raise ReadOnlyCacheError(
            f"{path!r} needs schema migration {found} -> {SCHEMA_VERSION} but is opened read-only"
        )
    with lock.hold(), translated(path):
        found = file_version(conn, path)  # another process may have migrated meanwhile
        if found == 0:
            # WAL lets readers run while a writer commits; it is a property of the file.
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
        for mig in MIGRATIONS:
            if mig.version <= found:
                continue
            with conn:  # one transaction per migration
                if mig.version == 1:
                    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
                    )
                conn.execute(mig.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (mig.version, mig.name, time.time()),
                )
            log.info("semcache: applied migration %04d_%s to %s", mig.version, mig.name, path)
    return found


def read_settings(conn: apsw.Connection) -> dict[str, str]:
    return {name: value for name, value in conn.execute("SELECT name, value FROM settings")}


def write_settings(conn: apsw.Connection, values: dict[str, str]) -> None:
    conn.executemany(
        "INSERT INTO settings (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        list(values.items()),
    )


def add_settings(conn: apsw.Connection, values: dict[str, str]) -> dict[str, str]:
    """Write the settings not stored yet; every stored setting (inside the caller's
    write transaction, so nobody else writes between the two)."""
    conn.executemany("INSERT INTO settings (name, value) VALUES (?, ?) "
                     "ON CONFLICT (name) DO NOTHING", list(values.items()))
    return read_settings(conn)
