"""The transformers side of the ViT family: ``ViTModel``, with its pooler when the MLX config
has one. Imports torch and transformers (the ``torch`` extra)."""

from __future__ import annotations

import transformers

from mlx_caption.models.reference import TorchSide
from mlx_caption.models.vit.vision import PATCH_KEY, hf_key_to_ours

SIDE = TorchSide(
    config_class=lambda cfg: transformers.ViTConfig,
    model_class=lambda cfg: transformers.ViTModel,
    key_map=hf_key_to_ours,
    patch_key=PATCH_KEY,
    model_kwargs=lambda cfg: {"add_pooling_layer": cfg.add_pooling_layer},
)
hf_config, random_model, load_model, to_hf_state, last_hidden_state, compare = SIDE.functions()
