"""CLIP vision tower configuration, with Hugging Face ``CLIPVisionConfig`` field names."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from mlx_caption.data.preprocess import PreprocessConfig, preprocess_config_from_hf
from mlx_caption.models.base import ViTConfig

MODEL_TYPE = "clip_vision_model"


def clip_preprocess(image_size: int) -> PreprocessConfig:
    """CLIP's processor (every CLIP checkpoint here ships it, OpenCLIP's LAION ones too):
    shortest side to ``image_size`` with bicubic, center crop, OpenAI mean/std."""
    return PreprocessConfig(resize_shortest_edge=image_size, crop_size=image_size)


@dataclass
class CLIPVisionConfig(ViTConfig):
    """A CLIP vision transformer and the preprocessing that belongs to its checkpoint
    (defaults: ViT-B/32's, as transformers' ``CLIPVisionConfig``; CLIP's processor)."""

    hidden_act: str = "quick_gelu"  # "quick_gelu" | "gelu"
    patch_size: int = 32
    num_channels: int = 3
    projection_dim: int | None = None  # set when the checkpoint has a visual_projection
    # How pixels become tokens: "patch" is CLIP's one linear map per patch (every converted
    # checkpoint); "conv" is a stack of 3x3 stride-2 convolutions (from-scratch training:
    # it learns shapes far sooner, see models/layers/stems.py ConvStem). Same token grid.
    stem: str = "patch"

    def default_preprocess(self) -> PreprocessConfig:
        return clip_preprocess(self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **super().to_dict()}

    @classmethod
    def from_hf(
        cls,
        config: dict,
        preprocessor: dict | None = None,
        weight_names: Collection[str] = (),
    ) -> CLIPVisionConfig:
        """From a Hugging Face ``config.json`` (``CLIPConfig`` or ``CLIPVisionConfig``).

        ``preprocessor`` is the ``preprocessor_config.json`` dict, if the checkpoint has one.
        ``projection_dim`` is kept only when the (sanitized) ``weight_names`` hold a
        ``visual_projection``.
        """
        has_projection = "visual_projection.weight" in weight_names
        model_type = config.get("model_type")
        if model_type == "clip":
            vision = dict(config.get("vision_config") or {})
            projection_dim = config.get("projection_dim", vision.get("projection_dim", 512))
        elif model_type == MODEL_TYPE:
            vision = config
            projection_dim = config.get("projection_dim", 512)
        else:
            raise ValueError(
                f"not a CLIP checkpoint: config.json has model_type={model_type!r} "
                f"(expected 'clip' or {MODEL_TYPE!r})"
            )
        defaults = cls()
        names = [
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps",
        ]  # fmt: skip
        args = {n: vision.get(n, getattr(defaults, n)) for n in names}
        cfg = cls(**args, projection_dim=int(projection_dim) if has_projection else None)
        cfg.preprocess = preprocess_config_from_hf(
            preprocessor or {}, clip_preprocess(cfg.image_size)
        )
        return cfg
