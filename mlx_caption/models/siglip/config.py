"""SigLIP vision tower configuration, with Hugging Face ``SiglipVisionConfig`` field names.

SigLIP 2's fixed-resolution checkpoints (``google/siglip2-base-patch16-224`` and the like)
are ``model_type: siglip`` too: the same architecture, read by this family.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mlx_caption.data.preprocess import PreprocessConfig, squash_preprocess
from mlx_caption.models.base import EncoderConfig, vision_section

MODEL_TYPE = "siglip_vision_model"


def siglip_preprocess(image_size: int, resample: str = "bicubic") -> PreprocessConfig:
    """SigLIP's processor: the whole image squashed to ``image_size`` square (no crop),
    mean and std 0.5. SigLIP checkpoints resample bicubic, SigLIP 2's bilinear."""
    return squash_preprocess(image_size, resample)


@dataclass
class SiglipVisionConfig(EncoderConfig):
    """A SigLIP vision transformer and the preprocessing that belongs to its checkpoint
    (defaults: SigLIP-B/16's, as transformers' SiglipVisionConfig; the hub configs leave out
    the fields that equal these)."""

    MODEL_TYPE = MODEL_TYPE
    HF_FIELDS = (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps",
        "vision_use_head",
    )  # fmt: skip

    intermediate_size: int = 3072
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    vision_use_head: bool = True  # the attention-pooling head that gives pooler_output

    def default_preprocess(self) -> PreprocessConfig:
        return siglip_preprocess(self.image_size)

    @property
    def prefix_tokens(self) -> int:
        """None: SigLIP has no class token."""
        return 0

    @classmethod
    def read_hf(cls, config: dict, weight_names: Collection[str]) -> tuple[dict, dict]:
        """``SiglipConfig``'s ``vision_config`` or a ``SiglipVisionConfig``."""
        return vision_section(config, "siglip", MODEL_TYPE, "SigLIP"), {}
