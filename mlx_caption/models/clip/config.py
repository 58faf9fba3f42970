"""CLIP vision tower configuration, with Hugging Face ``CLIPVisionConfig`` field names."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from mlx_caption.data.preprocess import PreprocessConfig, preprocess_config_from_hf

MODEL_TYPE = "clip_vision_model"


def clip_preprocess(image_size: int) -> PreprocessConfig:
    """CLIP's processor (every CLIP checkpoint here ships it, OpenCLIP's LAION ones too):
    shortest side to ``image_size`` with bicubic, center crop, OpenAI mean/std."""
    return PreprocessConfig(resize_shortest_edge=image_size, crop_size=image_size)


@dataclass
class CLIPVisionConfig:
    """A CLIP vision transformer and the preprocessing that belongs to its checkpoint."""

    # The transformer (defaults: ViT-B/32's, as transformers' CLIPVisionConfig).
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "quick_gelu"  # "quick_gelu" | "gelu"
    layer_norm_eps: float = 1e-5
    # The image and its patches.
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    projection_dim: int | None = None  # set when the checkpoint has a visual_projection
    # How pixels become tokens: "patch" is CLIP's one linear map per patch (every converted
    # checkpoint); "conv" is a stack of 3x3 stride-2 convolutions (from-scratch training:
    # it learns shapes far sooner, see models/layers/stems.py ConvStem). Same token grid.
    stem: str = "patch"
    preprocess: PreprocessConfig | None = None  # None: CLIP's processor at image_size

    def __post_init__(self) -> None:
        if self.preprocess is None:
            self.preprocess = clip_preprocess(self.image_size)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Tokens in the grid: the class token plus one per patch."""
        return self.num_patches + 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CLIPVisionConfig:
        """From :meth:`to_dict`'s output (unknown keys, such as ``model_type``, ignored)."""
        data = dict(data)
        pre = data.pop("preprocess", None)
        names = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in data.items() if k in names})
        if pre:
            cfg.preprocess = PreprocessConfig.from_dict(pre)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = {"model_type": MODEL_TYPE, **dataclasses.asdict(self)}
        d["preprocess"] = self.preprocess.to_dict()
        return d

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
