"""The transformers side of the DINOv2 family: ``Dinov2Model``, or
``Dinov2WithRegistersModel`` for the registers variant (the unused mask token stays the torch
model's own). Imports torch and transformers (the ``torch`` extra)."""

from __future__ import annotations

import transformers

from mlx_caption.models.dinov2.vision import PATCH_KEY, hf_key_to_ours
from mlx_caption.models.reference import TorchSide

SIDE = TorchSide(
    config_class=lambda cfg: (
        transformers.Dinov2WithRegistersConfig if cfg.with_registers else transformers.Dinov2Config
    ),
    model_class=lambda cfg: (
        transformers.Dinov2WithRegistersModel if cfg.with_registers else transformers.Dinov2Model
    ),
    key_map=hf_key_to_ours,
    patch_key=PATCH_KEY,
    config_extra=lambda cfg: (
        {"num_register_tokens": cfg.num_register_tokens} if cfg.with_registers else {}
    ),
)
hf_config, random_model, load_model, to_hf_state, last_hidden_state, compare = SIDE.functions()
