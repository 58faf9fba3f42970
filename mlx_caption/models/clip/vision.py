"""MLX-native CLIP vision transformer with Hugging Face parameter names.

Same computation as transformers' ``CLIPVisionModel`` (and ``...WithProjection``): patch
embedding, class token, learned positions, ``pre_layrnorm``, pre-LN encoder blocks,
``post_layernorm`` on the class token, optional ``visual_projection``. Parameter names are
HF's with the ``vision_model.`` prefix removed, so a converted checkpoint loads with
``load_weights`` and no renaming. The only layout change is the patch-embedding kernel,
stored OHWI because the input is NHWC.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_caption.models.base import VisionOutput, check_image_size, run_blocks
from mlx_caption.models.clip.config import CLIPVisionConfig
from mlx_caption.models.layers import (
    STEMS,
    MultiHeadAttention,
    PreNormBlock,
    sincos_position_embedding,
)

PATCH_KEY = "embeddings.patch_embedding.weight"
# Keys of the rest of a CLIPModel checkpoint: the text tower and the contrastive scale.
DROP_PREFIXES = ("text_model.", "text_projection.", "logit_scale")


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        if cfg.stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, not {cfg.stem!r}")
        self.image_size = cfg.image_size
        self.class_embedding = mx.zeros((cfg.hidden_size,))
        self.patch_embedding = STEMS[cfg.stem](cfg.num_channels, cfg.hidden_size, cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_tokens, cfg.hidden_size)

    def __call__(self, pixels: mx.array) -> mx.array:
        check_image_size(pixels, self.image_size)
        patches = self.patch_embedding(pixels)
        shape = (pixels.shape[0], 1, patches.shape[-1])
        cls = mx.broadcast_to(self.class_embedding.astype(patches.dtype), shape)
        return mx.concatenate([cls, patches], axis=1) + self.position_embedding.weight


class EncoderLayer(PreNormBlock):
    """Pre-LN block with CLIP's attention (separate q/k/v/out projections, a key bias)."""

    def __init__(self, cfg: CLIPVisionConfig):
        attention = MultiHeadAttention(cfg.hidden_size, cfg.num_attention_heads, key_bias=True)
        super().__init__(
            attention, cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, cfg.layer_norm_eps
        )


class Encoder(nn.Module):
    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.layers = [EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)]


class CLIPVisionModel(nn.Module):
    """CLIP ViT over NHWC float pixels; ``model.config`` is its :class:`CLIPVisionConfig`.

    ``grad_checkpoint = True`` recomputes each block's activations in the backward pass
    (only while ``model.training``), trading compute for memory when fine-tuning.
    """

    # Fine-tuning rules (see models.base.set_encoder_trainable): post_layernorm trains with any
    # block; the contrastive head is off the captioning path.
    after_blocks = ("post_layernorm",)

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.config = cfg
        self.grad_checkpoint = False
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if cfg.projection_dim:
            self.visual_projection = nn.Linear(cfg.hidden_size, cfg.projection_dim, bias=False)

    @property
    def layers(self) -> list[EncoderLayer]:
        """The encoder blocks, first to last (for freezing the first N)."""
        return self.encoder.layers

    @property
    def never_trained(self) -> list[str]:
        """Parameters fine-tuning leaves alone: the contrastive head and the key biases."""
        head = ["visual_projection"] if "visual_projection" in self else []
        return head + [f"encoder.layers.{i}.self_attn.k_proj.bias" for i in range(len(self.layers))]

    def init_sincos_positions(self) -> None:
        """Reset the position embedding to 2-D sine-cosine values (for training from scratch)."""
        grid = self.config.image_size // self.config.patch_size
        self.embeddings.position_embedding.weight = sincos_position_embedding(
            grid, self.config.hidden_size
        )

    def __call__(self, pixels: mx.array, output_hidden_states: bool = False) -> VisionOutput:
        x, hidden = run_blocks(
            self, self.pre_layrnorm(self.embeddings(pixels)), output_hidden_states
        )
        pooled = self.post_layernorm(x[:, 0])
        embeds = self.visual_projection(pooled) if "visual_projection" in self else None
        return VisionOutput(
            last_hidden_state=x, pooler_output=pooled, image_embeds=embeds, hidden_states=hidden
        )

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Map HF CLIP tensors to this module's names; running it twice changes nothing.

        Drops the text tower and ``position_ids`` buffers, strips ``vision_model.``, and turns
        the patch kernel from OIHW (torch) into OHWI (MLX). A kernel already OHWI is left as
        is: the two are told apart by which axes are equal (the square patch's), so only a
        3-pixel patch over 3 channels would be ambiguous. Works on numpy and MLX arrays.
        """
        out = {}
        for key, value in weights.items():
            if key.startswith(DROP_PREFIXES) or key.endswith("position_ids"):
                continue
            key = key.removeprefix("vision_model.")
            if key == PATCH_KEY and value.ndim == 4 and _is_oihw(tuple(value.shape)):
                value = value.transpose(0, 2, 3, 1)
                if isinstance(value, np.ndarray):
                    value = np.ascontiguousarray(value)
            out[key] = value
        return out


def _is_oihw(shape: tuple[int, ...]) -> bool:
    # OIHW: (D, C, p, p); OHWI: (D, p, p, C). Square patches mean H == W in both layouts.
    _, a, b, c = shape
    return b == c and a != b
