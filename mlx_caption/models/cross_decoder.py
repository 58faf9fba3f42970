"""A text decoder that reads the image through cross-attention in every layer (BLIP's BERT,
ViT-GPT2's GPT-2): the generation engine's protocol (see :mod:`mlx_caption.generate`) and the
forward pass, written once.

A subclass builds its modules and says what differs: :meth:`embed` (token and position
embeddings), :meth:`head` (the LM head), :meth:`cross_attention` (a layer's cross-attention
module, with ``project_kv``), ``layers`` (each called as ``layer(x, cross_kv, mask, cache,
return_attention)``, returning the new ``x`` and the cross-attention weights or None) and
``attention_shape`` (self-attention heads and head width). The image's cross-attention keys
and values are computed once per image (:meth:`decoding_memory`); the self-attention keys
and values live in preallocated :class:`KVCache` buffers.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.base import PretrainedCaptionerConfig
from mlx_caption.models.layers import KVCache, causal_mask
from mlx_caption.tokens import SpecialTokens

CrossKV = list[tuple[mx.array, mx.array]]


class CrossAttentionDecoder(nn.Module):
    """The shared half of a cross-attention captioner's decoder (see the module docstring).

    Args:
        special_tokens: the ids captions start with, end with and are padded with.
        vocab_size, max_positions: the protocol's constants (positions include the start
            tokens and any prompt).
        defaults: the captioner's config, whose generation defaults (``max_new_tokens``,
            ``length_counts_prompt``, ``early_stopping``) are the ``DecodingConfig``
            defaults it wants.
    """

    def __init__(
        self,
        special_tokens: SpecialTokens,
        vocab_size: int,
        max_positions: int,
        defaults: PretrainedCaptionerConfig,
    ):
        super().__init__()
        self.special_tokens = special_tokens
        self.vocab_size = vocab_size
        self.max_positions = max_positions
        self.default_max_length = defaults.max_new_tokens
        self.default_length_counts_prompt = defaults.length_counts_prompt
        self.default_early_stopping = defaults.early_stopping

    # What a subclass defines.

    @property
    def layers(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def attention_shape(self) -> tuple[int, int]:
        """Self-attention heads and head width (the KV cache's shape)."""
        raise NotImplementedError

    def cross_attention(self, layer: nn.Module) -> nn.Module:
        """A layer's cross-attention module (``project_kv(image_tokens)``)."""
        raise NotImplementedError

    def embed(self, tokens: mx.array, offset: int | mx.array) -> mx.array:
        """``(B, L)`` tokens at positions ``offset ..`` -> ``(B, L, d)``."""
        raise NotImplementedError

    def head(self, x: mx.array) -> mx.array:
        """The last layer's output -> logits ``(B, L, vocab)``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- generation protocol

    def decoding_memory(self, image_tokens: mx.array) -> CrossKV:
        """Per-layer cross-attention keys and values of the image, computed once per image."""
        return [self.cross_attention(layer).project_kv(image_tokens) for layer in self.layers]

    def make_cache(
        self, batch: int, max_length: int | None = None, dtype: mx.Dtype = mx.float32
    ) -> list[KVCache]:
        """Empty self-attention caches, one per layer."""
        heads, head_dim = self.attention_shape
        length = self.max_positions if max_length is None else max_length
        return [KVCache.empty(batch, heads, length, head_dim, dtype) for _ in self.layers]

    def decode_step(
        self,
        tokens: mx.array,
        memory: CrossKV,
        cache: list[KVCache],
        offset: int | mx.array,
        return_attention: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        """Logits ``(B, L, vocab)`` of ``tokens`` written at ``offset``; with
        ``return_attention`` their cross-attention ``(B, L, T_image)`` averaged over layers
        and heads."""
        return self(
            tokens, cross_kv=memory, caches=cache, offset=offset, return_attention=return_attention
        )

    # ----------------------------------------------------------------- forward

    def __call__(
        self,
        tokens: mx.array,
        image_tokens: mx.array | None = None,
        *,
        cross_kv: CrossKV | None = None,
        caches: list[KVCache] | None = None,
        offset: int | mx.array = 0,
        return_attention: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        """Logits of ``tokens`` (B, L) given the image (``image_tokens`` or their
        ``cross_kv``), and the mean cross-attention map when asked."""
        if cross_kv is None:
            if image_tokens is None:
                raise ValueError("give image_tokens or cross_kv")
            cross_kv = self.decoding_memory(image_tokens)
        length = tokens.shape[1]
        x = self.embed(tokens, offset)
        mask = "causal" if caches is None else causal_mask(length, caches[0].max_length, offset)
        maps = []
        for i, layer in enumerate(self.layers):
            cache = None if caches is None else caches[i]
            x, weights = layer(x, cross_kv[i], mask, cache, return_attention)
            maps.append(weights)
        logits = self.head(x)
        if not return_attention:
            return logits, None
        return logits, mx.mean(mx.stack(maps), axis=(0, 2))
