"""The transformers side of the GIT family: parity tests, ``convert --verify`` and ``bench``.

Imports torch and transformers (the ``torch`` extra); nothing in the MLX path imports this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import torch
import transformers

from mlx_caption.models.base import hf_state
from mlx_caption.models.git.config import GitConfig
from mlx_caption.models.git.model import PATCH_KEY, _hf_key_to_ours
from mlx_caption.models.reference import (
    generated_ids,
    load_hf_model,
    max_abs_diff,
    pixel_values,
    random_hf_model,
    random_inputs,
)

__all__ = ["compare", "generate", "hf_config", "load_model", "logits", "pixel_values"]


def hf_config(cfg: GitConfig) -> transformers.GitConfig:
    """The ``transformers.GitConfig`` of a :class:`GitConfig` (same field names)."""
    vision = {k: getattr(cfg.vision, k) for k in cfg.vision.HF_FIELDS}
    return transformers.GitConfig(vision_config=vision, **cfg.text.to_dict())


def random_model(cfg: GitConfig, seed: int = 0) -> Any:
    """A randomly initialised ``GitForCausalLM`` of this shape, in eval mode."""
    return random_hf_model(transformers.GitForCausalLM, hf_config(cfg), seed)


def load_model(folder: str | Path, cfg: GitConfig | None = None) -> Any:
    """The source checkpoint as transformers loads it, in eval mode, float32."""
    return load_hf_model(transformers.GitForCausalLM, folder)


def to_hf_state(weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of ``GitForCausalLM.sanitize`` for a transformers state dict's keys."""
    return hf_state(weights, hf_keys, _hf_key_to_ours, PATCH_KEY)


def logits(model: Any, pixels: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
    """transformers' teacher-forced logits ``(B, L, vocab)`` of the text ``input_ids``
    (B, L); the image tokens' positions are left out."""
    with torch.inference_mode():
        out = model(pixel_values=pixel_values(pixels), input_ids=torch.from_numpy(input_ids))
    return out.logits[:, -input_ids.shape[1] :].numpy()


def generate(
    model: Any, pixels: np.ndarray, prefix: list[int], return_scores: bool = False, **options: Any
) -> list[list[int]] | tuple[list[list[int]], list[float]]:
    """transformers' ``generate`` from ``prefix`` ([CLS] and a prompt's ids): the generated
    ids of each returned sequence, prompt excluded, up to and with the end token; with
    ``return_scores`` also transformers' sequence scores (None but for beams).

    ``options`` are ``GenerationConfig`` fields (``num_beams``, ``max_new_tokens``, ...).
    """
    end = model.config.eos_token_id
    return generated_ids(model, pixels, prefix, len(prefix), end, return_scores, **options)


def compare(mlx_model: Any, hf_model: Any, seed: int = 0) -> dict[str, float]:
    """Largest absolute differences of the image encoder's grid and the logits on a random
    input."""
    cfg = mlx_model.config
    pixels, ids = random_inputs(
        cfg.vision.image_size, cfg.text.bos_token_id, cfg.text.vocab_size, seed
    )
    with torch.inference_mode():
        ref_grid = hf_model.git.image_encoder(pixel_values=pixel_values(pixels)).last_hidden_state
    dtype = mlx_model.output.weight.dtype
    grid = mlx_model.encode_features(mx.array(pixels).astype(dtype))
    out = mlx_model(mlx_model.project(grid), mx.array(ids))
    return {
        "image_tokens": max_abs_diff(grid, ref_grid.numpy()),
        "logits": max_abs_diff(out, logits(hf_model, pixels, ids)),
    }
