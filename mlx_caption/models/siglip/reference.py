"""The transformers side of the SigLIP family (``SiglipVisionModel``, also the vision tower of
a ``SiglipModel`` checkpoint). Imports torch and transformers (the ``torch`` extra)."""

from __future__ import annotations

import transformers

from mlx_caption.models.reference import TorchSide
from mlx_caption.models.siglip.vision import PATCH_KEY, hf_key_to_ours

SIDE = TorchSide(
    config_class=lambda cfg: transformers.SiglipVisionConfig,
    model_class=lambda cfg: transformers.SiglipVisionModel,
    key_map=hf_key_to_ours,
    patch_key=PATCH_KEY,
)
hf_config, random_model, load_model, to_hf_state, last_hidden_state, compare = SIDE.functions()
