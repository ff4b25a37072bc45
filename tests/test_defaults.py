"""The OneLLM-style process-wide API: init_cache, cache_stats, clear_cache, disable_cache."""

from __future__ import annotations

import threading

import pytest

import semcache
from semcache import defaults
from semcache.defaults import (
    cache_stats,
    clear_cache,
    default_cache_path,
    disable_cache,
    get_default_cache,
    init_cache,
    set_default_cache,
)
from semcache.errors import CacheClosedError, ConfigurationError, InvalidInputError
from semcache.integrations.streaming import replay_settings


@pytest.fixture(autouse=True)
def restore_global_state():
    """Every test starts and ends without a default cache (the previous one is restored)."""
    previous = set_default_cache(None)
    yield
    disable_cache()
    set_default_cache(previous)


def test_no_default_cache_initially():
    assert get_default_cache() is None
    stats = cache_stats()
    assert stats["hits"] == stats["misses"] == stats["entries"] == stats["tokens_saved"] == 0
    assert stats["hit_rate"] == 0.0
    assert clear_cache() == 0
    disable_cache()  # idempotent


def test_init_cache_opens_default(tmp_path):
    cache = init_cache(tmp_path / "llm.db", hash_only=True)
    assert get_default_cache() is cache
    assert cache.hash_only is True
    assert replay_settings(None, None) == ("words", 8)
    assert cache.ttl == 86_400
    assert cache.max_entries == 1000
    assert (tmp_path / "llm.db").exists()


def test_disabled_stats_have_the_keys_of_a_cache(tmp_path):
    with semcache.open(tmp_path / "a.db", embedder="hashing") as cache:
        keys = set(cache.stats())
    stats = cache_stats()
    assert set(stats) == keys
    assert stats["explorations"] == stats["outcomes_right"] == stats["outcomes_wrong"] == 0


def test_init_cache_keeps_the_settings_of_a_file_in_use(tmp_path):
    """init_cache's defaults (1000 entries, threshold 0.95, one day) are for a new file:
    on a file an application filled with open() they were written into it as settings it
    did not store yet, and the next put evicted a third of its entries."""
    path = tmp_path / "app.db"
    with semcache.open(path, embedder="hashing") as cache:
        cache.put_many([(f"prompt {i}", f"r{i}") for i in range(1500)])
        expected = (cache.max_entries, cache.threshold(), cache.ttl)
    cache = init_cache(path)
    assert (cache.max_entries, cache.threshold(), cache.ttl) == expected
    cache.put("one more", "x")
    stats = cache.stats()
    assert (stats["entries"], stats["evictions"]) == (1501, 0)
    disable_cache()
    with semcache.open(path) as reopened:
        assert (reopened.max_entries, reopened.threshold(), reopened.ttl) == expected
    # what the caller passes still changes the file
    cache = init_cache(path, max_entries=2000)
    assert cache.max_entries == 2000 and cache.threshold() == expected[1]


def test_init_cache_gives_its_defaults_to_a_new_or_empty_file(tmp_path):
    semcache.open(tmp_path / "empty.db", embedder="hashing").close()  # created, no entry
    cache = init_cache(tmp_path / "empty.db")
    assert (cache.max_entries, cache.threshold(), cache.ttl) == (1000, 0.95, 86_400)
    disable_cache()
    with semcache.open(tmp_path / "empty.db") as reopened:  # stored: every process agrees
        assert (reopened.max_entries, reopened.ttl) == (1000, 86_400)


def test_init_cache_settings(tmp_path):
    cache = init_cache(
        tmp_path / "llm.db",
        max_entries=50,
        similarity_threshold=0.8,
        stream_chunk_strategy="sentences",
        stream_chunk_length=2,
        ttl=3600,
        embedder="hashing",
    )
    assert cache.max_entries == 50
    assert cache.similarity_threshold == pytest.approx(0.8)
    assert replay_settings(None, None) == ("sentences", 2)
    assert cache.ttl == 3600


def test_p_is_onellm_alias_of_similarity_threshold(tmp_path):
    cache = init_cache(tmp_path / "llm.db", p=0.9, embedder="hashing")
    assert cache.similarity_threshold == pytest.approx(0.9)
    cache = init_cache(tmp_path / "llm2.db", p=0.9, similarity_threshold=0.9, embedder="hashing")
    assert cache.similarity_threshold == pytest.approx(0.9)
    with pytest.raises(ConfigurationError, match="p="):
        init_cache(tmp_path / "llm3.db", p=0.9, similarity_threshold=0.8, embedder="hashing")
    assert get_default_cache() is cache  # a failed init keeps the previous default


def test_invalid_settings_raise(tmp_path):
    with pytest.raises(InvalidInputError):
        init_cache(tmp_path / "a.db", hash_only=True, stream_chunk_strategy="tokens")
    with pytest.raises(InvalidInputError):
        init_cache(tmp_path / "b.db", p=1.5, embedder="hashing")
    assert get_default_cache() is None


def test_path_none_uses_user_cache_dir(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / "ucd" / app))
    assert default_cache_path() == tmp_path / "ucd" / "semcache" / "llm.db"
    cache = init_cache(hash_only=True)
    assert (tmp_path / "ucd" / "semcache" / "llm.db").exists()
    assert get_default_cache() is cache


def test_reinit_closes_previous(tmp_path):
    first = init_cache(tmp_path / "one.db", hash_only=True)
    second = init_cache(tmp_path / "two.db", hash_only=True)
    assert get_default_cache() is second
    with pytest.raises(CacheClosedError):
        first.stats()


def test_stats_clear_disable(tmp_path):
    cache = init_cache(tmp_path / "llm.db", hash_only=True)
    cache.put("hello", "world")
    cache.get("hello")
    cache.get("nope")
    stats = cache_stats()
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 1, 1)
    direct = cache.stats()
    assert {k: stats[k] for k in ("hits", "misses", "entries", "puts")} == {
        k: direct[k] for k in ("hits", "misses", "entries", "puts")
    }
    assert clear_cache() == 1
    assert cache_stats()["entries"] == 0
    disable_cache()
    assert get_default_cache() is None
    with pytest.raises(CacheClosedError):
        cache.get("hello")
    assert cache_stats()["entries"] == 0


def test_thread_safe_init(tmp_path):
    caches = []
    errors = []

    def worker(i):
        try:
            caches.append(init_cache(tmp_path / f"t{i}.db", hash_only=True))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    current = get_default_cache()
    assert current in caches
    open_ones = []
    for cache in caches:
        try:
            cache.stats()
            open_ones.append(cache)
        except CacheClosedError:
            pass
    assert open_ones == [current]  # every replaced default was closed


def test_set_default_cache_does_not_close(tmp_path):
    import semcache

    mine = semcache.open(tmp_path / "mine.db", hash_only=True)
    try:
        assert set_default_cache(mine) is None
        assert get_default_cache() is mine
        assert set_default_cache(None) is mine
        mine.stats()  # still open: the caller owns it
    finally:
        mine.close()


def test_module_state_is_private():
    assert defaults.get_default_cache is get_default_cache
