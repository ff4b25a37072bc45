"""The exact tier: round trips, TTL, LRU, namespaces, batching, persistence."""

from __future__ import annotations

import pytest

import semcache
from tests.engines import ENGINES

# Engine-independent: every test runs on an SQLite file and on a PostgreSQL schema.
pytestmark = pytest.mark.engines(*ENGINES)


def open_exact(path: str, **kw):  # hash_only: no embedder needed for the exact tier
    return semcache.open(path, hash_only=True, **kw)


@pytest.mark.parametrize("response", [
    "Paris", "", 42, 3.5, True, None, ["a", 1, {"b": [2, 3]}],
    {"choices": [{"message": {"content": "héllo ✓ 日本"}}], "usage": {"total_tokens": 7}},
])
def test_round_trip_json_values(location, response):
    with open_exact(location) as cache:
        entry_id = cache.put("What is the capital of France?", response)
        hit = cache.get("What is the capital of France?")
    assert hit is not None
    assert hit.response == response
    assert (hit.kind, hit.similarity, hit.entry_id, hit.namespace) == ("exact", 1.0, entry_id, "default")


def test_hit_fields_and_metadata(location, clock):
    with open_exact(location, clock=clock, ttl=100) as cache:
        cache.put("q", "a", metadata={"source": "test"}, tokens=12)
        hit = cache.get("q")
    assert hit.created_at == clock.now
    assert hit.expires_at == clock.now + 100
    assert hit.metadata == {"source": "test"}
    assert hit.prompt == "q" and hit.tokens == 12


def test_miss_and_exact_is_byte_exact(location):
    with open_exact(location) as cache:
        cache.put("Hello", "x")
        assert cache.get("hello") is None
        assert cache.get("Hello ") is None
        assert cache.get("Hello").response == "x"


def test_put_replaces_same_prompt(location):
    with open_exact(location) as cache:
        first = cache.put("q", "old")
        second = cache.put("q", "new")
        assert second > first
        assert cache.get("q").response == "new"
        assert cache.stats()["entries"] == 1


def test_ttl_expiry(location, clock):
    with open_exact(location, clock=clock, ttl=60, refresh_on_access=False) as cache:
        cache.put("q", "a")
        clock.advance(59.9)
        assert cache.get("q") is not None
        clock.advance(0.2)
        assert cache.get("q") is None  # expired entries are never returned


def test_per_entry_ttl_and_never(location, clock):
    with open_exact(location, clock=clock) as cache:
        cache.put("short", "a", ttl=10)
        cache.put("forever", "b", ttl=None)
        clock.advance(10 * 365 * 86_400)
        assert cache.get("short") is None
        hit = cache.get("forever")
        assert hit is not None and hit.expires_at is None


def test_default_ttl_is_one_day(location, clock):
    with open_exact(location, clock=clock) as cache:
        cache.put("q", "a")
        assert cache.get("q").expires_at == pytest.approx(clock.now + 86_400)
        clock.advance(86_400.5)
        assert cache.get("q") is None


def test_refresh_on_access_pushes_expiry(location, clock):
    with open_exact(location, clock=clock, ttl=100) as cache:
        cache.put("q", "a")
        clock.advance(90)
        assert cache.get("q").expires_at == clock.now + 100  # refreshed to t=190
        clock.advance(60)  # t=150: past the original expiry, inside the refreshed one
        assert cache.get("q") is not None
        clock.advance(101)
        assert cache.get("q") is None


def test_refresh_survives_reopen(location, clock):
    with open_exact(location, clock=clock, ttl=100) as cache:
        cache.put("q", "a")
        clock.advance(90)
        assert cache.get("q") is not None
    # close() flushed the batched refresh: another process (here: a reopen) sees it
    clock.advance(60)
    with open_exact(location, clock=clock) as cache:
        assert cache.get("q") is not None


def test_absolute_expiry_when_refresh_off(location, clock):
    with open_exact(location, clock=clock, ttl=100, refresh_on_access=False) as cache:
        cache.put("q", "a")
        clock.advance(90)
        assert cache.get("q").expires_at == clock.now + 10
        clock.advance(20)
        assert cache.get("q") is None


def test_purge_expired_counts(location, clock):
    with open_exact(location, clock=clock, ttl=10) as cache:
        cache.put_many([(f"q{i}", i) for i in range(5)])
        cache.put("keep", 1, ttl=None)
        clock.advance(11)
        assert cache.purge_expired() == 5
        stats = cache.stats()
        assert stats["expirations"] == 5 and stats["entries"] == 1


def test_lru_eviction_order(location, clock):
    with open_exact(location, clock=clock, max_entries=3) as cache:
        for p in ("a", "b", "c"):
            cache.put(p, p)
            clock.advance(1)
        assert cache.get("a") is not None  # a is now the most recently used
        clock.advance(1)
        cache.put("d", "d")  # evicts b, the least recently accessed
        assert cache.get("b") is None
        for p in ("d", "a", "c"):  # access order now: d, a, c (c most recent)
            clock.advance(1)
            assert cache.get(p) is not None
        clock.advance(1)
        cache.put("e", "e")  # evicts d
        assert cache.get("d") is None
        assert all(cache.get(p) is not None for p in ("a", "c", "e"))
        stats = cache.stats()
        assert stats["entries"] == 3 and stats["evictions"] == 2


def test_eviction_prefers_expired(location, clock):
    with open_exact(location, clock=clock, max_entries=2) as cache:
        cache.put("old", 1, ttl=5)
        clock.advance(1)
        cache.put("recent", 2, ttl=None)
        clock.advance(10)  # "old" expired
        cache.put("new", 3)
        s = cache.stats()
        assert (s["evictions"], s["expirations"], s["entries"]) == (0, 1, 2)
        assert cache.get("recent") is not None


def test_namespaces_isolated(location):
    with open_exact(location) as cache:
        cache.put("q", "tenant a", namespace="a")
        cache.put("q", "tenant b", namespace="b")
        assert cache.get("q", namespace="a").response == "tenant a"
        assert cache.get("q", namespace="b").response == "tenant b"
        assert cache.get("q") is None  # default namespace has nothing
        assert cache.clear(namespace="a") == 1
        assert cache.get("q", namespace="a") is None
        assert cache.get("q", namespace="b").response == "tenant b"


def test_default_namespace_setting(location):
    with open_exact(location, namespace="t7") as cache:
        cache.put("q", "a")
        assert cache.get("q").namespace == "t7"
        assert cache.get("q", namespace="default") is None


def test_get_many_put_many(location):
    with open_exact(location) as cache:
        ids = cache.put_many([("a", 1), ("b", 2), ("c", 3)])
        assert len(set(ids)) == 3
        hits = cache.get_many(["a", "x", "c"])
        assert [h.response if h else None for h in hits] == [1, None, 3]
        s = cache.stats()
        assert (s["puts"], s["hits"], s["misses"]) == (3, 2, 1)


def test_put_many_is_all_or_nothing(location):
    with open_exact(location) as cache:
        with pytest.raises(semcache.SerializationError):
            cache.put_many([("a", 1), ("b", object())])
        assert cache.get("a") is None and cache.stats()["entries"] == 0


def test_delete_invalidate_clear(location):
    with open_exact(location) as cache:
        a = cache.put("a", 1)
        cache.put("b", 2)
        cache.put("c", 3, namespace="other")
        assert cache.delete(a) is True
        assert cache.delete(a) is False
        assert cache.get("a") is None
        assert cache.invalidate("b") == 1
        assert cache.invalidate("b") == 0
        assert cache.get("c", namespace="other") is not None
        assert cache.clear() == 1
        assert cache.stats()["entries"] == 0


def test_stats_counters(location):
    with open_exact(location) as cache:
        cache.put("q", "a" * 100)
        cache.get("q")
        cache.get("q")
        cache.get("nope")
        s = cache.stats()
    assert (s["hits"], s["exact_hits"], s["semantic_hits"], s["misses"]) == (2, 2, 0, 1)
    assert s["hit_rate"] == pytest.approx(2 / 3)
    assert s["puts"] == 1 and s["entries"] == 1 and s["bytes"] > 0


def test_hits_recorded_in_file(location):
    with open_exact(location) as cache:
        cache.put("q", "a")
        for _ in range(3):
            cache.get("q")
    with open_exact(location) as cache:
        assert cache.stats()["hits"] == 3
        assert [e.hits for e in cache.entries()] == [3]


def test_settings_persist_in_file(location):
    with open_exact(location, ttl=123, max_entries=7, similarity_threshold=0.8,
                    namespace="ns") as cache:
        pass
    with open_exact(location) as cache:
        assert (cache.ttl, cache.max_entries, cache.similarity_threshold, cache.namespace) == \
            (123.0, 7, 0.8, "ns")


def test_closed_cache_raises(location):
    cache = open_exact(location)
    cache.close()
    cache.close()  # idempotent
    with pytest.raises(semcache.CacheClosedError):
        cache.get("q")


@pytest.mark.parametrize("value", [2**70, -(2**65), 2**64 - 1, -(2**63) - 1, {"n": [10**30]},
                                   0.1234567890123456789, "1234567890123456789012"])
def test_numbers_round_trip_exactly(location, value):
    with open_exact(location) as cache:
        cache.put("q", value)
        got = cache.get("q").response
    assert got == value and type(got) is type(value)


def test_put_many_with_a_repeated_prompt_keeps_the_last(location):
    """The bulk path (PostgreSQL sends the batch at once) behaves as puts one by one."""
    with open_exact(location) as cache:
        ids = cache.put_many([("a", 1), ("b", 2), ("a", 3)] + [(f"k{i}", i) for i in range(20)])
        assert ids[:3] == sorted(ids[:3]) and len(set(ids)) == 23
        assert cache.get("a").response == 3 and cache.get("a").entry_id == ids[2]
        assert cache.stats()["entries"] == 22 and cache.stats()["puts"] == 23
        assert [e.id for e in cache.entries(order="id")][:2] == [ids[1], ids[2]]
