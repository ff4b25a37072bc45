"""The counters over time (``Cache.stats_history``): per-minute buckets written with the
batched counters, summed over processes, kept 30 days, on both engines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import semcache
from tests.conftest import FakeClock, sql_rows
from tests.word_embedder import WordEmbedder

pytestmark = pytest.mark.engines("sqlite", "postgres")

DAY = 86_400
EVENTS = ("hits", "exact_hits", "semantic_hits", "misses", "puts", "tokens_saved",
          "guard_rejections", "feedback_right", "feedback_wrong")


def _sums(buckets: list[dict[str, int]]) -> dict[str, int]:
    return {name: sum(b[name] for b in buckets) for name in EVENTS}


def _traffic(cache: semcache.Cache) -> None:
    cache.put("What is the capital of France?", "Paris", tokens=7)
    cache.put("How tall is Mount Everest?", "8849 m", tokens=3)
    for _ in range(3):
        cache.get("What is the capital of France?")                   # exact
    cache.get("Tell me the capital of France")                        # semantic
    cache.get("What is the capital of Peru?")                         # miss (guard or far)
    cache.get("Completely unrelated words here")                       # miss
    hit = cache.get("How tall is Mount Everest?")
    assert hit is not None
    cache.feedback(hit, True)


def test_history_adds_up_to_the_counters(make_location: Callable[..., str],
                                         clock: FakeClock) -> None:
    with semcache.open(make_location(), embedder=WordEmbedder(), similarity_threshold=0.8,
                       clock=clock) as cache:
        _traffic(cache)
        stats = cache.stats()
        history = cache.stats_history()
    assert stats["hits"] == 5 and stats["semantic_hits"] == 1 and stats["misses"] >= 2
    assert len(history["minutes"]) == 60 and len(history["days"]) == 30
    # the buckets are consecutive, aligned, oldest first, the current one last
    now = int(clock() // 60) * 60
    assert [b["start"] for b in history["minutes"]] == list(range(now - 59 * 60, now + 60, 60))
    today = int(clock() // DAY) * DAY
    assert [b["start"] for b in history["days"]] == list(range(today - 29 * DAY, today + DAY,
                                                               DAY))
    expected = {name: stats[name] for name in EVENTS}
    assert _sums(history["minutes"]) == expected
    assert _sums(history["days"]) == expected
    assert history["minutes"][-1]["hits"] == 5  # a fake clock that never moved: one minute


def test_buckets_follow_the_clock_and_survive_a_restart(make_location: Callable[..., str],
                                                         clock: FakeClock) -> None:
    location = make_location()
    with semcache.open(location, embedder=WordEmbedder(), clock=clock) as cache:
        cache.put("q", "a")
        cache.get("q")
        cache.flush()
        clock.advance(600)                 # ten minutes later
        cache.get("q")
        cache.get("other question")
    clock.advance(7200)                    # two hours later (the next UTC day), another process
    with semcache.open(location, clock=clock) as cache:
        cache.get("q")
        history = cache.stats_history(minutes=140, days=2)
    minutes = {b["start"]: b for b in history["minutes"] if b["hits"] or b["misses"]}
    first = int((clock() - 7800) // 60) * 60
    assert sorted(minutes) == [first, first + 600, first + 7800]
    assert [(minutes[t]["hits"], minutes[t]["misses"]) for t in sorted(minutes)] == [
        (1, 0), (1, 1), (1, 0)]
    assert minutes[first]["puts"] == 1
    assert [b["hits"] for b in history["days"]] == [2, 1]


def test_a_clock_behind_counts_in_its_own_minute(make_location: Callable[..., str]) -> None:
    location = make_location()
    ahead, behind = FakeClock(1_700_000_000.0 + 180), FakeClock(1_700_000_000.0)
    with semcache.open(location, embedder="hashing", clock=ahead) as fast, \
            semcache.open(location, clock=behind) as slow:
        fast.put("q", "a")          # opens the later minute
        slow.put("q2", "a")         # three minutes behind: its own minute
        slow.put("q3", "a")
        fast.put("q4", "a")
        history = fast.stats_history(minutes=5)
        assert fast.stats()["puts"] == 4
    puts = [b["puts"] for b in history["minutes"]]
    assert puts == [0, 2, 0, 0, 2]


def test_history_sums_every_process(make_location: Callable[..., str]) -> None:
    location = make_location()
    with semcache.open(location, embedder="hashing") as cache:
        cache.put("shared question", "answer")
    script = textwrap.dedent(f"""
        import semcache
        with semcache.open({location!r}) as cache:
            for i in range(40):
                cache.get("shared question")
                cache.get("unknown %d" % i)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    with semcache.open(location) as cache:
        stats = cache.stats()
        history = cache.stats_history(minutes=10, days=1)
    assert stats["hits"] == 120 and stats["misses"] == 120
    assert _sums(history["minutes"])["hits"] == 120 == _sums(history["days"])["hits"]
    assert _sums(history["minutes"])["misses"] == 120


def _minute_rows(location: str, request: pytest.FixtureRequest) -> list[tuple[int, str, int]]:
    """(minute, name, shard) of every minute's counts stored (shard 0 on SQLite, whose
    current minute is kept in rows of counters)."""
    if "://" not in location:
        current = sql_rows(location, "SELECT value FROM counters WHERE name = 'minute'")
        return sorted([(m, n, 0) for m, n in sql_rows(
            location, "SELECT minute, name FROM counter_minutes")] + [
            (current[0][0], n[len("minute:"):], 0) for n, in sql_rows(
                location, "SELECT name FROM counters WHERE name GLOB 'minute:*'")])
    schema = parse_qs(urlsplit(location).query)["schema"][0]
    rows = request.getfixturevalue("pg_server").admin(
        f'SELECT minute, name, shard FROM "{schema}".counter_minutes')
    return sorted((int(m), str(n), int(s)) for m, n, s in rows)


@pytest.mark.parametrize("pipeline", [False, True], ids=["batch", "pipelined"])
def test_writers_prune_buckets_older_than_30_days(make_location: Callable[..., str],
                                                  clock: FakeClock, pipeline: bool,
                                                  request: pytest.FixtureRequest) -> None:
    location = make_location()
    if "://" in location:  # PostgreSQL writes its counts in two ways (docs/scale-out.md)
        location += "&pipeline=" + ("on" if pipeline else "off")
    elif pipeline:
        pytest.skip("SQLite has one way")
    start = int(clock() // 60)
    with semcache.open(location, embedder="hashing", clock=clock) as cache:
        cache.put("q", "a")
    clock.advance(3 * 3600)                # three hours later (PostgreSQL folds the shards)
    with semcache.open(location, clock=clock) as cache:
        cache.put("q2", "a")
        cache.get("q2")
    rows = _minute_rows(location, request)
    assert [row for row in rows if row[0] == start] == [(start, "puts", 0)]
    clock.advance(31 * DAY)                # a month later: the first minutes are gone
    with semcache.open(location, clock=clock) as cache:
        cache.put("q3", "a")
        history = cache.stats_history(days=30)
        assert cache.stats()["puts"] == 3  # the counters themselves are kept
    assert {m for m, *_ in _minute_rows(location, request)} == {int(clock() // 60)}
    assert _sums(history["days"])["puts"] == 1


def test_history_arguments_are_checked(make_location: Callable[..., str]) -> None:
    with semcache.open(make_location(), embedder="hashing") as cache:
        for bad in ({"minutes": -1}, {"minutes": 43_201}, {"days": 31}, {"days": True},
                    {"minutes": 1.5}):
            with pytest.raises(semcache.InvalidInputError):
                cache.stats_history(**bad)
        assert cache.stats_history(minutes=0, days=0) == {"minutes": [], "days": []}


def test_an_older_file_gets_the_table(tmp_path: Any, engine: str) -> None:
    if engine != "sqlite":
        pytest.skip("a schema-6 file is an SQLite file")
    import apsw

    path = str(tmp_path / "old.db")
    with semcache.open(path, embedder="hashing") as cache:
        cache.put("q", "a")
    conn = apsw.Connection(path)  # rewind to schema 6, as written before the dashboard
    conn.execute("DROP TABLE counter_minutes; DROP TABLE outcomes; DROP TABLE outcome_pools; "
                 "DELETE FROM schema_migrations WHERE version >= 7; "
                 "DELETE FROM counters WHERE name GLOB 'minute*'")
    conn.close()
    with semcache.open(path) as cache:
        cache.get("q")
        history = cache.stats_history(minutes=5)
        stats = cache.stats()
    assert stats["puts"] == 1 and stats["hits"] == 1
    assert _sums(history["minutes"])["hits"] == 1  # counted from the migration on
    assert _sums(history["minutes"])["puts"] == 0
