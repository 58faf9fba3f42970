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

from mlx_caption.models.base import VisionEncoder, VisionOutput, sanitize_state, tower_keys
from mlx_caption.models.clip.config import CLIPVisionConfig
from mlx_caption.models.layers import (
    STEMS,
    MultiHeadAttention,
    PreNormBlock,
    resize_positions,
    sincos_position_embedding,
)
from mlx_caption.models.layers.linear import Linear
from mlx_caption.models.layers.norm import LayerNorm

PATCH_KEY = "embeddings.patch_embedding.weight"
# Keys of the rest of a CLIPModel checkpoint: the text tower and the contrastive scale.
DROP_PREFIXES = ("text_model.", "text_projection.", "logit_scale")
hf_key_to_ours = tower_keys(DROP_PREFIXES)  # a transformers key -> ours (None: dropped)


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        if cfg.stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, not {cfg.stem!r}")
        self.patch_size = cfg.patch_size
        self.class_embedding = mx.zeros((cfg.hidden_size,))
        self.patch_embedding = STEMS[cfg.stem](cfg.num_channels, cfg.hidden_size, cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_positions, cfg.hidden_size)

    def __call__(self, pixels: mx.array) -> mx.array:
        b, h, w, _ = pixels.shape
        patches = self.patch_embedding(pixels)
        cls = mx.broadcast_to(self.class_embedding.astype(patches.dtype), (b, 1, patches.shape[-1]))
        grid = (h // self.patch_size, w // self.patch_size)
        positions = resize_positions(self.position_embedding.weight, grid, prefix=1)
        return mx.concatenate([cls, patches], axis=1) + positions


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


class CLIPVisionModel(VisionEncoder):
    """CLIP ViT over NHWC float pixels; ``model.config`` is its :class:`CLIPVisionConfig`."""

    # Fine-tuning rules (see models.base.set_encoder_trainable): post_layernorm trains with any
    # block; the contrastive head is off the captioning path.
    after_blocks = ("post_layernorm",)

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__(cfg)
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = Encoder(cfg)
        self.post_layernorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if cfg.projection_dim:
            self.visual_projection = Linear(cfg.hidden_size, cfg.projection_dim, bias=False)

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
        """Encode NHWC pixels of any size of at least one patch (positions are resized to
        the grid, bicubic, as transformers' ``interpolate_pos_encoding``)."""
        x, hidden = self.run_blocks(
            self.pre_layrnorm(self.embeddings(pixels)), output_hidden_states
        )
        pooled = self.post_layernorm(x[:, 0])
        embeds = self.visual_projection(pooled) if "visual_projection" in self else None
        return VisionOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            image_embeds=embeds,
            hidden_states=hidden,
        )

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Map HF CLIP tensors to this module's names; running it twice changes nothing.

        Drops the text tower and ``position_ids`` buffers, strips ``vision_model.``, and turns
        the patch kernel from OIHW (torch) into OHWI (MLX) (see ``models.base.sanitize_state``).
        """
        return sanitize_state(weights, hf_key_to_ours, PATCH_KEY)
