"""The transformers side of the CLIP family: parity tests, ``convert --verify``, the PT bridge.

Imports torch and transformers (the ``torch`` extra); nothing in the MLX path imports this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import torch
import transformers

from mlx_caption.models.clip.config import CLIPVisionConfig
from mlx_caption.models.clip.vision import PATCH_KEY


def hf_config(cfg: CLIPVisionConfig) -> transformers.CLIPVisionConfig:
    """The ``transformers.CLIPVisionConfig`` of a :class:`CLIPVisionConfig` (same names)."""
    return transformers.CLIPVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_channels=cfg.num_channels,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
        projection_dim=cfg.projection_dim or 512,
    )


def _model_class(cfg: CLIPVisionConfig) -> type:
    if cfg.projection_dim:
        return transformers.CLIPVisionModelWithProjection
    return transformers.CLIPVisionModel


def random_model(cfg: CLIPVisionConfig, seed: int = 0) -> Any:
    """A randomly initialised transformers model of this shape, in eval mode."""
    torch.manual_seed(seed)
    return _model_class(cfg)(hf_config(cfg)).eval()


def load_model(folder: str | Path, cfg: CLIPVisionConfig) -> Any:
    """The source checkpoint as transformers loads it (vision tower, with the projection when
    ``cfg`` has one), in eval mode, float32."""
    return _model_class(cfg).from_pretrained(str(folder), torch_dtype=torch.float32).eval()


def to_hf_state(weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of ``CLIPVisionModel.sanitize`` for the keys of a transformers state dict.

    ``hf_keys`` are the torch model's own names (with or without ``vision_model.``, which
    differs between transformers versions); each is looked up without the prefix.
    """
    out = {}
    for hf_key in hf_keys:
        key = hf_key.removeprefix("vision_model.")
        if key.endswith("position_ids"):
            continue
        if key not in weights:
            raise ValueError(f"the MLX encoder has no weight for {hf_key!r}")
        value = weights[key]
        if key == PATCH_KEY:
            value = value.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        out[hf_key] = np.ascontiguousarray(value)
    return out


def last_hidden_state(model: Any, pixels: np.ndarray) -> Any:
    """The torch model's token grid for NHWC pixels (an NCHW view of the buffer, moved to the
    model's device and dtype)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(0, 3, 1, 2)
    x = x.to(model.device, model.dtype)
    with torch.inference_mode():
        return model(pixel_values=x).last_hidden_state


def compare(mlx_model: Any, hf_model: Any, seed: int = 0) -> dict[str, float]:
    """Largest absolute differences between the two models' outputs on random pixels."""
    cfg = mlx_model.config
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((2, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        ref = hf_model(pixel_values=x)
    out = mlx_model(mx.array(pixels).astype(mlx_model.pre_layrnorm.weight.dtype))

    def diff(a: Any, b: Any) -> float:
        return float(np.max(np.abs(np.array(a.astype(mx.float32)) - b.numpy())))

    diffs = {"last_hidden_state": diff(out.last_hidden_state, ref.last_hidden_state)}
    if cfg.projection_dim:
        diffs["image_embeds"] = diff(out.image_embeds, ref.image_embeds)
    else:
        diffs["pooler_output"] = diff(out.pooler_output, ref.pooler_output)
    return diffs
