"""A numpy forward pass of a BERT encoder with mean pooling (sentence-transformers style).

This is what the default ``minilm`` embedder runs instead of torch: all-MiniLM-L6-v2 is 6
BERT layers of width 384, small enough that numpy's BLAS runs it in a few milliseconds per
query. Each step reproduces what sentence-transformers does with the Hugging Face model, in
float32, because any shortcut changes the vectors (and so the hit decisions):

- Attention uses an *additive* mask over padded key positions (a large negative number, as
  Hugging Face does), so a sentence gets the same vector alone or in a padded batch.
- GELU is the exact erf form (``hidden_act: "gelu"``), not the tanh approximation. numpy has
  no erf, so :func:`erf` is a float32 rational approximation (max abs error ~4e-7 against
  ``math.erf``, checked by a test); scipy would add ~100 MB to the install for it.
- Layer norm uses the config's ``layer_norm_eps`` (1e-12 for MiniLM), token type ids are all 0.
- Pooling is the mean over the real tokens only (never the padding), then L2 normalization
  (done by the caller).

Speed: every per-token step (dense layers, layer norms, GELU) runs on the *packed* real
tokens of the batch, not on the padded ``(batch, longest)`` grid; only the attention scores
need the grid. This is what makes batches of sentences of different lengths cheap.

This module imports only numpy; the weights come as a ``{name: ndarray}`` mapping (read
from ``model.safetensors`` by the caller) plus the model's ``config.json`` as a dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from semcache.errors import EmbedderError

# Coefficients of a rational approximation of erf on [-4, 4] (beyond it erf is +-1 in
# float32): erf(x) = x * P(x^2) / Q(x^2). The same one Eigen and XLA use for float32.
_ERF_NUM = (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
    -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_DEN = (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
    -7.37332916720468e-03, -1.42647390514189e-02,
)
_SQRT_HALF = np.float32(1.0 / math.sqrt(2.0))
# Added to the attention scores of padded keys: exp() of it underflows to exactly 0.
_MASKED = np.float32(np.finfo(np.float32).min)


def erf(x: np.ndarray) -> np.ndarray:
    """float32 erf of a float32 array (max abs error ~4e-7 against ``math.erf``)."""
    clipped = np.clip(x, -4.0, 4.0).astype(np.float32, copy=False)
    squared = clipped * clipped
    num = np.full_like(squared, _ERF_NUM[0])
    for coef in _ERF_NUM[1:]:
        num *= squared
        num += np.float32(coef)
    num *= clipped
    den = np.full_like(squared, _ERF_DEN[0])
    for coef in _ERF_DEN[1:]:
        den *= squared
        den += np.float32(coef)
    num /= den
    return num


def gelu_(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``, computed in place on ``x``."""
    e = erf(x * _SQRT_HALF)
    e += np.float32(1.0)
    e *= np.float32(0.5)
    x *= e
    return x


def layer_norm_(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """Layer norm over the last axis (biased variance, as torch), in place on ``x``."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x)[:, None]
    var /= np.float32(x.shape[-1])
    var += np.float32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= weight
    x += bias
    return x


class TensorSource(Protocol):
    """Where the weights come from: a dict of arrays, or a reader of a safetensors file."""

    def get(self, name: str) -> np.ndarray | None: ...


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face ``config.json`` the forward pass uses."""

    hidden_size: int
    num_heads: int
    num_layers: int
    max_positions: int
    layer_norm_eps: float

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, where: str) -> BertConfig:
        """Read a BERT config; raises :class:`EmbedderError` for anything else."""
        if config.get("model_type") != "bert":
            raise EmbedderError(
                f"{where}: model_type is {config.get('model_type')!r}; the torch-free runtime "
                "runs BERT models only (use the 'sentence-transformers:' embedder for others)"
            )
        act = config.get("hidden_act", "gelu")
        position = config.get("position_embedding_type", "absolute")
        if act != "gelu" or position != "absolute":
            raise EmbedderError(
                f"{where}: hidden_act {act!r} / position_embedding_type {position!r} are not "
                "supported (expected 'gelu' / 'absolute')"
            )
        try:
            out = cls(
                hidden_size=int(config["hidden_size"]),
                num_heads=int(config["num_attention_heads"]),
                num_layers=int(config["num_hidden_layers"]),
                max_positions=int(config["max_position_embeddings"]),
                layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbedderError(f"{where}: config.json lacks or mangles {exc}") from exc
        if out.hidden_size % out.num_heads:
            raise EmbedderError(f"{where}: hidden_size is not a multiple of the head count")
        return out


@dataclass(frozen=True)
class _Layer:
    qkv_w: np.ndarray  # (hidden, 3 * hidden): query, key, value side by side
    qkv_b: np.ndarray
    attn_out_w: np.ndarray  # (hidden, hidden)
    attn_out_b: np.ndarray
    attn_ln_w: np.ndarray
    attn_ln_b: np.ndarray
    inter_w: np.ndarray  # (hidden, intermediate)
    inter_b: np.ndarray
    out_w: np.ndarray  # (intermediate, hidden)
    out_b: np.ndarray
    out_ln_w: np.ndarray
    out_ln_b: np.ndarray


class MeanPooledBert:
    """BERT encoder + masked mean pooling over token ids, in numpy float32.

    Built from a ``{tensor name: array}`` mapping (or any :class:`TensorSource`, asked for
    each tensor once) with Hugging Face ``BertModel`` names (an optional ``bert.`` prefix is
    accepted) and the model's config. Weight matrices are
    stored transposed, ``(in, out)``, and query/key/value fused into one matrix, so each
    layer is 4 matrix products on the packed tokens. Thread-safe: :meth:`pool` only reads.
    """

    def __init__(self, tensors: TensorSource | Mapping[str, np.ndarray], config: BertConfig, *,
                 where: str) -> None:
        self.config = config
        self.where = where
        get = _TensorGetter(tensors, where)
        self.word = get("embeddings.word_embeddings.weight")
        self.position = get("embeddings.position_embeddings.weight")
        # token_type_ids are all 0: only the first row is ever used.
        self.token_type0 = get("embeddings.token_type_embeddings.weight")[0].copy()
        self.emb_ln_w = get("embeddings.LayerNorm.weight")
        self.emb_ln_b = get("embeddings.LayerNorm.bias")
        self.layers = [self._layer(get, i) for i in range(config.num_layers)]
        hidden = config.hidden_size
        if self.word.ndim != 2 or self.word.shape[1] != hidden:
            raise EmbedderError(f"{where}: word embeddings have shape {self.word.shape}")
        self.vocab_size = int(self.word.shape[0])
        self.head_dim = hidden // config.num_heads
        self.scale = np.float32(1.0 / math.sqrt(self.head_dim))

    @staticmethod
    def _layer(get: _TensorGetter, i: int) -> _Layer:
        p = f"encoder.layer.{i}."
        att = p + "attention."
        qkv_w = np.concatenate(
            [get(att + f"self.{n}.weight") for n in ("query", "key", "value")], axis=0
        )
        qkv_b = np.concatenate([get(att + f"self.{n}.bias") for n in ("query", "key", "value")])
        return _Layer(
            qkv_w=np.ascontiguousarray(qkv_w.T), qkv_b=qkv_b,
            attn_out_w=np.ascontiguousarray(get(att + "output.dense.weight").T),
            attn_out_b=get(att + "output.dense.bias"),
            attn_ln_w=get(att + "output.LayerNorm.weight"),
            attn_ln_b=get(att + "output.LayerNorm.bias"),
            inter_w=np.ascontiguousarray(get(p + "intermediate.dense.weight").T),
            inter_b=get(p + "intermediate.dense.bias"),
            out_w=np.ascontiguousarray(get(p + "output.dense.weight").T),
            out_b=get(p + "output.dense.bias"),
            out_ln_w=get(p + "output.LayerNorm.weight"),
            out_ln_b=get(p + "output.LayerNorm.bias"),
        )

    def pool(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Mean-pooled last hidden states ``(len(sequences), hidden)`` (not normalized).

        Each sequence is a list of token ids with its special tokens, already truncated
        to at most ``max_positions``; a batch is padded to its longest sequence only for
        the attention scores.
        """
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.intp, count=len(sequences))
        if lengths.size == 0 or lengths.min() < 1 or lengths.max() > self.config.max_positions:
            raise EmbedderError(
                f"{self.where}: token sequence lengths must be in [1, "
                f"{self.config.max_positions}], got {lengths.tolist()}"
            )
        ids = np.fromiter((t for s in sequences for t in s), dtype=np.intp, count=int(lengths.sum()))
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise EmbedderError(f"{self.where}: a token id is outside the vocabulary")
        positions = np.concatenate([np.arange(n) for n in lengths]) if lengths.size > 1 else (
            np.arange(int(lengths[0]))
        )
        x = self.word[ids] + self.position[positions]
        x += self.token_type0
        layer_norm_(x, self.emb_ln_w, self.emb_ln_b, self.config.layer_norm_eps)
        grid = _Grid(lengths)
        for layer in self.layers:
            x = self._layer_forward(x, layer, grid)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        sums = np.add.reduceat(x, starts, axis=0)
        sums /= lengths[:, None].astype(np.float32)
        return sums

    def _layer_forward(self, x: np.ndarray, layer: _Layer, grid: _Grid) -> np.ndarray:
        eps = self.config.layer_norm_eps
        qkv = x @ layer.qkv_w
        qkv += layer.qkv_b
        context = self._attention(qkv, grid)
        attn = context @ layer.attn_out_w
        attn += layer.attn_out_b
        attn += x
        layer_norm_(attn, layer.attn_ln_w, layer.attn_ln_b, eps)
        inter = attn @ layer.inter_w
        inter += layer.inter_b
        gelu_(inter)
        out = inter @ layer.out_w
        out += layer.out_b
        out += attn
        return layer_norm_(out, layer.out_ln_w, layer.out_ln_b, eps)

    def _attention(self, qkv: np.ndarray, grid: _Grid) -> np.ndarray:
        """Multi-head self-attention of the packed tokens ``(T, 3 * hidden)`` -> ``(T, hidden)``."""
        hidden, heads, dim = self.config.hidden_size, self.config.num_heads, self.head_dim
        padded = grid.scatter(qkv)  # (batch, longest, 3 * hidden)
        batch, longest = padded.shape[:2]
        split = padded.reshape(batch, longest, 3, heads, dim)
        q = split[:, :, 0].transpose(0, 2, 1, 3)  # (batch, heads, longest, dim)
        k = split[:, :, 1].transpose(0, 2, 3, 1)  # (batch, heads, dim, longest)
        v = split[:, :, 2].transpose(0, 2, 1, 3)
        scores = q @ k
        scores *= self.scale
        if grid.additive_mask is not None:
            scores += grid.additive_mask
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, longest, hidden)
        return grid.gather(context)


class _Grid:
    """Moves packed token rows to a padded ``(batch, longest, ...)`` grid and back."""

    def __init__(self, lengths: np.ndarray) -> None:
        self.batch = int(lengths.size)
        self.longest = int(lengths.max())
        self.ragged = bool(lengths.min() != self.longest)
        self.additive_mask: np.ndarray | None = None
        self.real: np.ndarray | None = None
        if self.ragged:
            self.real = np.arange(self.longest)[None, :] < lengths[:, None]  # (batch, longest)
            mask = np.where(self.real, np.float32(0.0), _MASKED).astype(np.float32)
            self.additive_mask = mask[:, None, None, :]  # over keys, for every head and query

    def scatter(self, rows: np.ndarray) -> np.ndarray:
        if self.real is None:  # all the same length: a reshape, no copy
            return rows.reshape(self.batch, self.longest, rows.shape[-1])
        grid = np.zeros((self.batch, self.longest, rows.shape[-1]), dtype=rows.dtype)
        grid[self.real] = rows
        return grid

    def gather(self, grid: np.ndarray) -> np.ndarray:
        if self.real is None:
            return grid.reshape(self.batch * self.longest, grid.shape[-1])
        return grid[self.real]


class _TensorGetter:
    """Looks tensors up by Hugging Face name, with or without a ``bert.`` prefix, as float32."""

    def __init__(self, tensors: TensorSource | Mapping[str, np.ndarray], where: str) -> None:
        self.tensors = tensors
        self.where = where

    def __call__(self, name: str) -> np.ndarray:
        arr = self.tensors.get(name)
        if arr is None:
            arr = self.tensors.get("bert." + name)
        if arr is None:
            raise EmbedderError(f"{self.where}: the weights have no tensor {name!r}")
        return np.ascontiguousarray(arr, dtype=np.float32)
