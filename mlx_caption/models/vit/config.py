"""ViT configuration, with Hugging Face ``ViTConfig`` field names.

Also reads the ``encoder`` section of a ``VisionEncoderDecoderModel`` config (ViT-GPT2), so a
captioner family can build its ViT encoder from that checkpoint's ``config.json``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mlx_caption.data.preprocess import (
    PreprocessConfig,
    preprocess_config_from_hf,
    squash_preprocess,
)
from mlx_caption.models.base import EncoderConfig, hf_fields

MODEL_TYPE = "vit"
ENCODER_DECODER = "vision-encoder-decoder"


def vit_preprocess(image_size: int) -> PreprocessConfig:
    """ViT's processor: the whole image squashed to ``image_size`` square with bilinear
    resampling (no crop), mean and std 0.5."""
    return squash_preprocess(image_size, "bilinear")


@dataclass
class ViTConfig(EncoderConfig):
    """A ViT (Dosovitskiy et al.) and the preprocessing that belongs to its checkpoint."""

    MODEL_TYPE = MODEL_TYPE

    # The transformer (defaults: ViT-B/16's, as transformers' ViTConfig).
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    # The image and its patches.
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    # The pooler (dense + tanh on the class token), when the checkpoint has one.
    add_pooling_layer: bool = True
    pooler_output_size: int | None = None  # None: hidden_size
    pooler_act: str = "tanh"
    preprocess: PreprocessConfig | None = None  # None: ViT's processor at image_size

    def default_preprocess(self) -> PreprocessConfig:
        return vit_preprocess(self.image_size)

    @classmethod
    def from_hf(
        cls,
        config: dict,
        preprocessor: dict | None = None,
        weight_names: Collection[str] = (),
    ) -> ViTConfig:
        """From a Hugging Face ``config.json`` (``ViTConfig``, or a ``VisionEncoderDecoder``
        one with a ViT encoder) and its ``preprocessor_config.json`` dict, if any.

        ``add_pooling_layer`` follows the (sanitized) ``weight_names``: the pooler is kept when
        the checkpoint has ``pooler.dense.weight``.
        """
        if config.get("model_type") == ENCODER_DECODER:
            config = config.get("encoder") or {}
        if config.get("model_type") != MODEL_TYPE:
            raise ValueError(
                f"not a ViT checkpoint: config.json has model_type={config.get('model_type')!r} "
                f"(expected {MODEL_TYPE!r})"
            )
        if config.get("pooler_act", "tanh") != "tanh":
            raise ValueError(f"unsupported pooler_act {config['pooler_act']!r} (only 'tanh')")
        names = [
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps",
            "qkv_bias", "pooler_output_size",
        ]  # fmt: skip
        pooler = "pooler.dense.weight" in weight_names
        cfg = cls(**hf_fields(cls, config, names), add_pooling_layer=pooler)
        cfg.preprocess = preprocess_config_from_hf(preprocessor or {}, cfg.preprocess)
        return cfg
