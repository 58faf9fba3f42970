"""The transformers side of the DINOv2 family: parity tests, ``convert --verify``, the PT bridge.

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
from mlx_caption.models.dinov2.config import Dinov2Config
from mlx_caption.models.dinov2.vision import PATCH_KEY, hf_key_to_ours

# The torch forward and the comparison are every family's.
last_hidden_state = reference.last_hidden_state
compare = reference.compare


def hf_config(cfg: Dinov2Config) -> Any:
    """The transformers config of a :class:`Dinov2Config` (same names)."""
    args = dict(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        mlp_ratio=cfg.mlp_ratio,
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
        qkv_bias=cfg.qkv_bias,
        layerscale_value=cfg.layerscale_value,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        num_channels=cfg.num_channels,
    )
    if cfg.with_registers:
        return transformers.Dinov2WithRegistersConfig(
            **args, num_register_tokens=cfg.num_register_tokens
        )
    return transformers.Dinov2Config(**args)


def _model_class(cfg: Dinov2Config) -> type:
    if cfg.with_registers:
        return transformers.Dinov2WithRegistersModel
    return transformers.Dinov2Model


def random_model(cfg: Dinov2Config, seed: int = 0) -> Any:
    """A randomly initialised transformers model of this shape, in eval mode."""
    return reference.random_model(_model_class(cfg), hf_config(cfg), seed)


def load_model(folder: str | Path, cfg: Dinov2Config) -> Any:
    """The source checkpoint as transformers loads it, eval mode, float32."""
    return _model_class(cfg).from_pretrained(str(folder), torch_dtype=torch.float32).eval()


def to_hf_state(weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of ``Dinov2Model.sanitize`` for the keys of a transformers state dict (the
    unused mask token is left out: the torch model keeps its own)."""
    return hf_state(weights, hf_keys, hf_key_to_ours, PATCH_KEY)
