"""The hand-written transformer text decoder: pre-LN blocks with causal self-attention,
cross-attention to the image tokens and a GELU MLP.

``TextDecoder.__call__`` runs a whole (teacher-forced) sequence; with ``caches`` it runs
one or more new positions after ``offset`` for incremental decoding. Cross-attention keys
and values depend only on the image, so :meth:`TextDecoder.cross_kv` computes them once
per image and generation passes them to every step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.layers import (
    MLP,
    KVCache,
    MultiHeadAttention,
    causal_mask,
    combine_masks,
    key_padding_mask,
)
from mlx_caption.models.layers.linear import Linear, linear
from mlx_caption.models.layers.norm import LayerNorm
from mlx_caption.tokens import CAPTION_TOKENS, SpecialTokens


@dataclass
class DecoderConfig:
    """The hand-written transformer text decoder."""

    vocab_size: int = 8192
    max_length: int = 40  # learned positions; captions are padded/truncated to this
    # Width and depth.
    hidden_size: int = 512
    num_layers: int = 6
    num_heads: int = 8
    intermediate_size: int = 2048
    # Regularisation, numerics, output head.
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    tie_embeddings: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Named decoder sizes for recipes (``model.decoder: small``).
DECODER_PRESETS: dict[str, DecoderConfig] = {
    "tiny": DecoderConfig(hidden_size=256, num_layers=3, num_heads=4, intermediate_size=1024),
    "small": DecoderConfig(hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048),
    "base": DecoderConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}


class DecoderBlock(nn.Module):
    """Pre-LN block: x += SelfAttn(LN x); x += CrossAttn(LN x, image); x += MLP(LN x)."""

    def __init__(self, cfg: DecoderConfig, kv_dims: int | None = None):
        super().__init__()
        d = cfg.hidden_size
        self.self_attn_layer_norm = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.self_attn = MultiHeadAttention(d, cfg.num_heads)
        self.cross_attn_layer_norm = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.cross_attn = MultiHeadAttention(d, cfg.num_heads, kv_dims=kv_dims)
        self.final_layer_norm = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = MLP(d, cfg.intermediate_size, "gelu_tanh")
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(
        self,
        x: mx.array,
        cross_kv: tuple[mx.array, mx.array],
        mask: mx.array | str | None = None,
        cache: KVCache | None = None,
        return_attention: bool = False,
    ) -> mx.array | tuple[mx.array, mx.array]:
        """``x`` (B, L, d); ``cross_kv`` from ``cross_attn.project_kv(image_tokens)``.

        With ``return_attention`` also returns the cross-attention weights (B, H, L, T).
        """
        x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), mask=mask, cache=cache))
        h = self.cross_attn(
            self.cross_attn_layer_norm(x), kv=cross_kv, return_weights=return_attention
        )
        weights = None
        if return_attention:
            h, weights = h
        x = x + self.dropout(h)
        x = x + self.dropout(self.mlp(self.final_layer_norm(x)))
        return (x, weights) if return_attention else x


class TextDecoder(nn.Module):
    """Token + learned position embeddings, ``num_layers`` decoder blocks, final LayerNorm and
    an output head (tied to the token embedding when ``cfg.tie_embeddings``, plus a bias).

    Args:
        cfg: the decoder configuration.
        kv_dims: width of the image tokens it cross-attends to (defaults to the decoder
            width; the captioner's projector already maps the image grid to it).
    """

    def __init__(self, cfg: DecoderConfig, kv_dims: int | None = None):
        super().__init__()
        self.config = cfg
        d = cfg.hidden_size
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d)
        # Small init keeps the position signal from swamping the tokens at the start.
        self.embed_positions = nn.Embedding(cfg.max_length, d)
        self.embed_positions.weight = self.embed_positions.weight * 0.02 / (d**-0.5)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = [DecoderBlock(cfg, kv_dims) for _ in range(cfg.num_layers)]
        self.norm = LayerNorm(d, eps=cfg.layer_norm_eps)
        if cfg.tie_embeddings:
            self.output_bias = mx.zeros((cfg.vocab_size,))
        else:
            self.lm_head = Linear(d, cfg.vocab_size)

    special_tokens: SpecialTokens = CAPTION_TOKENS
    default_early_stopping = True
    default_length_counts_prompt = False

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    @property
    def head_dim(self) -> int:
        return self.config.hidden_size // self.config.num_heads

    def cross_kv(self, image_tokens: mx.array) -> list[tuple[mx.array, mx.array]]:
        """Per-layer cross-attention keys/values ``(B, H, T, hd)`` of ``(B, T, kv_dims)`` tokens."""
        return [layer.cross_attn.project_kv(image_tokens) for layer in self.layers]

    def make_cache(
        self, batch: int, max_length: int | None = None, dtype: mx.Dtype = mx.float32
    ) -> list[KVCache]:
        """Empty self-attention caches, one per layer, for ``max_length`` positions."""
        length = self.config.max_length if max_length is None else max_length
        return [
            KVCache.empty(batch, self.num_heads, length, self.head_dim, dtype) for _ in self.layers
        ]

    # ----------------------------------------------------------------- generation protocol
    # What mlx_caption.generate needs, given image tokens already at the decoder's width.

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_positions(self) -> int:
        """Most tokens a caption (with its start token) may have."""
        return self.config.max_length

    @property
    def default_max_length(self) -> int:
        """Generated tokens by default: as many as the training captions had."""
        return self.config.max_length - 1

    def decoding_memory(self, image_tokens: mx.array) -> list[tuple[mx.array, mx.array]]:
        """What every decoding step reads of the image: :meth:`cross_kv`, once per image."""
        return self.cross_kv(image_tokens)

    def decode_step(
        self,
        tokens: mx.array,
        memory: list[tuple[mx.array, mx.array]],
        cache: list[KVCache],
        offset: int | mx.array,
        return_attention: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        """Logits ``(B, L, vocab)`` of ``tokens`` written at ``offset`` into ``cache``; with
        ``return_attention`` also their cross-attention ``(B, L, T_image)`` averaged over
        layers and heads."""
        out = self(
            tokens, cross_kv=memory, caches=cache, offset=offset, return_attention=return_attention
        )
        if not return_attention:
            return out, None
        logits, maps = out
        return logits, mx.mean(mx.stack(maps), axis=(0, 2))

    def logits(self, hidden: mx.array) -> mx.array:
        """Vocabulary logits of final hidden states.

        The rows are flattened into one matrix and the bias goes into the matmul (``addmm``):
        one GEMM over every position instead of one per batch row, and no separate pass over
        the ``(rows, vocab)`` logits to add it.
        """
        flat = hidden.reshape(-1, hidden.shape[-1])
        if self.config.tie_embeddings:
            out = linear(flat, self.embed_tokens.weight, self.output_bias)
        else:
            out = self.lm_head(flat)
        return out.reshape(*hidden.shape[:-1], out.shape[-1])

    def __call__(
        self,
        tokens: mx.array,
        image_tokens: mx.array | None = None,
        *,
        cross_kv: list[tuple[mx.array, mx.array]] | None = None,
        padding_mask: mx.array | None = None,
        caches: list[KVCache] | None = None,
        offset: int | mx.array = 0,
        return_attention: bool = False,
    ) -> mx.array | tuple[mx.array, list[mx.array]]:
        """Logits ``(B, L, vocab)`` of ``tokens`` (B, L) given the image.

        Args:
            tokens: token ids; position ``i`` of the input is absolute position ``offset + i``.
            image_tokens: ``(B, T, kv_dims)`` image tokens (or give ``cross_kv``).
            cross_kv: precomputed :meth:`cross_kv` of the image tokens.
            padding_mask: ``(B, L_key)`` True for real tokens; padded keys are ignored.
            caches: per-layer :class:`KVCache` for incremental decoding (``offset`` must be
                the number of positions already written).
            return_attention: also return per-layer cross-attention weights (B, H, L, T).
        """
        if cross_kv is None:
            if image_tokens is None:
                raise ValueError("give image_tokens or cross_kv")
            cross_kv = self.cross_kv(image_tokens)
        length = tokens.shape[1]
        positions = mx.arange(length) + offset
        x = self.embed_tokens(tokens) + self.embed_positions(positions)
        x = self.dropout(x)

        if caches is not None:
            mask = causal_mask(length, caches[0].max_length, offset)
        elif padding_mask is None:
            mask = "causal"
        else:
            mask = causal_mask(length)
        if padding_mask is not None:
            mask = combine_masks(mask, key_padding_mask(padding_mask))

        attentions = []
        for i, layer in enumerate(self.layers):
            out = layer(
                x,
                cross_kv[i],
                mask=mask,
                cache=None if caches is None else caches[i],
                return_attention=return_attention,
            )
            if return_attention:
                out, weights = out
                attentions.append(weights)
            x = out
        logits = self.logits(self.norm(x))
        return (logits, attentions) if return_attention else logits
