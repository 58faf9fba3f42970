"""BLIP's text decoder: a post-LN BERT with causal self-attention and cross-attention to the
image in every layer, and BERT's LM head tied to the word embeddings. Hugging Face parameter
names (``text_decoder.bert.encoder.layer.N``, ``text_decoder.cls.predictions``). The BERT
pieces (embeddings, attention projections, feed-forward, residual output) are
:mod:`mlx_caption.models.layers.bert`'s, which GIT's decoder is built from too.

It speaks the generation engine's protocol through
:class:`~mlx_caption.models.cross_decoder.CrossAttentionDecoder`.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.base import PretrainedCaptionerConfig
from mlx_caption.models.blip.config import BlipTextConfig
from mlx_caption.models.cross_decoder import CrossAttentionDecoder
from mlx_caption.models.layers import (
    ACTIVATIONS,
    BertAttention,
    BertEmbeddings,
    BertIntermediate,
    BertOutput,
    BertSelfAttention,
    KVCache,
)
from mlx_caption.models.layers.linear import Linear, linear
from mlx_caption.models.layers.norm import LayerNorm
from mlx_caption.tokens import SpecialTokens


class BlipTextLayer(nn.Module):
    """Causal self-attention, cross-attention to the image, feed-forward; each post-LN."""

    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.attention = BertAttention(cfg)
        self.crossattention = BertAttention(cfg, kv_dims=cfg.encoder_hidden_size)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg.intermediate_size, d, eps, cfg.hidden_dropout_prob)

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


class BlipTextEncoder(nn.Module):
    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.layer = [BlipTextLayer(cfg) for _ in range(cfg.num_hidden_layers)]


class BlipTextModel(nn.Module):
    """``bert``: embeddings and the decoder layers (no pooler)."""

    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BlipTextEncoder(cfg)


class BlipTextPredictionHeadTransform(nn.Module):
    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.LayerNorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, x: mx.array) -> mx.array:
        return self.LayerNorm(self.act(self.dense(x)))


class BlipTextLMPredictionHead(nn.Module):
    """``transform``, then the word embeddings as the output matrix, plus ``bias``."""

    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.transform = BlipTextPredictionHeadTransform(cfg)
        self.bias = mx.zeros((cfg.vocab_size,))

    def __call__(self, x: mx.array, embeddings: nn.Embedding) -> mx.array:
        return linear(self.transform(x), embeddings.weight, self.bias)


class BlipTextOnlyMLMHead(nn.Module):
    def __init__(self, cfg: BlipTextConfig):
        super().__init__()
        self.predictions = BlipTextLMPredictionHead(cfg)


class BlipTextLMHeadModel(CrossAttentionDecoder):
    """The decoder (``text_decoder``): ``bert`` and the LM head ``cls``.

    ``decoder(tokens, image_tokens)`` gives teacher-forced logits ``(B, L, vocab)``; the
    generation protocol comes from :class:`~mlx_caption.models.cross_decoder.CrossAttentionDecoder`.
    """

    def __init__(self, cfg: BlipTextConfig, defaults: PretrainedCaptionerConfig):
        # Captions start with [DEC] and end with [SEP]; transformers suppresses no token when
        # BLIP generates, and neither do we.
        special = SpecialTokens(
            start=(cfg.bos_token_id,), end=cfg.sep_token_id, pad=cfg.pad_token_id
        )
        super().__init__(special, cfg.vocab_size, cfg.max_position_embeddings, defaults)
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

    def cross_attention(self, layer: BlipTextLayer) -> BertSelfAttention:
        return layer.crossattention.self

    def embed(self, tokens: mx.array, offset: int | mx.array) -> mx.array:
        return self.bert.embeddings(tokens, offset)

    def head(self, x: mx.array) -> mx.array:
        return self.cls.predictions(x, self.bert.embeddings.word_embeddings)
