"""MLX-native SigLIP vision transformer with Hugging Face parameter names.

Same computation as transformers' ``SiglipVisionModel``: patch embedding (with a bias) plus
learned positions, no class token and no pre-norm, the CLIP-style pre-LN blocks, a final
``post_layernorm`` over every token, and the attention-pooling ``head`` (a learned probe
attends once over the tokens, then a residual MLP) giving ``pooler_output``. Parameter names
are HF's without ``vision_model.``; the head's attention keeps ``torch.nn.MultiheadAttention``'s
packed ``in_proj_weight``/``in_proj_bias``. The only layout change is the patch kernel (OHWI).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.base import VisionEncoder, VisionOutput, sanitize_state, tower_keys
from mlx_caption.models.clip.vision import PATCH_KEY, Encoder
from mlx_caption.models.layers import (
    MLP,
    PatchEmbedding,
    merge_heads,
    resize_positions,
    scaled_dot_product_attention,
    split_heads,
)
from mlx_caption.models.layers.linear import Linear
from mlx_caption.models.layers.norm import LayerNorm
from mlx_caption.models.siglip.config import SiglipVisionConfig

# The patch kernel's name and the blocks are CLIP's. Keys of the rest of a SiglipModel
# checkpoint: the text tower and the sigmoid loss's scalars.
DROP_PREFIXES = ("text_model.", "logit_scale", "logit_bias")
hf_key_to_ours = tower_keys(DROP_PREFIXES)  # a transformers key -> ours (None: dropped)


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipVisionConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.patch_embedding = PatchEmbedding(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, bias=True
        )
        self.position_embedding = nn.Embedding(cfg.num_positions, cfg.hidden_size)

    def __call__(self, pixels: mx.array) -> mx.array:
        _, h, w, _ = pixels.shape
        grid = (h // self.patch_size, w // self.patch_size)
        return self.patch_embedding(pixels) + resize_positions(self.position_embedding.weight, grid)


class PackedAttention(nn.Module):
    """``torch.nn.MultiheadAttention``'s parameters (one packed q/k/v projection) over the
    shared attention core: queries from one sequence, keys and values from another."""

    def __init__(self, dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dims // num_heads) ** -0.5
        self.in_proj_weight = mx.zeros((3 * dims, dims))
        self.in_proj_bias = mx.zeros((3 * dims,))
        self.out_proj = Linear(dims, dims)

    def __call__(self, queries: mx.array, source: mx.array) -> mx.array:
        d = queries.shape[-1]
        w, b = self.in_proj_weight, self.in_proj_bias
        q = queries @ w[:d].T + b[:d]
        k = source @ w[d : 2 * d].T + b[d : 2 * d]
        v = source @ w[2 * d :].T + b[2 * d :]
        heads = [split_heads(t, self.num_heads) for t in (q, k, v)]
        return self.out_proj(merge_heads(scaled_dot_product_attention(*heads, self.scale)))


class AttentionPoolingHead(nn.Module):
    """A learned probe attends over the tokens; a residual MLP follows (``head.*``)."""

    def __init__(self, cfg: SiglipVisionConfig):
        super().__init__()
        self.probe = mx.zeros((1, 1, cfg.hidden_size))
        self.attention = PackedAttention(cfg.hidden_size, cfg.num_attention_heads)
        self.layernorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def __call__(self, x: mx.array) -> mx.array:
        probe = mx.broadcast_to(self.probe.astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        pooled = self.attention(probe, x)
        return (pooled + self.mlp(self.layernorm(pooled)))[:, 0]


class SiglipVisionModel(VisionEncoder):
    """SigLIP ViT over NHWC float pixels; ``model.config`` is its :class:`SiglipVisionConfig`."""

    # Fine-tuning rules (see models.base.set_encoder_trainable): post_layernorm trains with any
    # block; the pooling head is off the captioning path, which reads the token grid.
    after_blocks = ("post_layernorm",)

    def __init__(self, cfg: SiglipVisionConfig):
        super().__init__(cfg)
        self.embeddings = VisionEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.post_layernorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if cfg.vision_use_head:
            self.head = AttentionPoolingHead(cfg)

    @property
    def never_trained(self) -> list[str]:
        """Parameters fine-tuning leaves alone: the pooling head and the key biases."""
        head = ["head"] if "head" in self else []
        return head + [f"encoder.layers.{i}.self_attn.k_proj.bias" for i in range(len(self.layers))]

    def __call__(self, pixels: mx.array, output_hidden_states: bool = False) -> VisionOutput:
        """Encode NHWC pixels of any size of at least one patch (positions resized to the
        grid, bicubic, as transformers' ``interpolate_pos_encoding``)."""
        x, hidden = self.run_blocks(self.embeddings(pixels), output_hidden_states)
        x = self.post_layernorm(x)
        pooled = self.head(x) if "head" in self else None
        return VisionOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden)

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Map HF SigLIP tensors to this module's names; running it twice changes nothing.

        Drops the text tower, the loss scalars and ``position_ids`` buffers, strips
        ``vision_model.``, and turns the patch kernel from OIHW into OHWI.
        """
        return sanitize_state(weights, hf_key_to_ours, PATCH_KEY)
