"""The transformers side of the SigLIP family: parity tests, ``convert --verify``, the PT bridge.

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
from mlx_caption.models.siglip.config import SiglipVisionConfig
from mlx_caption.models.siglip.vision import PATCH_KEY, hf_key_to_ours

# The torch forward and the comparison are every family's.
last_hidden_state = reference.last_hidden_state
compare = reference.compare


def hf_config(cfg: SiglipVisionConfig) -> transformers.SiglipVisionConfig:
    """The ``transformers.SiglipVisionConfig`` of a :class:`SiglipVisionConfig` (same names)."""
    return transformers.SiglipVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_channels=cfg.num_channels,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
        vision_use_head=cfg.vision_use_head,
    )


def random_model(cfg: SiglipVisionConfig, seed: int = 0) -> Any:
    """A randomly initialised ``SiglipVisionModel`` of this shape, in eval mode."""
    return reference.random_model(transformers.SiglipVisionModel, hf_config(cfg), seed)


def load_model(folder: str | Path, cfg: SiglipVisionConfig) -> Any:
    """The source checkpoint's vision tower as transformers loads it, eval mode, float32."""
    return transformers.SiglipVisionModel.from_pretrained(
        str(folder), torch_dtype=torch.float32
    ).eval()


def to_hf_state(weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of ``SiglipVisionModel.sanitize`` for the keys of a transformers state dict."""
    return hf_state(weights, hf_keys, hf_key_to_ours, PATCH_KEY)
