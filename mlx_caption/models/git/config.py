"""GIT captioning configuration (``GitForCausalLM``), with Hugging Face's ``GitConfig`` and
``GitVisionConfig`` field names and defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from mlx_caption.models.base import PretrainedCaptionerConfig, vision_section
from mlx_caption.models.clip.config import CLIPVisionConfig

MODEL_TYPE = "git"


@dataclass
class GitVisionConfig(CLIPVisionConfig):
    """GIT's image encoder: CLIP's ViT (defaults: transformers' ``GitVisionConfig``, a
    ViT-B/16 at 224 px; the preprocessing defaults to CLIP's processor)."""

    MODEL_TYPE = "git_vision_model"

    patch_size: int = 16

    @classmethod
    def read_hf(cls, config: dict, weight_names: Collection[str]) -> tuple[dict, dict]:
        """``GitConfig``'s ``vision_config`` (GIT's tower has no projection head of CLIP's)."""
        return vision_section(config, MODEL_TYPE, cls.MODEL_TYPE, "GIT"), {"projection_dim": None}


@dataclass
class GitTextConfig:
    """GIT's BERT decoder (``GitConfig``'s top-level fields and defaults) and its special ids."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    vocab_size: int = 30522
    max_position_embeddings: int = 1024  # text positions: the image tokens have none
    bos_token_id: int = 101  # [CLS]: the first token of every caption
    eos_token_id: int = 102  # [SEP]: ends a caption
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GitTextConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GitConfig(PretrainedCaptionerConfig):
    """A GIT captioner: image encoder, text decoder, preprocessing and generation defaults."""

    MODEL_TYPE = MODEL_TYPE
    ARCHITECTURE = "GitForCausalLM"
    VISION = GitVisionConfig
    TEXT = GitTextConfig

    vision: GitVisionConfig = field(default_factory=GitVisionConfig)
    text: GitTextConfig = field(default_factory=GitTextConfig)

    @classmethod
    def read_hf(
        cls, config: dict, preprocessor: dict, generation: dict, weight_names: Collection[str]
    ) -> tuple[GitVisionConfig, GitTextConfig]:
        """``GitConfig``'s ``vision_config`` and its top-level text fields (the special ids
        from ``generation_config.json`` where it has them). Video checkpoints
        (``num_image_with_embedding``) and tied output embeddings are refused."""
        if config.get("num_image_with_embedding") is not None:
            raise ValueError("GIT video checkpoints (num_image_with_embedding) are not supported")
        if config.get("tie_word_embeddings", False):
            raise ValueError("GIT with tied output embeddings is not supported")
        vision = GitVisionConfig.from_hf(config, preprocessor, weight_names)
        text = GitTextConfig.from_dict(config)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = generation.get(name, getattr(text, name))
            if isinstance(value, list):
                if len(value) != 1:
                    raise ValueError(f"GIT with several {name}s {value} is not supported")
                value = value[0]
            setattr(text, name, int(value))
        return vision, text
