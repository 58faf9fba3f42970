"""The pre-LN transformer block of the ViT families, with Hugging Face's names."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.layers.mlp import MLP
from mlx_caption.models.layers.norm import LayerNorm


class PreNormBlock(nn.Module):
    """``x + self_attn(layer_norm1(x))``, then ``x + mlp(layer_norm2(x))``.

    Args:
        attention: the family's self-attention (its projections keep their own names:
            CLIP's ``q_proj``..., BLIP's fused ``qkv``).
        dims, hidden: the width and the MLP's hidden width.
        act: the MLP activation's Hugging Face name.
        eps: the LayerNorms' epsilon.
    """

    def __init__(self, attention: nn.Module, dims: int, hidden: int, act: str, eps: float):
        super().__init__()
        self.self_attn = attention
        self.layer_norm1 = LayerNorm(dims, eps=eps)
        self.mlp = MLP(dims, hidden, act)
        self.layer_norm2 = LayerNorm(dims, eps=eps)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))
