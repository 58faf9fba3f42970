"""ViT configuration, with Hugging Face ``ViTConfig`` field names.

Also reads the ``encoder`` section of a ``VisionEncoderDecoderModel`` config (ViT-GPT2), so a
captioner family can build its ViT encoder from that checkpoint's ``config.json``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mlx_caption.data.preprocess import PreprocessConfig, squash_preprocess
from mlx_caption.models.base import EncoderConfig

MODEL_TYPE = "vit"
ENCODER_DECODER = "vision-encoder-decoder"


def vit_preprocess(image_size: int) -> PreprocessConfig:
    """ViT's processor: the whole image squashed to ``image_size`` square with bilinear
    resampling (no crop), mean and std 0.5."""
    return squash_preprocess(image_size, "bilinear")


@dataclass
class ViTConfig(EncoderConfig):
    """A ViT (Dosovitskiy et al.) and the preprocessing that belongs to its checkpoint
    (defaults: ViT-B/16's, as transformers' ViTConfig)."""

    MODEL_TYPE = MODEL_TYPE
    HF_FIELDS = (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps",
        "qkv_bias", "pooler_output_size", "pooler_act",
    )  # fmt: skip

    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    # The pooler (dense + tanh on the class token), when the checkpoint has one.
    add_pooling_layer: bool = True
    pooler_output_size: int | None = None  # None: hidden_size
    pooler_act: str = "tanh"

    def default_preprocess(self) -> PreprocessConfig:
        return vit_preprocess(self.image_size)

    @classmethod
    def read_hf(cls, config: dict, weight_names: Collection[str]) -> tuple[dict, dict]:
        """A ``ViTConfig``, or the ``encoder`` of a ``VisionEncoderDecoder`` one; the pooler is
        kept when the (sanitized) ``weight_names`` hold ``pooler.dense.weight``."""
        if config.get("model_type") == ENCODER_DECODER:
            config = config.get("encoder") or {}
        if config.get("model_type") != MODEL_TYPE:
            raise ValueError(
                f"not a ViT checkpoint: config.json has model_type={config.get('model_type')!r} "
                f"(expected {MODEL_TYPE!r})"
            )
        if config.get("pooler_act", "tanh") != "tanh":
            raise ValueError(f"unsupported pooler_act {config['pooler_act']!r} (only 'tanh')")
        return config, {"add_pooling_layer": "pooler.dense.weight" in weight_names}
