"""The transformers side of the BLIP family: parity tests, ``convert --verify`` and ``bench``.

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
from mlx_caption.models.blip.config import BlipConfig
from mlx_caption.models.blip.model import PATCH_KEY
from mlx_caption.models.reference import (
    generated_ids,
    load_hf_model,
    max_abs_diff,
    pixel_values,
    random_hf_model,
    random_inputs,
)


def hf_config(cfg: BlipConfig) -> transformers.BlipConfig:
    """The ``transformers.BlipConfig`` of a :class:`BlipConfig` (same field names).

    The vision tower is initialised with std 0.02: transformers' own 1e-10 suits only a
    model that pretrained weights will overwrite (random models here are run as they are).
    """
    vision = {k: v for k, v in cfg.vision.to_dict().items() if k != "preprocess"}
    vision["initializer_range"] = 0.02
    return transformers.BlipConfig(text_config=cfg.text.to_dict(), vision_config=vision)


def random_model(cfg: BlipConfig, seed: int = 0) -> Any:
    """A randomly initialised ``BlipForConditionalGeneration`` of this shape, in eval mode."""
    return random_hf_model(transformers.BlipForConditionalGeneration, hf_config(cfg), seed)


def load_model(folder: str | Path, cfg: BlipConfig | None = None) -> Any:
    """The source checkpoint as transformers loads it, in eval mode, float32."""
    return load_hf_model(transformers.BlipForConditionalGeneration, folder)


# The LM head's copies of tied tensors, in a transformers state dict.
_TIED = {
    "text_decoder.cls.predictions.decoder.weight": (
        "text_decoder.bert.embeddings.word_embeddings.weight"
    ),
    "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias",
}


def to_hf_state(weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of ``BlipForConditionalGeneration.sanitize`` for a transformers state dict's
    keys (the LM head's tied copies come from the word embeddings and the head's bias)."""

    def key_map(key: str) -> str | None:
        return None if key.endswith("position_ids") else _TIED.get(key, key)

    return hf_state(weights, hf_keys, key_map, PATCH_KEY)


def logits(model: Any, pixels: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
    """transformers' teacher-forced logits ``(B, L, vocab)`` for ``input_ids`` (B, L)."""
    with torch.inference_mode():
        out = model(pixel_values=pixel_values(pixels), input_ids=torch.from_numpy(input_ids))
    return out.logits.numpy()


def generate(
    model: Any, pixels: np.ndarray, prefix: list[int], return_scores: bool = False, **options: Any
) -> list[list[int]] | tuple[list[list[int]], list[float]]:
    """transformers' ``generate`` from ``prefix`` (BLIP's start token and a prompt's ids):
    the generated ids of each returned sequence, prompt excluded, up to and with the end
    token; with ``return_scores`` also transformers' sequence scores (None but for beams).

    ``options`` are ``GenerationConfig`` fields (``num_beams``, ``max_new_tokens``, ...).
    BLIP's ``generate`` drops the last given id (the tokenizer's [SEP]), so one is appended.
    """
    end = model.config.text_config.sep_token_id
    return generated_ids(model, pixels, [*prefix, 0], len(prefix), end, return_scores, **options)


def compare(mlx_model: Any, hf_model: Any, seed: int = 0) -> dict[str, float]:
    """Largest absolute differences of the image tokens and the logits on a random input."""
    cfg = mlx_model.config
    pixels, ids = random_inputs(
        cfg.vision.image_size, cfg.text.bos_token_id, cfg.text.vocab_size, seed
    )
    with torch.inference_mode():
        ref = hf_model(pixel_values=pixel_values(pixels), input_ids=torch.from_numpy(ids))
    dtype = mlx_model.vision_model.post_layernorm.weight.dtype
    tokens = mlx_model.encode(mx.array(pixels).astype(dtype))
    out = mlx_model(tokens, mx.array(ids))
    return {
        "image_tokens": max_abs_diff(tokens, ref.last_hidden_state.numpy()),
        "logits": max_abs_diff(out, ref.logits.numpy()),
    }
