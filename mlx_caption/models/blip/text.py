"""BLIP's text decoder: a post-LN BERT with causal self-attention and cross-attention to the
image in every layer, and BERT's LM head tied to the word embeddings. Hugging Face parameter
names (``text_decoder.bert.encoder.layer.N``, ``text_decoder.cls.predictions``).

It speaks the generation engine's protocol through
:class:`~mlx_caption.models.cross_decoder.CrossAttentionDecoder`.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.blip.config import BlipTextConfig
from mlx_caption.models.cross_decoder import CrossAttentionDecoder
from mlx_caption.models.layers import ACTIVATIONS, KVCache, attend, merge_heads, split_heads
from mlx_caption.tokens import SpecialTokens


class BlipTextSelfAttention(nn.Module):
    """``query``/``key``/``value`` projections and the attention (no output projection: that
    is :class:`BlipTextOutput`). Keys and values come from ``kv_dims``-wide tokens."""

    def __init__(self, dims: int, num_heads: int, kv_dims: int):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f"width {dims} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = 1.0 / math.sqrt(dims // num_heads)
        self.query = nn.Linear(dims, dims)
        self.key = nn.Linear(kv_dims, dims)
        self.value = nn.Linear(kv_dims, dims)

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
        q = split_heads(self.query(x), self.num_heads)
        if kv is None:
            k, v = self.project_kv(x)
            if cache is not None:
                k, v = cache.update_and_fetch(k, v)
        else:
            k, v = kv
        out, weights = attend(q, k, v, self.scale, mask, return_weights)
        return merge_heads(out), weights


class BlipTextOutput(nn.Module):
    """BERT's post-LN residual: ``LayerNorm(dropout(dense(h)) + residual)``."""

    def __init__(self, in_dims: int, dims: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_dims, dims)
        self.LayerNorm = nn.LayerNorm(dims, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def __call__(self, h: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BlipTextAttention(nn.Module):
    """``self`` (the attention) then ``output`` (projection, residual, LayerNorm)."""

    def __init__(self, cfg: BlipTextConfig, kv_dims: int):
        super().__init__()
        d = cfg.hidden_size
        self.self = BlipTextSelfAttention(d, cfg.num_attention_heads, kv_dims)
        self.output = BlipTextOutput(d, d, cfg.layer_norm_eps, cfg.hidden_dropout_prob)

    def __call__(self, x: mx.array, **kwargs) -> tuple[mx.array, mx.array | None]:
        h, weights = self.self(x, **kwargs)
        return self.output(h, x), weights


class BlipTextIntermediate(nn.Module):
    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def __call__(self, x: mx.array) -> mx.array:
        return self.act(self.dense(x))


class BlipTextLayer(nn.Module):
    """Causal self-attention, cross-attention to the image, feed-forward; each post-LN."""

    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.attention = BlipTextAttention(cfg, d)
        self.crossattention = BlipTextAttention(cfg, cfg.encoder_hidden_size)
        self.intermediate = BlipTextIntermediate(cfg)
        self.output = BlipTextOutput(cfg.intermediate_size, d, eps, cfg.hidden_dropout_prob)

    def __call__(
        self,
        x: mx.array,
        cross_kv: tuple[mx.array, mx.array],
        mask: mx.array | str,
        cache: KVCache | None = None,
        return_attention: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        x, _ = self.attention(x, mask=mask, cache=cache)
        x, weights = self.crossattention(x, kv=cross_kv, return_weights=return_attention)
        return self.output(self.intermediate(x), x), weights


class BlipTextEmbeddings(nn.Module):
    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        d = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, d)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, d)
        self.LayerNorm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def __call__(self, tokens: mx.array, offset: int | mx.array = 0) -> mx.array:
        positions = mx.arange(tokens.shape[1]) + offset
        x = self.word_embeddings(tokens) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class BlipTextEncoder(nn.Module):
    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.layer = [BlipTextLayer(cfg) for _ in range(cfg.num_hidden_layers)]


class BlipTextModel(nn.Module):
    """``bert``: embeddings and the decoder layers (no pooler)."""

    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.embeddings = BlipTextEmbeddings(cfg)
        self.encoder = BlipTextEncoder(cfg)


class BlipTextPredictionHeadTransform(nn.Module):
    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, x: mx.array) -> mx.array:
        return self.LayerNorm(self.act(self.dense(x)))


class BlipTextLMPredictionHead(nn.Module):
    """``transform``, then the word embeddings as the output matrix, plus ``bias``."""

    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.transform = BlipTextPredictionHeadTransform(cfg)
        self.bias = mx.zeros((cfg.vocab_size,))

    def __call__(self, x: mx.array, embeddings: nn.Embedding) -> mx.array:
        return embeddings.as_linear(self.transform(x)) + self.bias


class BlipTextOnlyMLMHead(nn.Module):
    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.predictions = BlipTextLMPredictionHead(cfg)


class BlipTextLMHeadModel(CrossAttentionDecoder):
    """The decoder (``text_decoder``): ``bert`` and the LM head ``cls``.

    ``decoder(tokens, image_tokens)`` gives teacher-forced logits ``(B, L, vocab)``; the
    generation protocol comes from :class:`~mlx_caption.models.cross_decoder.CrossAttentionDecoder`.
    """

    def __init__(self, cfg: BlipTextConfig, default_max_length: int, early_stopping: bool):
        # Captions start with [DEC] and end with [SEP]; transformers suppresses no token when
        # BLIP generates, and neither do we.
        special = SpecialTokens(
            start=(cfg.bos_token_id,), end=cfg.sep_token_id, pad=cfg.pad_token_id
        )
        super().__init__(
            special, cfg.vocab_size, cfg.max_position_embeddings, default_max_length,
            early_stopping,
        )  # fmt: skip
        self.config = cfg
        self.bert = BlipTextModel(cfg)
        self.cls = BlipTextOnlyMLMHead(cfg)

    @property
    def layers(self) -> list[BlipTextLayer]:
        return self.bert.encoder.layer

    @property
    def attention_shape(self) -> tuple[int, int]:
        cfg = self.config
        return cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads

    def cross_attention(self, layer: BlipTextLayer) -> BlipTextSelfAttention:
        return layer.crossattention.self

    def embed(self, tokens: mx.array, offset: int | mx.array) -> mx.array:
        return self.bert.embeddings(tokens, offset)

    def head(self, x: mx.array) -> mx.array:
        return self.cls.predictions(x, self.bert.embeddings.word_embeddings)
