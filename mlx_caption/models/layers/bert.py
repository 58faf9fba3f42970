"""BERT's post-LN pieces, which the BERT decoders (BLIP's text decoder, GIT's) are built from:
the embeddings, the ``query``/``key``/``value`` attention and its residual ``output`` (together
the ``attention`` block), the feed-forward ``intermediate`` layer and the residual ``output``.
Hugging Face's parameter names (``word_embeddings``, ``query``, ``dense``, ``LayerNorm``), so a
family's checkpoints load with no renaming.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.layers.activations import ACTIVATIONS
from mlx_caption.models.layers.attention import KVCache, attend, merge_heads, split_heads
from mlx_caption.models.layers.linear import Linear
from mlx_caption.models.layers.norm import LayerNorm


class BertTextConfig(Protocol):
    """The fields of a BERT decoder's config these layers read (BLIP's and GIT's text
    configs have them under Hugging Face's names)."""

    vocab_size: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    hidden_act: str
    layer_norm_eps: float
    hidden_dropout_prob: float


class BertEmbeddings(nn.Module):
    """Word and learned position embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertTextConfig):
        super().__init__()
        d = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, d)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, d)
        self.LayerNorm = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def __call__(self, tokens: mx.array, offset: int | mx.array = 0) -> mx.array:
        positions = mx.arange(tokens.shape[1]) + offset
        x = self.word_embeddings(tokens) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """``query``/``key``/``value`` projections and the attention (no output projection: that
    is :class:`BertOutput`). Keys and values come from ``kv_dims``-wide tokens."""

    def __init__(self, dims: int, num_heads: int, kv_dims: int):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f"width {dims} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = 1.0 / math.sqrt(dims // num_heads)
        self.query = Linear(dims, dims)
        self.key = Linear(kv_dims, dims)
        self.value = Linear(kv_dims, dims)

    def project_kv(self, source: mx.array) -> tuple[mx.array, mx.array]:
        """Keys and values ``(B, H, S, hd)`` of a ``(B, S, kv_dims)`` source."""
        h = self.num_heads
        return split_heads(self.key(source), h), split_heads(self.value(source), h)

    def __call__(
        self,
        x: mx.array,
        kv: tuple[mx.array, mx.array] | None = None,
        mask: mx.array | str | None = None,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        """``x`` over its own keys/values (through ``cache`` when given) or over ``kv``'s;
        returns the merged heads and, with ``return_weights``, the attention weights."""
        q = split_heads(self.query(x), self.num_heads)
        if kv is None:
            k, v = self.project_kv(x)
            if cache is not None:
                k, v = cache.update_and_fetch(k, v)
        else:
            k, v = kv
        out, weights = attend(q, k, v, self.scale, mask, return_weights)
        return merge_heads(out), weights


class BertAttention(nn.Module):
    """``self`` (the attention) then ``output`` (projection, residual, LayerNorm).

    ``attention`` is the class of ``self``: :class:`BertSelfAttention` or a subclass (GIT's,
    which attends over an image prefix too); its keys and values come from ``kv_dims``-wide
    tokens (the width itself unless given: a cross-attention's are the image's).
    """

    def __init__(
        self,
        cfg: BertTextConfig,
        attention: type[BertSelfAttention] = BertSelfAttention,
        kv_dims: int | None = None,
    ):
        super().__init__()
        d = cfg.hidden_size
        self.self = attention(d, cfg.num_attention_heads, kv_dims or d)
        self.output = BertOutput(d, d, cfg.layer_norm_eps, cfg.hidden_dropout_prob)

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> tuple[mx.array, mx.array | None]:
        """``self(x, ...)``'s output through ``output`` (residual ``x``), and its attention
        weights (None unless asked)."""
        h, weights = self.self(x, *args, **kwargs)
        return self.output(h, x), weights


class BertIntermediate(nn.Module):
    """The feed-forward layer's first half: ``act(dense(x))``, ``intermediate_size`` wide."""

    def __init__(self, cfg: BertTextConfig):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def __call__(self, x: mx.array) -> mx.array:
        return self.act(self.dense(x))


class BertOutput(nn.Module):
    """BERT's post-LN residual: ``LayerNorm(dropout(dense(h)) + residual)``."""

    def __init__(self, in_dims: int, dims: int, eps: float, dropout: float):
        super().__init__()
        self.dense = Linear(in_dims, dims)
        self.LayerNorm = LayerNorm(dims, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def __call__(self, h: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)
