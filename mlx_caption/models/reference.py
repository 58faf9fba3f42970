"""What every family's ``reference`` module shares: running a transformers vision model on
NHWC pixels and comparing it with the MLX encoder.

Imports torch (the ``torch`` extra); only the families' ``reference`` modules import this.
"""

from __future__ import annotations

import inspect
from typing import Any

import mlx.core as mx
import numpy as np
import torch
from mlx.utils import tree_flatten

OUTPUTS = ("last_hidden_state", "pooler_output", "image_embeds")


def random_model(model_class: type, config: Any, seed: int = 0) -> Any:
    """``model_class(config)`` randomly initialised from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return model_class(config).eval()


def forward(model: Any, pixels: np.ndarray, **kwargs: Any) -> Any:
    """The torch model's output for NHWC float pixels (an NCHW view of the same buffer).

    Positions are resized to the input's grid where the model asks to be told
    (``interpolate_pos_encoding``; DINOv2 always resizes), as the MLX encoders do.
    """
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(0, 3, 1, 2)
    if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
        kwargs.setdefault("interpolate_pos_encoding", True)
    with torch.inference_mode():
        return model(pixel_values=x, **kwargs)


def last_hidden_state(model: Any, pixels: np.ndarray) -> Any:
    """The torch model's token grid for NHWC pixels."""
    return forward(model, pixels).last_hidden_state


def compare(mlx_model: Any, hf_model: Any, seed: int = 0) -> dict[str, float]:
    """Largest absolute differences between the two models' outputs (those both have) on
    random pixels at the MLX encoder's input size."""
    size = mlx_model.config.input_size
    pixels = np.random.default_rng(seed).standard_normal((2, size, size, 3)).astype(np.float32)
    ref = forward(hf_model, pixels)
    dtype = tree_flatten(mlx_model.parameters())[0][1].dtype
    out = mlx_model(mx.array(pixels).astype(dtype))
    diffs = {}
    for name in OUTPUTS:
        mine, theirs = getattr(out, name, None), getattr(ref, name, None)
        if mine is not None and theirs is not None:
            diffs[name] = float(np.max(np.abs(np.array(mine.astype(mx.float32)) - theirs.numpy())))
    return diffs
