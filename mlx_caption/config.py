"""Model configurations as plain dataclasses, serialised to and from JSON dicts.

``VisionConfig`` keeps Hugging Face's ``CLIPVisionConfig`` field names so a converted
folder's ``config.json`` reads like the original, plus the preprocessing that belongs to
the checkpoint (image size, mean, std, resize filter, crop).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _from_dict(cls, data: dict[str, Any]):
    """Build a dataclass from a dict, ignoring unknown keys (forward compatible)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class PreprocessConfig:
    """How an image becomes the encoder's input (CLIP's processor settings)."""

    resize_shortest_edge: int = 224
    crop_size: int = 224
    resample: str = "bicubic"  # "bicubic" | "bilinear" | "nearest"
    do_center_crop: bool = True
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        cfg = _from_dict(cls, data)
        cfg.image_mean = tuple(cfg.image_mean)
        cfg.image_std = tuple(cfg.image_std)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        return d


@dataclass
class VisionConfig:
    """A CLIP vision transformer (Hugging Face ``CLIPVisionConfig`` names)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"  # "quick_gelu" | "gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int | None = None  # set when the checkpoint has a visual_projection
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Tokens in the grid: the class token plus one per patch."""
        return self.num_patches + 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisionConfig:
        data = dict(data)
        pre = data.pop("preprocess", None)
        cfg = _from_dict(cls, data)
        cfg.preprocess = (
            PreprocessConfig.from_dict(pre)
            if pre
            else PreprocessConfig(resize_shortest_edge=cfg.image_size, crop_size=cfg.image_size)
        )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        return d


@dataclass
class DecoderConfig:
    """The hand-written transformer text decoder."""

    vocab_size: int = 8192
    hidden_size: int = 512
    num_layers: int = 6
    num_heads: int = 8
    intermediate_size: int = 2048
    max_length: int = 40  # learned positions; captions are padded/truncated to this
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    tie_embeddings: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderConfig:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CaptionerConfig:
    """Encoder + projector + decoder: everything needed to rebuild a captioner."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    encoder_name: str | None = None  # zoo name or source of the encoder weights, for provenance
    projector: str = "linear"  # "linear" | "mlp"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionerConfig:
        return cls(
            vision=VisionConfig.from_dict(data.get("vision", {})),
            decoder=DecoderConfig.from_dict(data.get("decoder", {})),
            encoder_name=data.get("encoder_name"),
            projector=data.get("projector", "linear"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "vision": self.vision.to_dict(),
            "decoder": self.decoder.to_dict(),
            "encoder_name": self.encoder_name,
            "projector": self.projector,
        }
