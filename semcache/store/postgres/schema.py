"""The cache's PostgreSQL schema: numbered migrations, applied once under a lock.

Migrations are ``semcache/store/postgres/migrations/NNNN_name.sql``: SQL templates with the
schema's quoted name in ``{schema}``, the vector column type in ``{vector_type}`` and
pgvector's schema in ``{ext}`` (see the first migration's header). All pending migrations
run in one transaction that first takes ``pg_advisory_xact_lock`` on a key derived from the
schema name, then re-reads the version: two hosts opening a new database at once both
succeed and the schema is created once. A schema recorded by a newer semcache is refused;
a schema with tables that are not semcache's is refused.

pgvector is used when the extension is installed in the database (or can be created by
this user) and is 0.7 or newer (``bit_hamming_ops``); the choice is made when the schema is
created and read back from the catalog (the type of ``entries.vector``) on every open.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from semcache.errors import (
    CacheFileError,
    ConfigurationError,
    NotASemcacheFileError,
    ReadOnlyCacheError,
    SchemaVersionError,
)
from semcache.store.migration_files import load_migrations
from semcache.store.postgres.conninfo import ConnInfo, first_line, parse, translate
from semcache.store.postgres.pool import Connections

log = logging.getLogger("semcache")

_BLOCK = re.compile(r"^--@pgvector\n(.*?)^--@end\n", re.MULTILINE | re.DOTALL)
#: First key of every semcache advisory lock ("SEMC"); the second is the schema's CRC.
LOCK_CLASS = 0x53454D43
#: Tables every semcache schema has (anything else in a non-empty schema: not ours).
_OUR_TABLES = frozenset(("schema_migrations", "settings", "partitions", "entries",
                         "entry_usage", "counters", "partition_counts"))
_MIN_PGVECTOR = (0, 7)


MIGRATIONS = load_migrations(Path(__file__).resolve().parent / "migrations")
SCHEMA_VERSION = MIGRATIONS[-1].version


@dataclass(frozen=True)
class SchemaState:
    """What the catalog says about a cache schema."""

    version: int  # 0: absent or empty
    ext_schema: str | None = None  # pgvector's schema when entries.vector is a vector
    hnsw: bool = False  # a valid HNSW index on entries.code exists
    pgvector_version: str | None = None


def lock_key(schema: str) -> int:
    """Second advisory-lock key for ``schema`` (a signed 32-bit CRC of its name)."""
    crc = zlib.crc32(schema.encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def render(text: str, schema: str, ext_schema: str | None) -> sql.Composed:
    """A migration template made concrete for one schema and vector layout."""
    text = _BLOCK.sub(r"\1" if ext_schema else "", text)
    ext = sql.Identifier(ext_schema or "public")
    vector_type = sql.SQL("{}.vector").format(ext) if ext_schema else sql.SQL("bytea")
    return sql.SQL(text).format(schema=sql.Identifier(schema), ext=ext,
                                vector_type=vector_type)


def inspect(conn: psycopg.Connection, info: ConnInfo) -> SchemaState:
    """Read the schema's version and layout; refuse schemas that are not semcache's or
    come from a newer semcache."""
    schema = info.schema
    tables = {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')", (schema,))}
    if not tables:
        return SchemaState(0)
    if not _OUR_TABLES <= tables:
        listed = ", ".join(sorted(tables)[:10])
        raise NotASemcacheFileError(
            f"schema {schema!r} of {info.location} exists but is not a semcache cache "
            f"(tables: {listed}); pick another schema with schema=... or ?schema=...")
    q = sql.SQL("SELECT max(version) FROM {}.schema_migrations").format(sql.Identifier(schema))
    row = conn.execute(q).fetchone()
    version = int(row[0]) if row and row[0] is not None else 0
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"schema {schema!r} of {info.location} has version {version}, newer than this "
            f"semcache knows ({SCHEMA_VERSION}); upgrade semcache to open it")
    entries = f"{sql.Identifier(schema).as_string(conn)}.entries"
    col = conn.execute(
        "SELECT t.typname, n.nspname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = 'vector'", (entries,)).fetchone()
    ext_schema = col[1] if col and col[0] == "vector" else None
    hnsw = conn.execute(
        "SELECT bool_or(i.indisvalid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass(%s) "
        "AND am.amname = 'hnsw'", (entries,)).fetchone()
    ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return SchemaState(version, ext_schema, bool(hnsw and hnsw[0]), ext[0] if ext else None)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def pgvector_schema(conn: psycopg.Connection, want: bool | None) -> str | None:
    """pgvector's schema if it is (or can be made) usable here; None to go without.

    ``want``: None = use it when possible, False = never, True = required."""
    if want is False:
        return None
    found = conn.execute(
        "SELECT n.nspname, e.extversion FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'").fetchone()
    if found is None and conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
        try:
            with conn.transaction():
                # Database-wide: two caches created at once must not race on the extension.
                conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            log.info("semcache: cannot create the pgvector extension (%s); searching by "
                     "exact scan", first_line(exc))
        found = conn.execute(
            "SELECT n.nspname, e.extversion FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        ).fetchone()
    if found is not None and _version_tuple(found[1]) < _MIN_PGVECTOR:
        log.info("semcache: pgvector %s is older than 0.7 (no bit_hamming_ops); searching by "
                 "exact scan", found[1])
        found = None
    if found is None and want:
        raise ConfigurationError(
            "pgvector=True but the pgvector extension (>= 0.7) is not installed in this "
            "database and cannot be created by this user (CREATE EXTENSION vector)")
    return None if found is None else str(found[0])


def ensure_schema(conn: psycopg.Connection, info: ConnInfo, *, readonly: bool,
                  pgvector: bool | None) -> tuple[SchemaState, str | None]:
    """Bring the schema to :data:`SCHEMA_VERSION` (creating it) and return its state and
    what this call created: ``"schema"`` (the schema itself), ``"tables"`` (semcache's
    tables in an empty schema that existed), or None (the cache existed)."""
    state = inspect(conn, info)
    if state.version == SCHEMA_VERSION:
        return _checked(state, pgvector), None
    if readonly:
        if state.version == 0:
            raise CacheFileError(f"no semcache cache in schema {info.schema!r} of "
                                 f"{info.location} (opened read-only: nothing is created)")
        raise ReadOnlyCacheError(
            f"schema {info.schema!r} of {info.location} needs migration {state.version} -> "
            f"{SCHEMA_VERSION} but is opened read-only")
    ext = pgvector_schema(conn, pgvector) if state.version == 0 else state.ext_schema
    created: str | None = None
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, lock_key(info.schema)))
        state = inspect(conn, info)  # another host may have migrated meanwhile
        if state.version == 0:
            ident = sql.Identifier(info.schema)
            existed = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                   (info.schema,)).fetchone() is not None
            created = "tables" if existed else "schema"
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            conn.execute(sql.SQL(
                "CREATE TABLE {}.schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at double precision NOT NULL)").format(ident))
        else:
            ext = state.ext_schema
        for mig in MIGRATIONS:
            if mig.version <= state.version:
                continue
            conn.execute(render(mig.sql, info.schema, ext))
            conn.execute(sql.SQL(
                "INSERT INTO {}.schema_migrations (version, name, applied_at) "
                "VALUES (%s, %s, %s)").format(sql.Identifier(info.schema)),
                (mig.version, mig.name, time.time()))
            log.info("semcache: applied PostgreSQL migration %04d_%s to schema %s of %s",
                     mig.version, mig.name, info.schema, info.location)
    return _checked(inspect(conn, info), pgvector), created


def drop_new_schema(conn: psycopg.Connection, info: ConnInfo, created: str | None, *,
                    require_empty: bool = True) -> bool:
    """Remove a cache that was just created and could not be set up or filled (a failed
    open or import must not leave a half-made cache): the schema when this process
    ``created`` it (``"schema"``), else only semcache's objects in it (``"tables"``; None:
    decide here - the schema goes too when this user owns it and nothing else is in it).
    Under the migration lock; with ``require_empty``, only while the cache has no entries
    (another host may have started using it meanwhile). True if removed."""
    ident = sql.Identifier(info.schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, lock_key(info.schema)))
        if inspect(conn, info).version == 0:
            return False
        if require_empty and _has_entries(conn, ident):
            log.warning("semcache: not removing schema %s of %s after a failed open: another "
                        "client has stored entries in it", info.schema, info.location)
            return False
        if created is None:
            created = "schema" if _only_ours(conn, info.schema) else "tables"
        if created == "schema":
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
            return True
        for table in ("outcome_pools", "outcomes", "counter_minutes", "feedback", "claims", "counters", "partition_counts",
                      "entry_usage", "entries", "partitions", "settings", "schema_migrations"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{} CASCADE").format(
                ident, sql.Identifier(table)))
        for fn in ("count_hand_made_changes", "recount_after_hand_made_change"):
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}.{}()").format(
                ident, sql.Identifier(fn)))
    return True


def _has_entries(conn: psycopg.Connection, ident: sql.Identifier) -> bool:
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.entries)").format(ident)).fetchone()
    return bool(row and row[0])


def _only_ours(conn: psycopg.Connection, schema: str) -> bool:
    """True when this user owns ``schema`` and it holds nothing but semcache's tables
    (and their indexes, sequences, view and function)."""
    row = conn.execute(
        "SELECT n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user), "
        "(SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN "
        "('r', 'p', 'f', 'm') AND NOT c.relname = ANY(%s)) "
        "FROM pg_namespace n WHERE n.nspname = %s",
        (sorted(_OUR_TABLES | {"feedback", "claims", "counter_minutes", "outcomes",
                                "outcome_pools"}), schema)).fetchone()
    return bool(row and row[0] and row[1] == 0)


def _checked(state: SchemaState, pgvector: bool | None) -> SchemaState:
    if pgvector and state.ext_schema is None:
        raise ConfigurationError(
            "pgvector=True but this cache was created without pgvector (its vectors are "
            "bytea); export and import it into a new schema to switch")
    return state


def schema_exists(url: str, schema: str | None = None) -> bool:
    """True when the schema of ``url`` (``?schema=``, or ``schema``) holds a semcache cache
    (one direct connection; nothing is created)."""
    info = parse(url, schema)
    conn = Connections(info, configure=lambda c: None).connect()
    try:
        return inspect(conn, info).version > 0
    except psycopg.Error as exc:
        raise translate(exc, info) from None
    finally:
        conn.close()


__all__ = ["LOCK_CLASS", "MIGRATIONS", "SCHEMA_VERSION", "SchemaState", "drop_new_schema",
           "ensure_schema", "inspect", "lock_key", "pgvector_schema", "render", "schema_exists"]
