"""CLIP vision tower configuration, with Hugging Face ``CLIPVisionConfig`` field names."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mlx_caption.data.preprocess import PreprocessConfig
from mlx_caption.models.base import EncoderConfig, vision_section

MODEL_TYPE = "clip_vision_model"


def clip_preprocess(image_size: int) -> PreprocessConfig:
    """CLIP's processor (every CLIP checkpoint here ships it, OpenCLIP's LAION ones too):
    shortest side to ``image_size`` with bicubic, center crop, OpenAI mean/std."""
    return PreprocessConfig(resize_shortest_edge=image_size, crop_size=image_size)


@dataclass
class CLIPVisionConfig(EncoderConfig):
    """A CLIP vision transformer and the preprocessing that belongs to its checkpoint
    (defaults: ViT-B/32's, as transformers' CLIPVisionConfig)."""

    MODEL_TYPE = MODEL_TYPE
    HF_FIELDS = (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps",
    )  # fmt: skip

    intermediate_size: int = 3072
    hidden_act: str = "quick_gelu"  # "quick_gelu" | "gelu"
    layer_norm_eps: float = 1e-5
    patch_size: int = 32
    projection_dim: int | None = None  # set when the checkpoint has a visual_projection
    # How pixels become tokens: "patch" is CLIP's one linear map per patch (every converted
    # checkpoint); "conv" is a stack of 3x3 stride-2 convolutions (from-scratch training:
    # it learns shapes far sooner, see models/layers/stems.py ConvStem). Same token grid.
    stem: str = "patch"

    def default_preprocess(self) -> PreprocessConfig:
        return clip_preprocess(self.image_size)

    @classmethod
    def read_hf(cls, config: dict, weight_names: Collection[str]) -> tuple[dict, dict]:
        """``CLIPConfig``'s ``vision_config`` or a ``CLIPVisionConfig``; ``projection_dim`` is
        kept only when the (sanitized) ``weight_names`` hold a ``visual_projection``."""
        vision = vision_section(config, "clip", MODEL_TYPE, "CLIP")
        projection_dim = config.get("projection_dim", vision.get("projection_dim", 512))
        has_projection = "visual_projection.weight" in weight_names
        return vision, {"projection_dim": int(projection_dim) if has_projection else None}
