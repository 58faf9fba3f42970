"""SigLIP vision tower configuration, with Hugging Face ``SiglipVisionConfig`` field names.

SigLIP 2's fixed-resolution checkpoints (``google/siglip2-base-patch16-224`` and the like)
are ``model_type: siglip`` too: the same architecture, read by this family.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mlx_caption.data.preprocess import (
    PreprocessConfig,
    preprocess_config_from_hf,
    squash_preprocess,
)
from mlx_caption.models.base import EncoderConfig, hf_fields, vision_section

MODEL_TYPE = "siglip_vision_model"


def siglip_preprocess(image_size: int, resample: str = "bicubic") -> PreprocessConfig:
    """SigLIP's processor: the whole image squashed to ``image_size`` square (no crop),
    mean and std 0.5. SigLIP checkpoints resample bicubic, SigLIP 2's bilinear."""
    return squash_preprocess(image_size, resample)


@dataclass
class SiglipVisionConfig(EncoderConfig):
    """A SigLIP vision transformer and the preprocessing that belongs to its checkpoint."""

    MODEL_TYPE = MODEL_TYPE

    # The transformer (defaults: SigLIP-B/16's, as transformers' SiglipVisionConfig; the hub
    # configs leave out the fields that equal these).
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    # The image and its patches.
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    vision_use_head: bool = True  # the attention-pooling head that gives pooler_output
    preprocess: PreprocessConfig | None = None  # None: SigLIP's processor at image_size

    def default_preprocess(self) -> PreprocessConfig:
        return siglip_preprocess(self.image_size)

    @property
    def prefix_tokens(self) -> int:
        """None: SigLIP has no class token."""
        return 0

    @classmethod
    def from_hf(
        cls,
        config: dict,
        preprocessor: dict | None = None,
        weight_names: Collection[str] = (),
    ) -> SiglipVisionConfig:
        """From a Hugging Face ``config.json`` (``SiglipConfig`` or ``SiglipVisionConfig``)
        and, if the checkpoint has one, its ``preprocessor_config.json`` dict."""
        vision = vision_section(config, "siglip", MODEL_TYPE, "SigLIP")
        names = [
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps",
            "vision_use_head",
        ]  # fmt: skip
        cfg = cls(**hf_fields(cls, vision, names))
        cfg.preprocess = preprocess_config_from_hf(preprocessor or {}, cfg.preprocess)
        return cfg
