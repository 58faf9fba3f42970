"""The transformer MLP every family shares: ``fc1`` -> activation -> ``fc2`` (HF names)."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.layers.activations import ACTIVATIONS
from mlx_caption.models.layers.linear import Linear


def activation(name: str) -> Callable[[mx.array], mx.array]:
    """The activation a Hugging Face config calls ``hidden_act``; a ValueError names the
    supported ones for any other."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; expected one of {list(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """``fc2(act(fc1(x)))`` with ``act`` one of :data:`ACTIVATIONS` (by its HF name)."""

    def __init__(self, dims: int, hidden: int, act: str = "gelu"):
        super().__init__()
        self.act = activation(act)
        self.fc1 = Linear(dims, hidden)
        self.fc2 = Linear(hidden, dims)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(self.act(self.fc1(x)))
