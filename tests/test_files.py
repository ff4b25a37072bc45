"""Opening files: refusing what is not ours, schema versions, bad input writes nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import numpy as np
import pytest

import semcache
from semcache.store.sqlite import SQLiteStore
from tests.conftest import file_state


def test_garbage_file_refused(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(semcache.NotASemcacheFileError, match="garbage.db"):
        semcache.open(str(path), hash_only=True)


def test_text_file_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a database\n" * 200)
    with pytest.raises(semcache.NotASemcacheFileError) as err:
        semcache.open(str(path), hash_only=True)
    assert isinstance(err.value, OSError)  # subclasses the built-in that fits


def test_other_sqlite_file_refused_and_untouched(tmp_path):
    path = str(tmp_path / "app.db")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    before = file_state(path)
    with pytest.raises(semcache.NotASemcacheFileError, match="not a semcache cache"):
        semcache.open(path, hash_only=True)
    assert file_state(path) == before


def test_newer_schema_refused(db_path):
    semcache.open(db_path, hash_only=True).close()
    con = sqlite3.connect(db_path)
    con.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    con.commit()
    con.close()
    with pytest.raises(semcache.SchemaVersionError, match="999"):
        semcache.open(db_path, hash_only=True)


def test_empty_file_becomes_a_cache(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with semcache.open(str(path), hash_only=True) as cache:
        cache.put("q", "a")
        assert cache.get("q").response == "a"


def test_wal_mode_and_sqlite3_cli(db_path):
    with semcache.open(db_path, hash_only=True) as cache:
        cache.put("What is the capital of France?", "Paris", namespace="geo")
    tables = subprocess.run(["sqlite3", db_path, ".tables"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert {"entries", "settings", "counters", "partitions", "entry_codes"} <= set(tables)
    rows = subprocess.run(
        ["sqlite3", db_path, "select namespace, prompt, hits from entries"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert rows == "geo|What is the capital of France?|0"
    mode = subprocess.run(["sqlite3", db_path, "pragma journal_mode"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert mode == "wal"


BAD_CALLS = [
    ("empty prompt", lambda c: c.put("", "a"), semcache.EmptyPromptError),
    ("blank prompt", lambda c: c.put("   ", "a"), semcache.EmptyPromptError),
    ("prompt not str", lambda c: c.put(b"bytes", "a"), semcache.InvalidTypeError),
    ("prompt None", lambda c: c.get(None), semcache.InvalidTypeError),
    ("response not JSON", lambda c: c.put("q", {1, 2}), semcache.SerializationError),
    ("response NaN", lambda c: c.put("q", float("nan")), semcache.SerializationError),
    ("metadata not dict", lambda c: c.put("q", "a", metadata=[1]), semcache.SerializationError),
    ("negative ttl", lambda c: c.put("q", "a", ttl=-1), semcache.InvalidInputError),
    ("zero ttl", lambda c: c.put("q", "a", ttl=0), semcache.InvalidInputError),
    ("inf ttl", lambda c: c.put("q", "a", ttl=float("inf")), semcache.InvalidInputError),
    ("ttl str", lambda c: c.put("q", "a", ttl="60"), semcache.InvalidTypeError),
    ("namespace int", lambda c: c.put("q", "a", namespace=5), semcache.InvalidTypeError),
    ("namespace empty", lambda c: c.put("q", "a", namespace=""), semcache.InvalidInputError),
    ("huge prompt", lambda c: c.put("x" * (1024 * 1024 + 1), "a"), semcache.TooLargeError),
    ("huge response", lambda c: c.put("q", "x" * (16 * 1024 * 1024 + 1)), semcache.TooLargeError),
    ("wrong dim vector", lambda c: c.put(np.ones(5), "a"), semcache.DimensionError),
    ("NaN vector", lambda c: c.put(np.full(8, np.nan), "a"), semcache.InvalidVectorError),
    ("zero vector", lambda c: c.get(np.zeros(8)), semcache.InvalidVectorError),
    ("2-D vector", lambda c: c.get(np.ones((2, 8))), semcache.InvalidVectorError),
    ("delete id str", lambda c: c.delete("1"), semcache.InvalidTypeError),
    ("put_many not pairs", lambda c: c.put_many(["q"]), semcache.InvalidTypeError),
]


@pytest.mark.parametrize("name,call,error", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_input_raises_and_writes_nothing(db_path, name, call, error):
    with semcache.open(db_path, dim=8) as cache:
        cache.put("existing", "value")
        cache.flush()
        before = file_state(db_path)
        with pytest.raises(error) as exc_info:
            call(cache)
        assert isinstance(exc_info.value, semcache.SemcacheError)
        assert str(exc_info.value)  # a message that names the problem
        assert file_state(db_path) == before
        assert cache.stats()["entries"] == 1


@pytest.mark.parametrize("kwargs,error", [
    ({"similarity_threshold": 1.5}, semcache.ThresholdError),
    ({"similarity_threshold": -0.1}, semcache.ThresholdError),
    ({"similarity_threshold": "high"}, semcache.ThresholdError),
    ({"max_entries": 0}, semcache.ConfigurationError),
    ({"ttl": -5}, semcache.InvalidInputError),
    ({"namespace": ""}, semcache.InvalidInputError),
])
def test_bad_settings_refused_before_creating_anything(db_path, kwargs, error):
    with pytest.raises(error):
        semcache.open(db_path, hash_only=True, **kwargs)
    assert not os.path.exists(db_path)


def test_threshold_error_is_value_error(db_path):
    with pytest.raises(ValueError, match="1.5"):
        semcache.open(db_path, hash_only=True, similarity_threshold=1.5)


def test_pragmas_from_settings_table(db_path):
    semcache.open(db_path, hash_only=True).close()
    con = sqlite3.connect(db_path)
    con.execute("INSERT INTO settings VALUES ('sqlite_synchronous', 'FULL')")
    con.execute("INSERT INTO settings VALUES ('sqlite_cache_size', '1; DROP TABLE entries')")
    con.commit()
    con.close()
    store = SQLiteStore(db_path)  # the engine applies the pragmas on every connection
    try:
        assert store._db.query("PRAGMA synchronous") == [(2,)]  # FULL (this connection)
    finally:
        store.close()
    with semcache.open(db_path, hash_only=True) as cache:
        cache.put("q", "a")  # the odd value was ignored, not executed
        assert cache.get("q").response == "a"
