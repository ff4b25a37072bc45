"""A numpy forward pass of a BERT encoder with mean pooling (sentence-transformers style).

This is what the default ``minilm`` embedder runs instead of torch: all-MiniLM-L6-v2 is 6
BERT layers of width 384, small enough that numpy's BLAS runs it in a few milliseconds per
query. Each step reproduces what sentence-transformers does with the Hugging Face model, in
float32, because any shortcut changes the vectors (and so the hit decisions):

- Attention runs over each sequence's own tokens only. Hugging Face pads a batch and adds
  a large negative number to the scores of padded keys, whose weights then underflow to
  exactly 0: the same result, which is why a sentence gets the same vector alone or in a
  batch (without that mask, 200+ of the 999 paraphrase decisions change).
- GELU is the exact erf form (``hidden_act: "gelu"``), not the tanh approximation. numpy has
  no erf, so :func:`~semcache.embedders._kernels.erf` is a float32 rational approximation
  (max abs error ~4e-7 against ``math.erf``, checked by a test); scipy would add ~100 MB to
  the install for it.
- Layer norm uses the config's ``layer_norm_eps`` (1e-12 for MiniLM), token type ids are all 0.
- Pooling is the mean over the real tokens only (never the padding), then L2 normalization
  (done by the caller).

Speed: every per-token step (dense layers, layer norms, GELU) runs on the *packed* real
tokens of the batch, never on padding, so batches of mixed lengths cost what their tokens
cost. A forward pass allocates its
buffers once and every layer works in them in place; the dense layers use the weight layout
that multiplies fastest on this CPU's BLAS (:mod:`semcache.embedders._kernels`).

This module imports only numpy; the weights come as a ``{name: ndarray}`` mapping (read
from ``model.safetensors`` by the caller) plus the model's ``config.json`` as a dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from semcache.embedders._kernels import PLAIN_ROWS, Dense, LayerNorm, gelu_
from semcache.embedders._threads import small_gemm_kernels
from semcache.errors import EmbedderError


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
    qkv: Dense  # query (scaled by 1 / sqrt(head size)), key, value side by side
    attn_out: Dense
    attn_ln: LayerNorm
    inter: Dense
    out: Dense
    out_ln: LayerNorm


class MeanPooledBert:
    """BERT encoder + masked mean pooling over token ids, in numpy float32.

    Built from a ``{tensor name: array}`` mapping (or any :class:`TensorSource`, asked for
    each tensor once) with Hugging Face ``BertModel`` names (an optional ``bert.`` prefix is
    accepted) and the model's config. Query, key and value are fused into one product, so
    each layer is 4 products on the packed tokens. ``blocked``: the weight layout of the
    dense layers (None: what this CPU's BLAS runs fastest, see
    :func:`~semcache.embedders._threads.small_gemm_kernels`); both give the same vectors.
    Thread-safe: :meth:`forward` and :meth:`pool` only read the weights.
    """

    def __init__(self, tensors: TensorSource | Mapping[str, np.ndarray], config: BertConfig, *,
                 where: str, blocked: bool | None = None) -> None:
        self.config = config
        self.where = where
        self.blocked = small_gemm_kernels() if blocked is None else blocked
        get = _TensorGetter(tensors, where)
        self.word = get("embeddings.word_embeddings.weight")
        hidden = config.hidden_size
        if self.word.ndim != 2 or self.word.shape[1] != hidden:
            raise EmbedderError(f"{where}: word embeddings have shape {self.word.shape}")
        # token_type_ids are all 0: its first row is added to every position's row once here.
        self.position_type = get("embeddings.position_embeddings.weight") + (
            get("embeddings.token_type_embeddings.weight")[0])
        eps = config.layer_norm_eps
        self.embedding_ln = LayerNorm(get("embeddings.LayerNorm.weight"),
                                      get("embeddings.LayerNorm.bias"), eps)
        self.vocab_size = int(self.word.shape[0])
        self.head_dim = hidden // config.num_heads
        self.layers = [self._layer(get, i) for i in range(config.num_layers)]
        self.intermediate_size = self.layers[0].inter.out_features if self.layers else hidden
        # Tokens per slice of the per-token steps (see _Buffers): the rows per product.
        self.rows = self.layers[0].inter.rows if self.layers else PLAIN_ROWS

    def _layer(self, get: _TensorGetter, i: int) -> _Layer:
        p = f"encoder.layer.{i}."
        att = p + "attention."
        # The attention scores are (q . k) / sqrt(head size): the scale goes into the query
        # weights once instead of into every score matrix.
        scale = np.float32(1.0 / math.sqrt(self.head_dim))
        qkv_w = np.concatenate([get(att + "self.query.weight") * scale,
                                get(att + "self.key.weight"), get(att + "self.value.weight")])
        qkv_b = np.concatenate([get(att + "self.query.bias") * scale,
                                get(att + "self.key.bias"), get(att + "self.value.bias")])

        def dense(weight: np.ndarray, bias: np.ndarray) -> Dense:  # torch's (out, in) weight
            return Dense(weight.T, bias, blocked=self.blocked)

        return _Layer(
            qkv=dense(qkv_w, qkv_b),
            attn_out=dense(get(att + "output.dense.weight"), get(att + "output.dense.bias")),
            attn_ln=LayerNorm(get(att + "output.LayerNorm.weight"),
                              get(att + "output.LayerNorm.bias"), self.config.layer_norm_eps),
            inter=dense(get(p + "intermediate.dense.weight"), get(p + "intermediate.dense.bias")),
            out=dense(get(p + "output.dense.weight"), get(p + "output.dense.bias")),
            out_ln=LayerNorm(get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias"),
                             self.config.layer_norm_eps),
        )

    def pool(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Mean-pooled last hidden states ``(len(sequences), hidden)`` (not normalized).

        Each sequence is a list of token ids with its special tokens, already truncated
        to at most ``max_positions``.
        """
        states, lengths = self.forward(sequences)
        if lengths.size == 1:
            sums = np.add.reduce(states, axis=0, keepdims=True)
            sums /= np.float32(lengths[0])
            return sums
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        sums = np.add.reduceat(states, starts, axis=0)
        sums /= lengths[:, None].astype(np.float32)
        return sums

    def forward(self, sequences: Sequence[Sequence[int]],
                each_layer: Callable[[np.ndarray], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """The last layer's token states of ``sequences``: ``(states, lengths)``.

        ``states`` is ``(sum(lengths), hidden)`` float32, the sequences' tokens one after
        the other (``np.split(states, np.cumsum(lengths)[:-1])`` gives one array each).
        ``each_layer`` (measurement scripts) sees the states after the embeddings and after
        every layer; they are overwritten by the next layer, so it must copy what it keeps.
        """
        lengths, ids = self._check(sequences)
        total = int(ids.size)
        x = self.word[ids]
        if lengths.size == 1:
            x += self.position_type[:total]
        else:
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            x += self.position_type[np.arange(total) - starts]
        self.embedding_ln(x)
        if each_layer is not None:
            each_layer(x)
        work = _Buffers(total, self.config.hidden_size, self.intermediate_size, self.rows)
        attention = _Attention(lengths, self.config.num_heads, self.head_dim)
        for layer in self.layers:
            layer.qkv(x, work.qkv)
            attention(work.qkv, work.context)
            for first in range(0, total, work.rows):
                end = min(first + work.rows, total)
                n = end - first
                mid = layer.attn_out(work.context[first:end], work.mid[:n])
                mid += x[first:end]
                layer.attn_ln(mid)
                gelu_(layer.inter(mid, work.inter[:n]), work.gelu[:, :n])
                out = layer.out(work.inter[:n], x[first:end])  # x's rows are read: reuse them
                out += mid
                layer.out_ln(out)
            if each_layer is not None:
                each_layer(x)
        return x, lengths

    def _check(self, sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.intp, count=len(sequences))
        if lengths.size == 0 or lengths.min() < 1 or lengths.max() > self.config.max_positions:
            raise EmbedderError(
                f"{self.where}: token sequence lengths must be in [1, "
                f"{self.config.max_positions}], got {lengths.tolist()}"
            )
        ids = np.fromiter((t for s in sequences for t in s), dtype=np.intp, count=int(lengths.sum()))
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise EmbedderError(f"{self.where}: a token id is outside the vocabulary")
        return lengths, ids


# Most attention scores computed at once (float32 values, 16 MB): a long run of long texts
# is attended in parts.
_SCORES_BUDGET = 1 << 22


class _Buffers:
    """The arrays one forward pass works in, allocated once and reused by every layer.

    The per-token steps after the attention run on ``rows`` tokens at a time, so the
    intermediate activations (``rows`` x 1536) stay in the CPU's L2 cache however long the
    batch; one query is a single such slice.
    """

    def __init__(self, tokens: int, hidden: int, intermediate: int, rows: int) -> None:
        self.rows = min(tokens, rows)
        self.qkv = np.empty((tokens, 3 * hidden), dtype=np.float32)
        self.context = np.empty((tokens, hidden), dtype=np.float32)
        self.mid = np.empty((self.rows, hidden), dtype=np.float32)
        self.inter = np.empty((self.rows, intermediate), dtype=np.float32)
        self.gelu = np.empty((2, self.rows, intermediate), dtype=np.float32)


class _Attention:
    """Multi-head self-attention of packed tokens, each sequence over its own tokens only.

    Sequences of one length are attended together (a reshape of their rows, no copy), so
    a sorted batch takes a few numpy calls per distinct length; nothing is ever padded,
    which gives what Hugging Face's additive mask over padded keys gives (their weights
    are exactly 0) without computing them.
    """

    def __init__(self, lengths: np.ndarray, heads: int, head_dim: int) -> None:
        self.heads, self.head_dim = heads, head_dim
        # (first row, length, count) of each run of equal lengths, cut where the run's
        # scores (heads * count * length^2) would pass _SCORES_BUDGET
        self.runs: list[tuple[int, int, int]] = []
        row = 0
        for length in lengths.tolist():
            if self.runs and self.runs[-1][1] == length and (
                    heads * (self.runs[-1][2] + 1) * length * length <= _SCORES_BUDGET):
                first, _, count = self.runs[-1]
                self.runs[-1] = (first, length, count + 1)
            else:
                self.runs.append((row, length, 1))
            row += length

    def __call__(self, qkv: np.ndarray, context: np.ndarray) -> None:
        """``qkv`` (tokens, 3 * hidden) -> ``context`` (tokens, hidden), written in place."""
        heads, dim = self.heads, self.head_dim
        for first, length, count in self.runs:
            end = first + length * count
            # (3 * heads, count, length, dim) and (heads, count, length, dim): views
            split = qkv[first:end].reshape(count, length, 3 * heads, dim).transpose(2, 0, 1, 3)
            out = context[first:end].reshape(count, length, heads, dim).transpose(2, 0, 1, 3)
            scores = np.matmul(split[:heads], split[heads : 2 * heads].swapaxes(-1, -2))
            scores -= np.maximum.reduce(scores, axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= np.add.reduce(scores, axis=-1, keepdims=True)
            np.matmul(scores, split[2 * heads :], out=out)


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
