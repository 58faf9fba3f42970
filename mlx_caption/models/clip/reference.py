"""The transformers side of the CLIP family: parity tests, ``convert --verify``, the PT bridge.

Imports torch and transformers (the ``torch`` extra); nothing in the MLX path imports this.
"""

from __future__ import annotations

import transformers

from mlx_caption.models.clip.vision import PATCH_KEY, hf_key_to_ours
from mlx_caption.models.reference import TorchSide

SIDE = TorchSide(
    config_class=lambda cfg: transformers.CLIPVisionConfig,
    model_class=lambda cfg: (
        transformers.CLIPVisionModelWithProjection
        if cfg.projection_dim
        else transformers.CLIPVisionModel
    ),
    key_map=hf_key_to_ours,
    patch_key=PATCH_KEY,
    config_extra=lambda cfg: {"projection_dim": cfg.projection_dim or 512},
)
hf_config, random_model, load_model, to_hf_state, last_hidden_state, compare = SIDE.functions()
