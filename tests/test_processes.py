"""Several real processes on one file: persistence, visibility, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

import semcache

CTX = mp.get_context("spawn")  # a fresh interpreter, like a separate worker process


def _put_many(path: str, worker: int, count: int) -> None:
    with semcache.open(path, hash_only=True, max_entries=None) as cache:
        for i in range(count):
            cache.put(f"w{worker}-q{i}", {"worker": worker, "i": i})


def _get_and_count(path: str, prompt: str, out) -> None:  # noqa: ANN001 - mp.Queue
    with semcache.open(path, hash_only=True) as cache:
        hit = cache.get(prompt)
        out.put(None if hit is None else hit.response)


def _serve(path: str, requests, replies) -> None:  # noqa: ANN001
    """A long-lived worker that keeps the cache open and answers gets."""
    with semcache.open(path, hash_only=True) as cache:
        while True:
            prompt = requests.get()
            if prompt is None:
                return
            hit = cache.get(prompt)
            replies.put(None if hit is None else hit.response)


def test_persistence_across_process_restart(db_path):
    code = ("import semcache,sys; c=semcache.open(sys.argv[1], hash_only=True); "
            "c.put('persist me', {'v': 1}); c.close()")
    subprocess.run([sys.executable, "-c", code, db_path], check=True)
    code = ("import semcache,sys,json; c=semcache.open(sys.argv[1], hash_only=True); "
            "h=c.get('persist me'); print(json.dumps(h.response)); c.close()")
    out = subprocess.run([sys.executable, "-c", code, db_path], check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == '{"v": 1}'


def test_put_in_one_process_visible_in_another_open_one(db_path):
    semcache.open(db_path, hash_only=True).close()
    requests, replies = CTX.Queue(), CTX.Queue()
    worker = CTX.Process(target=_serve, args=(db_path, requests, replies))
    worker.start()
    try:
        requests.put("shared")
        assert replies.get(timeout=60) is None
        with semcache.open(db_path, hash_only=True) as cache:
            cache.put("shared", "from parent")
        requests.put("shared")  # the worker's very next call sees it
        assert replies.get(timeout=60) == "from parent"
    finally:
        requests.put(None)
        worker.join(60)
    assert worker.exitcode == 0


def test_four_processes_500_puts_each(db_path):
    semcache.open(db_path, hash_only=True, max_entries=None).close()
    workers = [CTX.Process(target=_put_many, args=(db_path, w, 500)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(180)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    with semcache.open(db_path, hash_only=True) as cache:
        stats = cache.stats()
        assert stats["entries"] == 2000 and stats["puts"] == 2000
        missing = [(w, i) for w in range(4) for i in range(500)
                   if cache.get(f"w{w}-q{i}", exact_only=True) is None]
        assert missing == []
        assert cache.get("w3-q499").response == {"worker": 3, "i": 499}


def test_counters_add_up_across_processes(db_path):
    with semcache.open(db_path, hash_only=True) as cache:
        cache.put("q", "a")
    out = CTX.Queue()
    workers = [CTX.Process(target=_get_and_count, args=(db_path, p, out))
               for p in ("q", "q", "missing")]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    assert sorted(map(str, (out.get(), out.get(), out.get()))) == ["None", "a", "a"]
    with semcache.open(db_path, hash_only=True) as cache:
        s = cache.stats()
    assert (s["hits"], s["misses"], s["puts"]) == (2, 1, 1)
