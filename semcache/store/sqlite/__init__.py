"""The SQLite engine: one file (WAL), its write lock, its migrations (in
``semcache/migrations/``), and its own semantic search - the mmap'd code mirror beside the
file, with sqlite-vec's table as the SQL fallback."""

from semcache.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
