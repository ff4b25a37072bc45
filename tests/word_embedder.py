"""A tiny deterministic embedder for integration tests (no model to load)."""

from __future__ import annotations

import hashlib
import re

import numpy as np

STOPWORDS = {"what", "s", "is", "the", "a", "an", "of", "please", "tell", "me", "which"}


class WordEmbedder:
    """Deterministic bag-of-content-words embedder: paraphrases that only differ in
    stopwords get cosine 1.0, unrelated questions ~0."""

    name = "test-words:v1"
    dim = 64

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS]
            for word in words or ["<empty>"]:
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
                out[row, h % self.dim] += 1.0
            out[row] /= np.linalg.norm(out[row])
        return out
