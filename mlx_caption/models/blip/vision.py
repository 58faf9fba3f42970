"""BLIP's vision transformer, with Hugging Face parameter names (``vision_model.*``).

Differs from CLIP's: one fused ``qkv`` projection and an output ``projection``, a patch
convolution with a bias, no LayerNorm before the blocks, exact GELU, and ``post_layernorm``
applied to every token (the decoder cross-attends to the normalised grid). The pooled output
is ``post_layernorm`` of the already normalised class token, as transformers computes it.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.base import VisionEncoder, VisionOutput
from mlx_caption.models.blip.config import BlipVisionConfig
from mlx_caption.models.layers import (
    PatchEmbedding,
    PreNormBlock,
    merge_heads,
    resize_positions,
    scaled_dot_product_attention,
)
from mlx_caption.models.layers.linear import Linear
from mlx_caption.models.layers.norm import LayerNorm


class BlipAttention(nn.Module):
    """Self-attention with a fused ``qkv`` projection and an output ``projection``."""

    def __init__(self, dims: int, num_heads: int):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f"width {dims} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = 1.0 / math.sqrt(dims // num_heads)
        self.qkv = Linear(dims, 3 * dims)
        self.projection = Linear(dims, dims)

    def project_qkv(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Queries, keys and values ``(B, H, L, hd)`` of ``x``."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).transpose(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attend_heads(self, q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        """``(B, L, dims)``: the queries attend over the keys/values, projected out."""
        return self.projection(merge_heads(scaled_dot_product_attention(q, k, v, self.scale)))

    def __call__(self, x: mx.array) -> mx.array:
        return self.attend_heads(*self.project_qkv(x))


class BlipEncoderLayer(PreNormBlock):
    """Pre-LN block with BLIP's attention (fused ``qkv``, ``projection``)."""

    def __init__(self, cfg: BlipVisionConfig):
        attention = BlipAttention(cfg.hidden_size, cfg.num_attention_heads)
        super().__init__(
            attention, cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, cfg.layer_norm_eps
        )


class BlipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: BlipVisionConfig):
        super().__init__()
        d = cfg.hidden_size
        self.patch_size = cfg.patch_size
        self.class_embedding = mx.zeros((1, 1, d))
        self.patch_embedding = PatchEmbedding(cfg.num_channels, d, cfg.patch_size, bias=True)
        self.position_embedding = mx.zeros((1, cfg.num_positions, d))

    def __call__(self, pixels: mx.array) -> mx.array:
        b, h, w, _ = pixels.shape
        patches = self.patch_embedding(pixels)
        cls = mx.broadcast_to(self.class_embedding, (b, 1, patches.shape[-1]))
        grid = (h // self.patch_size, w // self.patch_size)
        positions = resize_positions(self.position_embedding[0], grid, prefix=1)
        return mx.concatenate([cls, patches], axis=1) + positions


class BlipEncoder(nn.Module):
    def __init__(self, cfg: BlipVisionConfig):
        super().__init__()
        self.layers = [BlipEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)]


class BlipVisionModel(VisionEncoder):
    """BLIP's ViT over NHWC float pixels of any size of at least one patch (positions resized
    to the grid, bicubic, as transformers' ``interpolate_pos_encoding``); fine-tuning rules as
    the encoder families' (:func:`mlx_caption.models.base.set_encoder_trainable`)."""

    after_blocks = ("post_layernorm",)
    # The key bias sits inside the fused qkv bias; a shift of every score of a query changes
    # nothing, so leaving it trainable changes nothing either.
    never_trained: tuple[str, ...] = ()

    def __init__(self, cfg: BlipVisionConfig):
        super().__init__(cfg)
        self.embeddings = BlipVisionEmbeddings(cfg)
        self.encoder = BlipEncoder(cfg)
        self.post_layernorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, pixels: mx.array, output_hidden_states: bool = False) -> VisionOutput:
        x, hidden = self.run_blocks(self.embeddings(pixels), output_hidden_states)
        x = self.post_layernorm(x)
        pooled = self.post_layernorm(x[:, 0])
        return VisionOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden)
