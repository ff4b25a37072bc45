"""Identical concurrent misses are coalesced: one caller pays the model, the others wait for
its answer (threads of one process, and processes sharing one file or one server)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import openai
import pytest

import semcache
from semcache.demo.openai_stub import StubOpenAIServer
from tests.engines import ENGINES

# Every test runs on an SQLite file (kernel byte-range locks) and on a PostgreSQL schema
# (leased rows in the claims table).
pytestmark = pytest.mark.engines(*ENGINES)

ROOT = Path(__file__).resolve().parent.parent


def ask(client: openai.OpenAI, question: str) -> str:
    completion = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": question}])
    return completion.choices[0].message.content or ""


def test_claims_serialize_callers_and_report_waiting(location: str) -> None:
    with semcache.open(location, embedder="hashing") as cache:
        first = cache.claim(b"request-1")
        assert first.held and not first.waited
        other = cache.claim(b"request-2", wait=0)  # another key: not blocked
        assert other.held
        other.release()
        blocked = cache.claim(b"request-1", wait=0.2)  # same key, held: times out
        assert not blocked.held and blocked.waited
        waiter: list[semcache.cache._coalesce.Claim] = []
        t = threading.Thread(target=lambda: waiter.append(cache.claim(b"request-1", wait=10)))
        t.start()
        time.sleep(0.2)
        first.release()
        t.join(10)
        assert waiter[0].held and waiter[0].waited
        waiter[0].release()
        with pytest.raises(semcache.InvalidInputError):
            cache.claim(b"k", wait=-1)


def test_threads_asking_the_same_question_pay_once(location: str) -> None:
    with StubOpenAIServer(latency=0.3) as server, \
            semcache.open(location, embedder="hashing") as cache:
        client = semcache.wrap(openai.OpenAI(base_url=server.base_url, api_key="k",
                                             max_retries=0), cache)
        answers: list[str] = []
        threads = [threading.Thread(target=lambda: answers.append(ask(client, "Same question?")))
                   for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(answers) == 12 and len(set(answers)) == 1
        assert len(server.chat_requests) == 1


async def test_async_tasks_asking_the_same_question_pay_once(location: str) -> None:
    with StubOpenAIServer(latency=0.3) as server, \
            semcache.open(location, embedder="hashing") as cache:
        client = semcache.wrap(openai.AsyncOpenAI(base_url=server.base_url, api_key="k",
                                                  max_retries=0), cache)

        async def one() -> str:
            completion = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "Same question?"}])
            return completion.choices[0].message.content or ""

        answers = await asyncio.gather(*(one() for _ in range(10)))
        assert len(set(answers)) == 1 and len(server.chat_requests) == 1


_WORKER = """
    import sys, threading, openai, semcache
    path, url, questions = sys.argv[1], sys.argv[2], sys.argv[3].split("|")
    cache = semcache.open(path, embedder="hashing")
    client = semcache.wrap(openai.OpenAI(base_url=url, api_key="k", max_retries=0), cache)
    answers = {}

    def run(offset):
        for i in range(len(questions)):
            q = questions[(i + offset) % len(questions)]
            c = client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": q}])
            answers.setdefault(q, set()).add(c.choices[0].message.content)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(max(len(v) for v in answers.values()))
    cache.close()
"""


def test_worker_processes_on_one_file_pay_once_per_question(location: str) -> None:
    questions = [f"Question number {i} about the billing service?" for i in range(20)]
    path = location
    semcache.open(path, embedder="hashing").close()
    with StubOpenAIServer(latency=0.2) as server:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        workers = [subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_WORKER), path, server.base_url,
             "|".join(questions)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env) for _ in range(4)]
        outs = [w.communicate(timeout=300) for w in workers]
        assert all(w.returncode == 0 for w in workers), [e for _, e in outs]
        calls = Counter(r["messages"][-1]["content"] for r in server.chat_requests)
    # 4 processes x 6 threads x 20 questions = 480 requests over 20 distinct questions
    duplicates = sum(n - 1 for n in calls.values())
    assert set(calls) == set(questions)
    assert duplicates <= max(1, len(questions) // 100), calls
    assert all(out.strip() == "1" for out, _ in outs)  # every caller saw one answer
