"""The numbered ``NNNN_name.sql`` migration files that each store engine ships.

Both engines (SQLite in ``semcache/migrations/``, PostgreSQL in
``semcache/store/postgres/migrations/``) keep their own files and their own schema table;
what they share is how the files are found, ordered and checked, which lives here once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    """One migration: its number, its name and the SQL it runs."""

    version: int
    name: str
    sql: str


def load_migrations(directory: Path) -> list[Migration]:
    """The migrations shipped in ``directory`` (a folder of the installed package), ordered
    by number.

    Read with plain file calls, not ``importlib.resources``: this runs when the first cache
    of a process is opened, and importing ``importlib.resources`` alone cost more than
    reading the files (semcache is never imported from a zip: SQLite extensions and the
    code mirror need real files anyway). A gap or a duplicate in the numbering is a
    packaging bug, not a user error: it raises RuntimeError so that no engine ever applies
    a partial sequence.
    """
    found = []
    for name in os.listdir(directory):
        m = _NAME.fullmatch(name)
        if m:
            text = (directory / name).read_text("utf-8")
            found.append(Migration(int(m.group(1)), m.group(2), text))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{directory}: migrations are not numbered 1..n: {versions}")
    return found
