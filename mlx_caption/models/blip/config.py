"""BLIP captioning configuration (``BlipForConditionalGeneration``), with Hugging Face's
``BlipVisionConfig`` and ``BlipTextConfig`` field names and defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from mlx_caption.data.preprocess import PreprocessConfig, preprocess_config_from_hf
from mlx_caption.models.base import EncoderConfig, PretrainedCaptionerConfig

MODEL_TYPE = "blip"


def blip_preprocess(image_size: int) -> PreprocessConfig:
    """BLIP's processor: the whole image squashed to ``image_size`` (bicubic), CLIP mean/std."""
    return PreprocessConfig(
        resize_shortest_edge=image_size,
        crop_size=image_size,
        do_center_crop=False,
        resize_mode="exact",
    )


def _fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class BlipVisionConfig(EncoderConfig):
    """BLIP's ViT (defaults: transformers' ``BlipVisionConfig``, blip-image-captioning-base's;
    the preprocessing defaults to BLIP's processor)."""

    MODEL_TYPE = "blip_vision_model"

    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    image_size: int = 384

    def default_preprocess(self) -> PreprocessConfig:
        return blip_preprocess(self.image_size)


@dataclass
class BlipTextConfig:
    """BLIP's BERT decoder (defaults: transformers' ``BlipTextConfig``) and its special ids."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    encoder_hidden_size: int = 768  # the vision width cross-attention reads
    hidden_dropout_prob: float = 0.0
    # Tokens and positions.
    vocab_size: int = 30524
    max_position_embeddings: int = 512
    bos_token_id: int = 30522  # [DEC]: replaces [CLS] as the first token of every caption
    sep_token_id: int = 102  # [SEP]: ends a caption (transformers passes it as eos_token_id)
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlipTextConfig:
        return cls(**_fields(cls, data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BlipConfig(PretrainedCaptionerConfig):
    """A BLIP captioner: vision tower, text decoder, preprocessing and generation defaults."""

    MODEL_TYPE = MODEL_TYPE
    ARCHITECTURE = "BlipForConditionalGeneration"
    VISION = BlipVisionConfig
    TEXT = BlipTextConfig
    # transformers' BLIP generates through its text decoder's own generation config, built
    # from text_config, whose generation fields transformers 5 drops: generation_config.json
    # and the lengths in config.json never reach it, so every caption gets the defaults.
    READS_GENERATION_SETTINGS = False

    vision: BlipVisionConfig = field(default_factory=BlipVisionConfig)
    text: BlipTextConfig = field(default_factory=BlipTextConfig)

    @classmethod
    def read_hf(
        cls, config: dict, preprocessor: dict, generation: dict, weight_names: Collection[str]
    ) -> tuple[BlipVisionConfig, BlipTextConfig]:
        """``BlipConfig``'s ``vision_config`` and ``text_config``, BLIP's processor."""
        vision = BlipVisionConfig.from_dict(config.get("vision_config") or {})
        text = BlipTextConfig.from_dict(config.get("text_config") or {})
        # BlipConfig.__post_init__ does the same: the decoder reads the vision width.
        text.encoder_hidden_size = vision.hidden_size
        if not config.get("tie_word_embeddings", True):
            raise ValueError("BLIP with untied output embeddings is not supported")
        vision.preprocess = preprocess_config_from_hf(
            preprocessor, blip_preprocess(vision.image_size)
        )
        return vision, text
