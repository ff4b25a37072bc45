"""A deterministic, dependency-free embedder: hashed character n-grams and words.

Quality is far below a neural model (it sees spelling, not meaning), but it is instant,
needs nothing beyond numpy, and gives the same vectors on every machine and Python
version, which is what tests and hash-only deployments need.

Algorithm ``v1`` (pinned in the name; any change to it must bump the version):

1. NFKC-normalize, casefold, collapse whitespace runs to one space.
2. Features: every character 3-, 4- and 5-gram of the text padded with one space on each
   side (so word boundaries count), plus every word (``\\w+``) as a unigram.
3. Each feature is hashed with BLAKE2b (8 bytes, little-endian; never Python's randomized
   ``hash()``): the value modulo ``dim`` picks the bucket, the top bit picks the sign
   (signed hashing keeps collisions from biasing similarities upward).
4. Rows are L2-normalized.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

import numpy as np

from semcache.embedders.base import TrustedEmbedder, l2_normalize
from semcache.errors import ConfigurationError

VERSION = "v1"
DEFAULT_DIM = 256
_NGRAM_SIZES = (3, 4, 5)
_WORD_RE = re.compile(r"\w+")
_WS_RE = re.compile(r"\s+")
_TOP_BIT = np.uint64(1 << 63)


@lru_cache(maxsize=1 << 16)
def _feature_hash(feature: str) -> int:
    # Cached because the same n-grams recur across texts; BLAKE2b is the slow part.
    return int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")


def normalize_text(text: str) -> str:
    """Canonical form the features are computed on (NFKC, casefolded, single spaces)."""
    return _WS_RE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _features(norm: str) -> list[str]:
    padded = f" {norm} "
    feats = [
        "c" + padded[i : i + n]
        for n in _NGRAM_SIZES
        for i in range(len(padded) - n + 1)
    ]
    feats.extend("w" + word for word in _WORD_RE.findall(norm))
    return feats


class HashingEmbedder(TrustedEmbedder):
    """Signed feature hashing of character n-grams and words into ``dim`` buckets."""

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 8:
            raise ConfigurationError(f"hashing embedder dim must be an int >= 8, got {dim!r}")
        self.dim = dim
        self.name = f"hashing:{VERSION}:{dim}"

    def _embed(self, texts: list[str]) -> np.ndarray:
        n, dim = len(texts), self.dim
        norms = [normalize_text(t) for t in texts]
        per_text = [[_feature_hash(f) for f in _features(s)] for s in norms]
        counts = np.fromiter((len(h) for h in per_text), dtype=np.int64, count=n)
        hashes = np.fromiter(
            (h for row in per_text for h in row), dtype=np.uint64, count=int(counts.sum())
        )
        buckets = (hashes % np.uint64(dim)).astype(np.int64)
        signs = np.where(hashes & _TOP_BIT, -1.0, 1.0)
        # One bincount over (row, bucket) pairs fills the whole batch without a Python loop.
        flat = np.repeat(np.arange(n, dtype=np.int64) * dim, counts) + buckets
        out = np.bincount(flat, weights=signs, minlength=n * dim).reshape(n, dim)
        # Signed collisions can cancel every feature of a tiny text; fall back to one
        # deterministic bucket so the row still has a direction.
        for row in np.flatnonzero(~out.any(axis=1)):
            out[row, _feature_hash("t" + norms[row]) % dim] = 1.0
        return l2_normalize(out, name=self.name)
