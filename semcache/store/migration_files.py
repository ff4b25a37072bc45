"""The numbered ``NNNN_name.sql`` migration files that each store engine ships.

Both engines (SQLite in ``semcache/migrations/``, PostgreSQL in
``semcache/store/postgres/migrations/``) keep their own files and their own schema table;
what they share is how the files are found, ordered and checked, which lives here once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration: its number, its name and the SQL it runs."""

    version: int
    name: str
    sql: str


def load_migrations(package: str) -> list[Migration]:
    """The migrations shipped in ``package``, ordered by number.

    A gap or a duplicate in the numbering is a packaging bug, not a user error: it raises
    RuntimeError at import so that no engine ever applies a partial sequence.
    """
    found = []
    for item in resources.files(package).iterdir():
        m = _NAME.match(item.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), item.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{package} migrations are not numbered 1..n: {versions}")
    return found
