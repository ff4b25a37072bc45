"""Feedback acts only within its namespace, and a wrong exact answer stops being served
(issue 20, items 2 and 13), on both engines.

Entry ids are sequential and exposed (``X-Semcache-Entry``, ``cache_info``): before this,
one tenant deleted another tenant's entries with ``feedback(entry_id, False)`` or a
hand-made ``Hit(kind="exact")``; and the documented pattern
``cache.feedback(info.entry_id, False, query=question, similarity=info.similarity)`` after
an exact hit stored a semantic verdict, so the same answer was served again.
"""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest

import semcache
from semcache.demo.openai_stub import StubOpenAIServer
from semcache.integrations.openai import wrap
from tests.engines import ENGINES, stored_state

pytestmark = pytest.mark.engines(*ENGINES)

_GET = """
import sys, semcache
c = semcache.open(sys.argv[1], namespace=sys.argv[2])
hit = c.get(sys.argv[3], exact_only=True)
print("none" if hit is None else hit.response)
c.close()
"""


def _get_elsewhere(location: str, namespace: str, prompt: str) -> str:
    """An exact get from another process."""
    return subprocess.run([sys.executable, "-c", _GET, location, namespace, prompt],
                          capture_output=True, text=True, check=True, timeout=120).stdout.strip()


def _tenant_a(location: str) -> list[int]:
    with semcache.open(location, embedder="hashing", namespace="tenant-a") as a:
        return [a.put(f"tenant A's private question {i}", f"A's answer {i}") for i in range(5)]


def test_an_id_of_another_namespace_is_refused_and_nothing_changes(location: str) -> None:
    ids = _tenant_a(location)
    with semcache.open(location, namespace="tenant-b") as b:
        b.put("B's own question", "B's answer")
        before = stored_state(location)
        for entry_id in ids:
            with pytest.raises(semcache.InvalidInputError, match="namespace 'tenant-b'"):
                b.feedback(entry_id, False)  # the cache's namespace: tenant-b
            with pytest.raises(semcache.InvalidInputError):
                b.feedback(entry_id, False, query="tenant A's private question 0",
                           namespace="tenant-b")
        with pytest.raises(semcache.InvalidInputError):
            b.feedback(10**9, False)  # no such entry: the same refusal (no oracle)
        assert stored_state(location) == before
        assert b.stats()["feedback_wrong"] == 0
    assert _get_elsewhere(location, "tenant-a", "tenant A's private question 3") == "A's answer 3"


def test_a_hand_made_hit_is_checked_against_the_stored_entry(location: str) -> None:
    ids = _tenant_a(location)
    with semcache.open(location, namespace="tenant-b") as b:
        own = b.put("B's own question", "B's answer")
        before = stored_state(location)
        forged = [
            # another tenant's entry, claimed to be ours
            semcache.Hit("x", "exact", 1.0, ids[0], "tenant-b", 0.0, None,
                         query="tenant A's private question 0"),
            # another tenant's entry, in its own namespace, from our namespace
            semcache.Hit("x", "exact", 1.0, ids[1], "tenant-a", 0.0, None,
                         query="tenant A's private question 1"),
            # our own entry, but its key is not the query's: it was not an exact hit of it
            semcache.Hit("x", "exact", 1.0, own, "tenant-b", 0.0, None, query="other text"),
            # our own entry, another scope than its own
            semcache.Hit("x", "semantic", 0.9, own, "tenant-b", 0.0, None, scope="gpt-x",
                         query="B's own questions"),
        ]
        for hit in forged:
            with pytest.raises(semcache.InvalidInputError):
                b.feedback(hit, False)
        assert stored_state(location) == before
    with semcache.open(location, namespace="tenant-a") as a:
        assert [a.entry(i) is not None for i in ids] == [True] * 5


def test_similarity_must_be_a_number_not_a_bool(location: str) -> None:
    with semcache.open(location, embedder="hashing") as cache:
        entry = cache.put("How do I reset my password?", "Use the reset link")
        before = stored_state(location)
        for bad in (True, False, 1.5, float("nan"), "0.9"):
            with pytest.raises(semcache.InvalidInputError):
                cache.feedback(entry, True, query="reset my password how?", similarity=bad)
        assert stored_state(location) == before


def test_a_hit_of_another_namespace_asks_for_its_namespace(location: str) -> None:
    with semcache.open(location, embedder="hashing") as cache:
        cache.put("What is 2 + 2?", "5", namespace="math")
        hit = cache.get("What is 2 + 2?", namespace="math")
        assert hit is not None
        with pytest.raises(semcache.InvalidInputError, match="namespace='math'"):
            cache.feedback(hit, False)  # the cache's namespace is "default"
        cache.feedback(hit, False, namespace="math")
        assert cache.get("What is 2 + 2?", namespace="math") is None


def test_a_wrong_verdict_by_id_and_query_on_an_exact_entry_deletes_it(location: str) -> None:
    with semcache.open(location, embedder="hashing") as cache:
        entry = cache.put("What is 2 + 2?", "5")
        hit = cache.get("What is 2 + 2?")
        assert hit is not None and hit.kind == "exact"
        cache.feedback(hit.entry_id, False, query="What is 2 + 2?", similarity=hit.similarity)
        assert cache.get("What is 2 + 2?") is None
        [verdict] = cache.verdicts()
        assert (verdict.entry_id, verdict.kind, verdict.correct) == (entry, "exact", False)
    assert _get_elsewhere(location, "default", "What is 2 + 2?") == "none"


def test_a_wrong_verdict_by_id_with_another_query_only_blocks_that_pair(location: str) -> None:
    with semcache.open(location, embedder="hashing") as cache:
        entry = cache.put("How do I reset my password?", "Use the reset link")
        cache.feedback(entry, False, query="How do I reset my password at work?",
                       similarity=0.93)
        assert cache.entry(entry) is not None  # a semantic verdict: the entry stays
        assert cache.get("How do I reset my password?").response == "Use the reset link"
        assert cache.verdicts()[0].kind == "semantic"


def test_the_documented_wrap_pattern_stops_a_wrong_exact_answer(location: str) -> None:
    question = "How do I cancel my order?"
    messages = [{"role": "user", "content": question}]
    with StubOpenAIServer() as server, \
            semcache.open(location, embedder="hashing", namespace="shop") as cache:
        client = wrap(openai.OpenAI(base_url=server.base_url, api_key="sk-test",
                                    max_retries=0), cache)
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        info = semcache.cache_info(reply)
        assert info is not None and info.hit and info.kind == "exact"
        assert len(server.chat_requests) == 1
        # the pattern of docs/integrations.md ("Was this answer cached?")
        cache.feedback(info.entry_id, False, query=question, similarity=info.similarity,
                       namespace=info.namespace)
        again = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert not semcache.cache_info(again).hit and len(server.chat_requests) == 2
        other = subprocess.run(
            [sys.executable, "-c", "import sys, semcache\n"
             "c = semcache.open(sys.argv[1])\n"
             "print(c.entry(int(sys.argv[2])))", location, str(info.entry_id)],
            capture_output=True, text=True, check=True, timeout=120).stdout.strip()
        assert other == "None"  # deleted for every process
