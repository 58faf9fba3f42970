"""The transformers side of the ViT family: parity tests, ``convert --verify``, the PT bridge.

Imports torch and transformers (the ``torch`` extra); nothing in the MLX path imports this.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from mlx_caption.models import reference
from mlx_caption.models.base import hf_state
from mlx_caption.models.vit.config import ViTConfig
from mlx_caption.models.vit.vision import PATCH_KEY, hf_key_to_ours

# The torch forward and the comparison are every family's.
last_hidden_state = reference.last_hidden_state
compare = reference.compare


def hf_config(cfg: ViTConfig) -> transformers.ViTConfig:
    """The ``transformers.ViTConfig`` of a :class:`ViTConfig` (same names)."""
    return transformers.ViTConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_channels=cfg.num_channels,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
        qkv_bias=cfg.qkv_bias,
        pooler_output_size=cfg.pooler_output_size,
        pooler_act=cfg.pooler_act,
    )


def random_model(cfg: ViTConfig, seed: int = 0) -> Any:
    """A randomly initialised ``ViTModel`` of this shape (with its pooler if ``cfg`` has one)."""
    model_class = functools.partial(transformers.ViTModel, add_pooling_layer=cfg.add_pooling_layer)
    return reference.random_model(model_class, hf_config(cfg), seed)


def load_model(folder: str | Path, cfg: ViTConfig) -> Any:
    """The source checkpoint as transformers loads it, eval mode, float32."""
    return transformers.ViTModel.from_pretrained(
        str(folder), add_pooling_layer=cfg.add_pooling_layer, torch_dtype=torch.float32
    ).eval()


def to_hf_state(weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of ``ViTModel.sanitize`` for the keys of a transformers state dict (in the
    names of whichever transformers version built it)."""
    return hf_state(weights, hf_keys, hf_key_to_ours, PATCH_KEY)
