"""Odd upstream stream chunks through ``semcache.wrap`` and through ``semcache serve``.

The upstream is the local OpenAI stub with scripted chunk lists; clients are the real
``openai`` SDK (against the stub through ``wrap``, and against a real proxy process). A chunk
the accumulator cannot read (``{"choices": [1]}``, ``"index": "x"``...) must not cut the
client's stream: every chunk reaches the client, and the answer is not stored. An ``n=2``
stream that ends after choice 0 finished is not stored either; a complete one is.
"""

from __future__ import annotations

import copy
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import semcache
from semcache.demo.openai_stub import StubOpenAIServer, last_user_text
from tests.proxy_helpers import ProxyProcess


def _chunk(choices: Any, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-odd", "object": "chat.completion.chunk", "created": 1,
            "model": "stub-model", "choices": choices, **extra}


def _delta(index: Any, content: Any = None, finish: Any = None, **delta: Any) -> dict[str, Any]:
    body = dict(delta)
    if content is not None:
        body["content"] = content
    return {"index": index, "delta": body, "logprobs": None, "finish_reason": finish}


_GOOD_START = [_chunk([_delta(0, "Hello", role="assistant")]), _chunk([_delta(0, " world")])]
_GOOD_END = [_chunk([_delta(0, finish="stop")])]

#: name -> the chunks the upstream streams (each list ends like a complete stream).
ODD: dict[str, list[dict[str, Any]]] = {
    "choice-is-a-number": [*_GOOD_START, _chunk([1]), *_GOOD_END],
    "index-is-text": [*_GOOD_START, _chunk([_delta("x", "!")]), *_GOOD_END],
    "index-is-a-bool": [*_GOOD_START, _chunk([_delta(True, "!")]), *_GOOD_END],
    "index-is-a-float": [*_GOOD_START, _chunk([_delta(0.5, "!")]), *_GOOD_END],
    "content-is-a-number": [*_GOOD_START, _chunk([_delta(0, 5)]), *_GOOD_END],
    "choices-is-text": [*_GOOD_START, _chunk("zzz"), *_GOOD_END],
    "finish-reason-is-an-object": [*_GOOD_START, _chunk([_delta(0, finish={"a": 1})])],
    "delta-is-a-list": [*_GOOD_START, _chunk([{"index": 0, "delta": ["x"]}]), *_GOOD_END],
    "tool-calls-not-a-list": [*_GOOD_START, _chunk([_delta(0, tool_calls=7)]), *_GOOD_END],
    "tool-call-index-text": [*_GOOD_START, _chunk([_delta(0, tool_calls=[{"index": "a"}])]),
                             *_GOOD_END],
    "usage-is-a-number": [*_GOOD_START, *_GOOD_END, _chunk([], usage=5)],
}

#: n=2 answers: one that ends after choice 0 finished, and a complete one.
N2: dict[str, list[dict[str, Any]]] = {
    "n2-only-choice-0": [_chunk([_delta(0, "A", role="assistant")]),
                         _chunk([_delta(0, finish="stop")])],
    "n2-choice-1-unfinished": [_chunk([_delta(0, "A", role="assistant")]),
                               _chunk([_delta(1, "B", role="assistant")]),
                               _chunk([_delta(0, finish="stop")])],
    "n2-complete": [_chunk([_delta(0, "A", role="assistant")]),
                    _chunk([_delta(1, "B", role="assistant")]),
                    _chunk([_delta(0, finish="stop")]), _chunk([_delta(1, finish="stop")])],
}


class ScriptedStub(StubOpenAIServer):
    """Streams the chunk list named by the last user message (a fresh copy each time)."""

    def stream_chunks(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        name = last_user_text(request).split(" ", 1)[0]
        return copy.deepcopy({**ODD, **N2}[name])


def _contents(chunks: list[Any]) -> list[Any]:
    """What the client saw of each chunk (its choices as JSON)."""
    out = []
    for chunk in chunks:
        data = chunk.model_dump(mode="json", exclude_unset=True, warnings=False)
        out.append(data.get("choices"))
    return out


def _request(name: str, **extra: Any) -> dict[str, Any]:
    # A unique suffix: every test starts from a miss whatever ran before.
    text = f"{name} {uuid.uuid4().hex}"
    return {"model": "stub-model", "messages": [{"role": "user", "content": text}],
            "stream": True, **extra}


@pytest.fixture(scope="module")
def stub() -> Iterator[ScriptedStub]:
    with ScriptedStub() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(stub: ScriptedStub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    root = tmp_path_factory.mktemp("streams")
    semcache.open(root / "p.db", embedder="hashing").close()
    with ProxyProcess(stub.base_url, root / "p.db", "--exact-only",
                      log_path=root / "proxy.log") as process:
        yield process


def _expected(name: str) -> list[Any]:
    return [c["choices"] for c in {**ODD, **N2}[name]]


@pytest.mark.parametrize("name", sorted(ODD))
def test_wrap_relays_an_odd_stream_and_stores_nothing(stub: ScriptedStub, tmp_path: Path,
                                                      name: str) -> None:
    with semcache.open(tmp_path / "c.db", embedder="hashing") as cache:
        client = semcache.wrap(openai.OpenAI(base_url=stub.base_url, api_key="sk-x",
                                             max_retries=0), cache)
        request = _request(name)
        for attempt in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no pydantic serializer warnings either
                stream = client.chat.completions.create(**request)
                chunks = list(stream)
            assert _contents(chunks) == _expected(name)
            assert semcache.cache_info(stream).status == "miss", attempt  # never stored
        assert cache.stats()["entries"] == 0


@pytest.mark.parametrize("name", sorted(ODD))
def test_proxy_relays_an_odd_stream_and_stores_nothing(proxy: ProxyProcess, name: str) -> None:
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=f"sk-{name}", max_retries=0)
    request = _request(name)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(**request)
        assert raw.headers["x-semcache"] == "miss"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK's own view of odd chunks is not ours
            chunks = list(raw.parse())
        assert _contents(chunks) == _expected(name)


@pytest.mark.parametrize("name,stored", [("n2-only-choice-0", False),
                                         ("n2-choice-1-unfinished", False),
                                         ("n2-complete", True)])
def test_an_n2_stream_is_stored_only_complete_for_every_choice(
        stub: ScriptedStub, proxy: ProxyProcess, tmp_path: Path, name: str, stored: bool) -> None:
    with semcache.open(tmp_path / "c.db", embedder="hashing") as cache:
        client = semcache.wrap(openai.OpenAI(base_url=stub.base_url, api_key="sk-x",
                                             max_retries=0), cache)
        request = _request(name, n=2)
        list(client.chat.completions.create(**request))
        second = client.chat.completions.create(**request)
        list(second)
        assert semcache.cache_info(second).status == ("hit-exact" if stored else "miss")
    body = _request(name, n=2)
    headers = {"Authorization": f"Bearer sk-{uuid.uuid4().hex}"}
    seen = []
    for _ in range(2):
        with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body,
                          headers=headers, timeout=10) as response:
            response.read()
            seen.append(response.headers["x-semcache"])
    assert seen == ["miss", "hit-exact" if stored else "miss"]
