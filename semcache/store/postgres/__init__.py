"""The PostgreSQL storage engine (``semcache.open("postgresql://...")``).

Needs the ``postgres`` extra (psycopg 3 with its binary package, psycopg-pool); pgvector
(the server extension, 0.7 or newer) is used when the database has it.
"""

from semcache.store.postgres.conninfo import DEFAULT_SCHEMA, is_postgres_url
from semcache.store.postgres.schema import schema_exists
from semcache.store.postgres.store import EXACT_SCAN_BELOW, PostgresStore

__all__ = ["DEFAULT_SCHEMA", "EXACT_SCAN_BELOW", "PostgresStore", "is_postgres_url",
           "schema_exists"]
