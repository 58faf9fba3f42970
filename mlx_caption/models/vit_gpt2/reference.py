"""The transformers side of the ViT-GPT2 family: parity tests, ``convert --verify`` and
``bench``.

Imports torch and transformers (the ``torch`` extra); nothing in the MLX path imports this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import torch
import transformers

from mlx_caption.models.reference import generated_ids, max_abs_diff, pixel_values, random_inputs
from mlx_caption.models.vit import reference as vit_reference
from mlx_caption.models.vit_gpt2.config import VitGpt2Config
from mlx_caption.models.vit_gpt2.model import CONV1D, VisionEncoderDecoderModel


def hf_config(cfg: VitGpt2Config) -> transformers.VisionEncoderDecoderConfig:
    """The ``transformers.VisionEncoderDecoderConfig`` of a :class:`VitGpt2Config`, with its
    special ids and generation defaults on the outer config (as nlpconnect's has them)."""
    text = cfg.text
    decoder = transformers.GPT2Config(
        **{name: getattr(text, name) for name in text.HF_FIELDS},
        bos_token_id=text.eos_token_id, eos_token_id=text.eos_token_id,
        add_cross_attention=True, is_decoder=True,
    )  # fmt: skip
    both = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        vit_reference.hf_config(cfg.vision), decoder
    )
    both.decoder_start_token_id = text.decoder_start_token_id
    both.eos_token_id = text.eos_token_id
    both.pad_token_id = text.pad_token_id
    return both


def random_model(cfg: VitGpt2Config, seed: int = 0) -> Any:
    """A randomly initialised ``VisionEncoderDecoderModel`` of this shape, in eval mode."""
    torch.manual_seed(seed)
    return transformers.VisionEncoderDecoderModel(hf_config(cfg)).eval()


def load_model(folder: str | Path, cfg: VitGpt2Config | None = None) -> Any:
    """The source checkpoint as transformers loads it, in eval mode, float32."""
    model_class = transformers.VisionEncoderDecoderModel
    return model_class.from_pretrained(str(folder), dtype=torch.float32).eval()


def to_hf_state(weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of ``VisionEncoderDecoderModel.sanitize`` for a transformers state dict's keys
    (the LM head from the word embeddings, Conv1D weights back to (in, out))."""
    encoder_keys = [k.removeprefix("encoder.") for k in hf_keys if k.startswith("encoder.")]
    vit = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
    out = {f"encoder.{k}": v for k, v in vit_reference.to_hf_state(vit, encoder_keys).items()}
    for key in hf_keys:
        if key.startswith("encoder."):
            continue
        source = "decoder.transformer.wte.weight" if key == "decoder.lm_head.weight" else key
        if source not in weights:
            continue  # a buffer
        value = np.asarray(weights[source])
        out[key] = np.ascontiguousarray(value.T if CONV1D.match(key) else value)
    return out


def logits(model: Any, pixels: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
    """transformers' teacher-forced logits ``(B, L, vocab)`` for ``decoder_input_ids``."""
    with torch.inference_mode():
        out = model(
            pixel_values=pixel_values(pixels), decoder_input_ids=torch.from_numpy(input_ids)
        )
    return out.logits.numpy()


def generate(
    model: Any, pixels: np.ndarray, prefix: list[int], return_scores: bool = False, **options: Any
) -> list[list[int]] | tuple[list[list[int]], list[float]]:
    """transformers' ``generate`` from ``prefix`` (the decoder start token and a prompt's ids,
    as ``decoder_input_ids``): the generated ids of each returned sequence, prompt excluded, up
    to and with the end token; with ``return_scores`` also transformers' sequence scores (None
    but for beams). ``options`` are ``GenerationConfig`` fields (``num_beams``, ...)."""
    end = model.generation_config.eos_token_id
    return generated_ids(
        model, pixels, prefix, len(prefix), end, return_scores, "decoder_input_ids", **options
    )


def compare(mlx_model: VisionEncoderDecoderModel, hf_model: Any, seed: int = 0) -> dict:
    """Largest absolute differences of the encoder's grid and the logits on a random input."""
    cfg = mlx_model.config
    start = cfg.text.decoder_start_token_id
    pixels, ids = random_inputs(cfg.vision.input_size, start, cfg.text.vocab_size, seed)
    with torch.inference_mode():
        ref = hf_model(pixel_values=pixel_values(pixels), decoder_input_ids=torch.from_numpy(ids))
    dtype = mlx_model.encoder.layernorm.weight.dtype
    grid = mlx_model.encode_features(mx.array(pixels).astype(dtype))
    out = mlx_model(mlx_model.project(grid), mx.array(ids))
    return {
        "image_tokens": max_abs_diff(grid, ref.encoder_last_hidden_state.numpy()),
        "logits": max_abs_diff(out, ref.logits.numpy()),
    }
