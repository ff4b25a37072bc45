"""max_bytes: the size limit in bytes (issue 24 item 3), on both engines.

What the bound counts is ``semcache.store.base.entry_size`` (the contract suite checks the
engines store it); here: the setting is stored and changeable like max_entries, bad values
are refused, eviction goes expired first then least recently used, an entry that can never
fit is refused with nothing written, ``stats()["bytes"]`` and the per-namespace bytes agree,
migration 9 recounts older caches, and writers in several processes never leave the cache
above the bound once they committed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import time
from typing import Any

import pytest

import semcache
from tests.cli_helpers import run_cli
from tests.engines import ENGINES, by_hand, cache_exists

pytestmark = pytest.mark.engines(*ENGINES)
CTX = mp.get_context("spawn")
RESPONSE = "r" * 40  # every entry of these tests has the same size (prompts of one length)


def open_exact(location: str, **kw: Any) -> semcache.Cache:
    return semcache.open(location, hash_only=True, **kw)


def entry_bytes(location: str) -> int:
    """The size of one entry ``pNN`` -> RESPONSE, measured in a cache of its own."""
    with open_exact(location, max_entries=None) as cache:
        cache.put("p00", RESPONSE)
        size = cache.stats()["bytes"]
        cache.clear()
    return int(size)


def test_the_setting_is_stored_changeable_and_checked(make_location) -> None:  # noqa: ANN001
    location = make_location()
    with open_exact(location, max_bytes=10_000) as cache:
        assert cache.max_bytes == 10_000
    with open_exact(location) as cache:  # omitted: read from the cache
        assert cache.max_bytes == 10_000
    with open_exact(location, max_bytes=20_000):
        pass
    with open_exact(location) as cache:
        assert cache.max_bytes == 20_000
    with open_exact(location, max_bytes=None):
        pass
    with open_exact(location) as cache:
        assert cache.max_bytes is None
    fresh = make_location("bad.db")
    for bad in (0, -1, 2.5, "1000", True, 2 ** 70):
        with pytest.raises(semcache.ConfigurationError, match="max_bytes"):
            open_exact(fresh, max_bytes=bad)
    assert not cache_exists(fresh)


def test_eviction_is_expired_first_then_least_recently_used(location, clock) -> None:  # noqa: ANN001
    size = entry_bytes(location)
    with open_exact(location, clock=clock, max_bytes=3 * size, max_entries=None) as cache:
        cache.put("p01", RESPONSE, ttl=5)
        clock.advance(1)
        for p in ("p02", "p03"):
            cache.put(p, RESPONSE, ttl=None)
            clock.advance(1)
        clock.advance(10)  # p01 expired
        cache.put("p04", RESPONSE)
        s = cache.stats()
        assert (s["entries"], s["bytes"], s["expirations"], s["evictions"]) == (3, 3 * size, 1, 0)
        assert cache.get("p02") is not None  # p02 is now more recent than p03
        clock.advance(1)
        cache.put("p05", RESPONSE)  # evicts p03, the least recently used
        assert cache.get("p03", exact_only=True) is None
        assert all(cache.get(p) is not None for p in ("p02", "p04", "p05"))
        s = cache.stats()
        assert (s["entries"], s["bytes"], s["evictions"]) == (3, 3 * size, 1)
        # A batch bigger than what is left evicts in LRU order, the batch's own first
        # entries included (each as old as its position).
        clock.advance(1)
        cache.put_many([(f"p{i}", RESPONSE) for i in range(10, 15)])
        assert [cache.get(f"p{i}", exact_only=True) is not None for i in range(10, 15)] == \
            [False, False, True, True, True]
        assert cache.stats()["bytes"] == 3 * size


def test_an_entry_that_can_never_fit_is_refused_and_nothing_written(location) -> None:  # noqa: ANN001
    size = entry_bytes(location)
    with open_exact(location, max_bytes=size + 10) as cache:
        cache.put("p01", RESPONSE)
        before = cache.stats()
        with pytest.raises(semcache.TooLargeError, match=f"max_bytes={size + 10}") as err:
            cache.put_many([("p02", RESPONSE), ("p03", {"big": list(range(200))})])
        assert isinstance(err.value, ValueError)
        after = cache.stats()
        assert (after["entries"], after["bytes"], after["puts"]) == \
            (before["entries"], before["bytes"], before["puts"])
        assert cache.get("p02", exact_only=True) is None and cache.get("p01") is not None


def test_stats_bytes_and_namespaces_agree_with_the_entries(location) -> None:  # noqa: ANN001
    with semcache.open(location, embedder="hashing", max_bytes=1_000_000) as cache:
        cache.put("q1 é", "a" * 100, metadata={"source": "x"})
        cache.put("q2", {"long": "b" * 3000}, namespace="other")
        cache.store(b"request key", "answer", text="q3", scope="gpt", namespace="other")
        entries = cache.entries()
        total = sum(e.size for e in entries)
        assert cache.stats()["bytes"] == total > 3 * 1024  # vectors: 256 float32 each
        per_ns = {n.namespace: n.bytes for n in cache.namespaces()}
        assert per_ns == {ns: sum(e.size for e in entries if e.namespace == ns)
                          for ns in ("default", "other")}
        cache.delete(entries[0].id)
        assert cache.stats()["bytes"] == total - entries[0].size


def _put_worker(location: str, worker: int, n: int) -> None:
    with semcache.open(location, hash_only=True) as cache:
        for i in range(0, n, 5):
            cache.put_many([(f"w{worker}-{j:03d}", RESPONSE) for j in range(i, i + 5)])


def _watch(location: str, stop: Any, out: Any) -> None:
    """The largest byte total seen while the writers run (committed states only), and
    how many times it looked."""
    seen, looks = 0, 0
    with semcache.open(location, hash_only=True) as cache:
        while not stop.is_set():
            seen = max(seen, cache.stats()["bytes"])
            looks += 1
            time.sleep(0.002)
    out.put((seen, looks))


def test_writers_in_several_processes_never_leave_it_above_the_bound(location) -> None:  # noqa: ANN001
    size = entry_bytes(location)  # prompts w0-000 have the length of p00 plus 3
    bound = 25 * size
    open_exact(location, max_bytes=bound, max_entries=None).close()
    out, stop = CTX.Queue(), CTX.Event()
    watcher = CTX.Process(target=_watch, args=(location, stop, out))
    writers = [CTX.Process(target=_put_worker, args=(location, w, 60)) for w in range(3)]
    watcher.start()
    for p in writers:
        p.start()
    for p in writers:
        p.join(300)
    assert [p.exitcode for p in writers] == [0, 0, 0]
    stop.set()
    seen, looks = out.get(timeout=60)
    watcher.join(30)
    assert seen <= bound and looks > 10
    with open_exact(location) as cache:
        s = cache.stats()
        assert s["bytes"] <= bound and s["puts"] == 1 + 180  # entry_bytes' put, then 180
        assert s["entries"] + s["evictions"] == 180 and s["evictions"] > 0
        assert s["bytes"] == sum(e.size for e in cache.entries())


def test_migration_9_recounts_what_older_caches_stored(location) -> None:  # noqa: ANN001
    with semcache.open(location, embedder="hashing") as cache:
        cache.put("q é", "a" * 50, metadata={"m": 1})
        cache.store(b"key", "b", text="q2", scope="s")
        sizes = sorted(e.size for e in cache.entries())
    # Back to schema 8: sizes as semcache counted them before (prompt in characters, no
    # key, code nor fixed columns), the total kept by the triggers.
    by_hand(location, "UPDATE entries SET size = length(response) + length(prompt)",
            "UPDATE {schema}.entries SET size = octet_length(response) + length(prompt)")
    by_hand(location, "DELETE FROM schema_migrations WHERE version = 9",
            "DELETE FROM {schema}.schema_migrations WHERE version = 9")
    with semcache.open(location) as cache:  # migrates (the sizes by hand are far smaller)
        assert sorted(e.size for e in cache.entries()) == sizes
        assert cache.stats()["bytes"] == sum(sizes)


def test_semcache_stats_prints_bytes_and_the_bound(location) -> None:  # noqa: ANN001
    with semcache.open(location, embedder="hashing", max_bytes=2 * 1024 * 1024) as cache:
        cache.put("q", "a" * 500)
        total = cache.stats()["bytes"]
    proc = run_cli("stats", location)
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"^bytes: +{total} \(", proc.stdout, re.M), proc.stdout
    assert re.search(r"^max bytes: +2097152 \(2\.0 MiB\)$", proc.stdout, re.M), proc.stdout
    data = json.loads(run_cli("stats", location, "--json").stdout)
    assert data["stats"]["bytes"] == total and data["settings"]["max_bytes"] == 2097152
    assert sum(n["bytes"] for n in data["namespaces"]) == total
