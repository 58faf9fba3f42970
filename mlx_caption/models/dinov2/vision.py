"""MLX-native DINOv2 (and DINOv2 with registers) with Hugging Face parameter names.

Same computation as transformers' ``Dinov2Model`` / ``Dinov2WithRegistersModel``: ViT's
embeddings (class token, register tokens after it, learned positions always resized to the
input's grid: bicubic, antialiased in the registers variant) and attention, pre-LN blocks
with a layer scale on each branch (``norm1``, attention, ``layer_scale1``, ``norm2``,
``mlp.fc1``/``fc2``, ``layer_scale2``), and a final ``layernorm``; ``pooler_output`` is the
normalised class token. The masked-image-modelling ``mask_token`` is not used and dropped.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.base import VisionEncoder, VisionOutput, sanitize_state
from mlx_caption.models.dinov2.config import Dinov2Config
from mlx_caption.models.layers import MLP
from mlx_caption.models.layers.norm import LayerNorm
from mlx_caption.models.vit.vision import (
    PATCH_KEY,
    Encoder,
    ViTAttention,
    ViTEmbeddings,
    checkpoint_attention_name,
    key_biases,
)


def hf_key_to_ours(key: str) -> str | None:
    """This module's name for a DINOv2 key, as saved or as transformers 5 holds it in memory
    (None: the unused mask token)."""
    if key == "embeddings.mask_token":
        return None
    return checkpoint_attention_name(key)


class LayerScale(nn.Module):
    """A learned per-channel scale on a residual branch (``lambda1``)."""

    def __init__(self, dims: int, value: float):
        super().__init__()
        self.lambda1 = mx.full((dims,), value)

    def __call__(self, x: mx.array) -> mx.array:
        return x * self.lambda1


class Dinov2Layer(nn.Module):
    """x + layer_scale1(attention(norm1(x))), then x + layer_scale2(mlp(norm2(x)))."""

    def __init__(self, cfg: Dinov2Config):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attention = ViTAttention(d, cfg.num_attention_heads, cfg.qkv_bias)
        self.layer_scale1 = LayerScale(d, cfg.layerscale_value)
        self.norm2 = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = MLP(d, cfg.intermediate_size, cfg.hidden_act)
        self.layer_scale2 = LayerScale(d, cfg.layerscale_value)

    def attention_qkv(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """The attention's queries, keys and values of these tokens (see PreNormBlock)."""
        return self.attention.project_qkv(self.norm1(x))

    def finish(self, x: mx.array, q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        """The block's output for tokens ``x`` whose queries ``q`` attend over ``k``/``v``."""
        x = x + self.layer_scale1(self.attention.attend_heads(q, k, v))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))

    def __call__(self, x: mx.array) -> mx.array:
        return self.finish(x, *self.attention_qkv(x))


class Dinov2Model(VisionEncoder):
    """DINOv2 over NHWC float pixels; ``model.config`` is its :class:`Dinov2Config`."""

    # Fine-tuning rules (see models.base.set_encoder_trainable): the final layernorm trains
    # with any block.
    after_blocks = ("layernorm",)

    def __init__(self, cfg: Dinov2Config):
        super().__init__(cfg)
        self.embeddings = ViTEmbeddings(cfg, cfg.num_register_tokens, antialias=cfg.with_registers)
        self.encoder = Encoder([Dinov2Layer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.layernorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    @property
    def never_trained(self) -> list[str]:
        """Parameters fine-tuning leaves alone: the key biases."""
        return key_biases(self)

    def __call__(self, pixels: mx.array, output_hidden_states: bool = False) -> VisionOutput:
        """Encode NHWC pixels of any size of at least one patch; the tokens are the class
        token, the registers, then the patches."""
        x, hidden = self.run_blocks(self.embeddings(pixels), output_hidden_states)
        x = self.layernorm(x)
        return VisionOutput(last_hidden_state=x, pooler_output=x[:, 0], hidden_states=hidden)

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Map HF DINOv2 tensors to this module's names; running it twice changes nothing.

        Reads the checkpoints' names and transformers 5's in-memory ones, drops the mask
        token, and turns the patch kernel from OIHW into OHWI.
        """
        return sanitize_state(weights, hf_key_to_ours, PATCH_KEY)
