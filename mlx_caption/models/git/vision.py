"""GIT's image side, with Hugging Face parameter names: the image encoder
(``git.image_encoder.vision_model.*``) and the visual projection (``git.visual_projection``).

The encoder is CLIP's ViT (the CLIP family's modules) with one difference: ``post_layernorm``
normalises every token, not only the class token, and the whole normalised grid is what the
decoder reads.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.base import VisionOutput
from mlx_caption.models.clip.vision import CLIPVisionModel
from mlx_caption.models.git.config import GitConfig, GitVisionConfig
from mlx_caption.models.layers.linear import Linear
from mlx_caption.models.layers.norm import LayerNorm


class GitVisionTransformer(CLIPVisionModel):
    """CLIP's vision transformer with ``post_layernorm`` on every token (no pooled output)."""

    def __call__(self, pixels: mx.array, output_hidden_states: bool = False) -> VisionOutput:
        """Encode NHWC pixels of any size of at least one patch (positions resized to the
        grid, bicubic, as transformers' ``interpolate_pos_encoding``)."""
        x, hidden = self.run_blocks(
            self.pre_layrnorm(self.embeddings(pixels)), output_hidden_states
        )
        return VisionOutput(
            last_hidden_state=self.post_layernorm(x), pooler_output=None, hidden_states=hidden
        )


class GitVisionModel(nn.Module):
    """``image_encoder``: holds ``vision_model`` (transformers' ``GitVisionModel`` layout)."""

    def __init__(self, cfg: GitVisionConfig):
        super().__init__()
        self.vision_model = GitVisionTransformer(cfg)


class GitProjection(nn.Module):
    """``visual_projection``: Linear then LayerNorm (transformers' ``nn.Sequential``, hence
    the numbered names), from the vision width to the decoder's."""

    def __init__(self, cfg: GitConfig):
        super().__init__()
        d = cfg.text.hidden_size
        self.visual_projection = [
            Linear(cfg.vision.hidden_size, d),
            LayerNorm(d, eps=cfg.vision.layer_norm_eps),
        ]

    def __call__(self, features: mx.array) -> mx.array:
        linear, norm = self.visual_projection
        return norm(linear(features))
