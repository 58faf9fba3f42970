"""GIT captioning configuration (``GitForCausalLM``), with Hugging Face's ``GitConfig`` and
``GitVisionConfig`` field names and defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from mlx_caption.models.base import generation_defaults, vision_section
from mlx_caption.models.clip.config import CLIPVisionConfig

MODEL_TYPE = "git"
ARCHITECTURE = "GitForCausalLM"
# transformers' GenerationConfig default (max_length=20) counts the [CLS] start token; ours
# counts generated tokens only, so a caption gets the same 19 by default.
DEFAULT_MAX_NEW_TOKENS = 19


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
class GitConfig:
    """A GIT captioner: image encoder, text decoder, preprocessing and generation defaults."""

    vision: GitVisionConfig = field(default_factory=GitVisionConfig)
    text: GitTextConfig = field(default_factory=GitTextConfig)
    # generate()'s defaults: transformers' (or the checkpoint's generation_config.json).
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    early_stopping: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GitConfig:
        """From :meth:`to_dict`'s output (a converted folder's ``config.json``)."""
        return cls(
            vision=GitVisionConfig.from_dict(data.get("vision", {})),
            text=GitTextConfig.from_dict(data.get("text", {})),
            max_new_tokens=int(data.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
            early_stopping=bool(data.get("early_stopping", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": MODEL_TYPE,
            "architecture": ARCHITECTURE,
            "vision": self.vision.to_dict(),
            "text": self.text.to_dict(),
            "max_new_tokens": self.max_new_tokens,
            "early_stopping": self.early_stopping,
        }

    @classmethod
    def from_hf(
        cls,
        config: dict,
        preprocessor: dict | None = None,
        generation: dict | None = None,
        weight_names: Collection[str] = (),
    ) -> GitConfig:
        """From a Hugging Face ``config.json`` (``GitConfig``), ``preprocessor_config.json``
        and ``generation_config.json`` dicts; what they leave out takes transformers' defaults.

        Only the captioning architecture on single images is read: ``GitModel`` (no LM head),
        video checkpoints (``num_image_with_embedding``) and tied output embeddings are
        refused.
        """
        if config.get("model_type") != MODEL_TYPE:
            raise ValueError(f"not a GIT checkpoint: model_type={config.get('model_type')!r}")
        architectures = config.get("architectures") or [ARCHITECTURE]
        if ARCHITECTURE not in architectures:
            raise ValueError(
                f"GIT checkpoint of architecture {architectures}: only {ARCHITECTURE} "
                "(image captioning) is supported"
            )
        if config.get("num_image_with_embedding") is not None:
            raise ValueError("GIT video checkpoints (num_image_with_embedding) are not supported")
        if config.get("tie_word_embeddings", False):
            raise ValueError("GIT with tied output embeddings is not supported")
        vision = GitVisionConfig.from_hf(config, preprocessor, weight_names)
        generation = generation or {}
        text = GitTextConfig.from_dict(config)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = generation.get(name, getattr(text, name))
            if isinstance(value, list):
                if len(value) != 1:
                    raise ValueError(f"GIT with several {name}s {value} is not supported")
                value = value[0]
            setattr(text, name, int(value))
        max_new, early = generation_defaults(generation, DEFAULT_MAX_NEW_TOKENS)
        return cls(vision=vision, text=text, max_new_tokens=max_new, early_stopping=early)
