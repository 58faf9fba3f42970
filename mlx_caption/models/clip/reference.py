"""The transformers side of the CLIP family: parity tests, ``convert --verify``, the PT bridge.

Imports torch and transformers (the ``torch`` extra); nothing in the MLX path imports this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from mlx_caption.models import reference
from mlx_caption.models.base import hf_state
from mlx_caption.models.clip.config import CLIPVisionConfig
from mlx_caption.models.clip.vision import PATCH_KEY, hf_key_to_ours

# The torch forward and the comparison are every family's.
last_hidden_state = reference.last_hidden_state
compare = reference.compare


def hf_config(cfg: CLIPVisionConfig) -> transformers.CLIPVisionConfig:
    """The ``transformers.CLIPVisionConfig`` of a :class:`CLIPVisionConfig` (same names)."""
    return transformers.CLIPVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_channels=cfg.num_channels,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
        projection_dim=cfg.projection_dim or 512,
    )


def _model_class(cfg: CLIPVisionConfig) -> type:
    if cfg.projection_dim:
        return transformers.CLIPVisionModelWithProjection
    return transformers.CLIPVisionModel


def random_model(cfg: CLIPVisionConfig, seed: int = 0) -> Any:
    """A randomly initialised transformers model of this shape, in eval mode."""
    return reference.random_model(_model_class(cfg), hf_config(cfg), seed)


def load_model(folder: str | Path, cfg: CLIPVisionConfig) -> Any:
    """The source checkpoint as transformers loads it (vision tower, with the projection when
    ``cfg`` has one), in eval mode, float32."""
    return _model_class(cfg).from_pretrained(str(folder), torch_dtype=torch.float32).eval()


def to_hf_state(weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of ``CLIPVisionModel.sanitize`` for the keys of a transformers state dict.

    ``hf_keys`` are the torch model's own names (with or without ``vision_model.``, which
    differs between transformers versions).
    """
    return hf_state(weights, hf_keys, hf_key_to_ours, PATCH_KEY)
