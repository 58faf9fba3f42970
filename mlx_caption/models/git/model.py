"""``GitForCausalLM`` in MLX: image encoder, visual projection and text decoder, with Hugging
Face's parameter names, so a converted checkpoint loads with no renaming."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.base import CaptionerParts, sanitize_state
from mlx_caption.models.git.config import GitConfig
from mlx_caption.models.git.text import GitDecoderLayer, GitEncoder, ImageKV
from mlx_caption.models.git.vision import GitProjection, GitVisionModel, GitVisionTransformer
from mlx_caption.models.layers import BertEmbeddings, KVCache, causal_mask
from mlx_caption.models.layers.linear import Linear
from mlx_caption.tokens import SpecialTokens

PATCH_KEY = "git.image_encoder.vision_model.embeddings.patch_embedding.weight"


class GitModel(nn.Module):
    """``git``: text embeddings, ``image_encoder``, the decoder layers (``encoder``, as
    transformers names them) and ``visual_projection``."""

    def __init__(self, cfg: GitConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg.text)
        self.image_encoder = GitVisionModel(cfg.vision)
        self.encoder = GitEncoder(cfg.text)
        self.visual_projection = GitProjection(cfg)


class GitForCausalLM(CaptionerParts):
    """GIT's captioner: ``git`` and the LM head ``output``.

    ``encode(pixels)`` gives the projected image tokens, ``model(image_tokens, tokens)``
    teacher-forced logits of the text. The text side is spread over ``git.embeddings``,
    ``git.encoder`` and ``output`` (transformers' names), so the model itself speaks the
    generation engine's protocol: its ``decoder`` is itself.
    """

    encoder_prefix = "git.image_encoder.vision_model."

    def __init__(self, cfg: GitConfig):
        super().__init__()
        self.config = cfg
        self.git = GitModel(cfg)
        self.output = Linear(cfg.text.hidden_size, cfg.text.vocab_size)
        # The generation protocol's constants. Captions start with [CLS] and end with [SEP];
        # transformers suppresses no token when GIT generates, and neither do we.
        text = cfg.text
        self.special_tokens = SpecialTokens(
            start=(text.bos_token_id,), end=text.eos_token_id, pad=text.pad_token_id
        )
        self.vocab_size = text.vocab_size
        self.max_positions = text.max_position_embeddings
        self.default_max_length = cfg.max_new_tokens
        self.default_early_stopping = cfg.early_stopping
        self.default_length_counts_prompt = cfg.length_counts_prompt

    @property
    def encoder(self) -> GitVisionTransformer:
        return self.git.image_encoder.vision_model

    @property
    def decoder(self) -> GitForCausalLM:
        return self

    @property
    def layers(self) -> list[GitDecoderLayer]:
        """The decoder layers."""
        return self.git.encoder.layer

    def encode_features(self, pixels: mx.array) -> mx.array:
        """The image encoder's normalised token grid ``(B, T, D)`` (what a feature cache
        holds)."""
        return self.encoder(pixels).last_hidden_state

    def project(self, features: mx.array) -> mx.array:
        """The decoder-wide image tokens: ``visual_projection`` of the grid."""
        return self.git.visual_projection(features)

    def encode(self, pixels: mx.array) -> mx.array:
        """Preprocessed NHWC pixels -> image tokens ``(B, T, hidden)``."""
        return self.project(self.encode_features(pixels))

    def __call__(self, image_tokens: mx.array, tokens: mx.array) -> mx.array:
        """Teacher-forced logits ``(B, L, vocab)`` of ``tokens`` (B, L) after the image."""
        return self.text_logits(tokens, self.decoding_memory(image_tokens), None, 0)[0]

    # ----------------------------------------------------------------- generation protocol

    def decoding_memory(self, image_tokens: mx.array) -> list[ImageKV]:
        """Every layer's keys and values of the image tokens, computed once per image (they
        never see the text); the last layer's image outputs are never needed."""
        memory = []
        x = image_tokens
        for i, layer in enumerate(self.layers):
            kv = layer.attention.self.project_kv(x)
            memory.append(kv)
            if i + 1 < len(self.layers):
                x = layer.image_forward(x, kv)
        return memory

    def make_cache(
        self, batch: int, max_length: int | None = None, dtype: mx.Dtype = mx.float32
    ) -> list[KVCache]:
        """Empty text self-attention caches, one per layer."""
        text = self.config.text
        length = text.max_position_embeddings if max_length is None else max_length
        head_dim = text.hidden_size // text.num_attention_heads
        return [
            KVCache.empty(batch, text.num_attention_heads, length, head_dim, dtype)
            for _ in self.layers
        ]

    def decode_step(
        self,
        tokens: mx.array,
        memory: list[ImageKV],
        cache: list[KVCache],
        offset: int | mx.array,
        return_attention: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        """Logits ``(B, L, vocab)`` of ``tokens`` written at text position ``offset``; with
        ``return_attention`` their attention over the image tokens ``(B, L, T)`` (in the
        self-attention: GIT has no cross-attention), averaged over layers and heads."""
        return self.text_logits(tokens, memory, cache, offset, return_attention)

    def text_logits(
        self,
        tokens: mx.array,
        memory: list[ImageKV],
        caches: list[KVCache] | None,
        offset: int | mx.array,
        return_attention: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        """Logits of ``tokens`` (B, L) given the image's ``memory``, the text before them in
        ``caches`` (None: ``tokens`` are the whole text)."""
        length = tokens.shape[1]
        x = self.git.embeddings(tokens, offset)
        keys = length if caches is None else caches[0].max_length
        mask = causal_mask(length, keys, offset)
        maps = []
        for i, layer in enumerate(self.layers):
            cache = None if caches is None else caches[i]
            x, weights = layer(
                x, memory[i], mask=mask, cache=cache, return_weights=return_attention
            )
            maps.append(weights)
        logits = self.output(x)
        if not return_attention:
            return logits, None
        return logits, mx.mean(mx.stack(maps), axis=(0, 2))

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Map a Hugging Face GIT state dict to this module's names; idempotent.

        Drops the position-id buffers and turns the patch kernel from OIHW (torch) into OHWI
        (MLX); a kernel already OHWI is left as it is.
        """
        return sanitize_state(weights, _hf_key_to_ours, PATCH_KEY)


def _hf_key_to_ours(key: str) -> str | None:
    return None if key.endswith("position_ids") else key
