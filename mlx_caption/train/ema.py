"""An exponential moving average of the trainable weights (``optim.ema``).

Training keeps updating its own weights; the average follows them with
``avg = d * avg + (1 - d) * w`` after every optimizer step and is what validation scores and
what a checkpoint's ``model.safetensors`` holds, so ``caption``, ``eval``, ``serve`` and the
demo load the averaged model with no extra step. The training weights a resume continues
from go to the checkpoint's :data:`TRAINING_WEIGHTS_FILE`.

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates: early on the
average follows the weights closely instead of dragging the random init along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

TRAINING_WEIGHTS_FILE = "training_weights.safetensors"


def _blend(average: list[mx.array], weights: list[mx.array], decay: mx.array) -> list[mx.array]:
    return [decay * a + (1.0 - decay) * w for a, w in zip(average, weights, strict=True)]


_blend_compiled = mx.compile(_blend)


class WeightAverage:
    """The moving average of ``model``'s trainable weights with ``decay`` (0 < decay < 1).

    It starts equal to the model's current weights. :meth:`update` takes the count of updates
    so far from the caller (the trainer passes its step), so a resumed run continues the
    same warm-up.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be between 0 and 1 (exclusive), got {decay}")
        self.decay = decay
        flat = tree_flatten(model.trainable_parameters())
        self.names = [k for k, _ in flat]
        self.average = [mx.array(v) for _, v in flat]
        mx.eval(self.average)

    def decay_at(self, updates: int) -> float:
        """The decay used for the update after ``updates`` earlier ones."""
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    def update(self, model: nn.Module, updates: int) -> None:
        """Blend the model's current trainable weights in (``updates``: how many came before)."""
        weights = [v for _, v in tree_flatten(model.trainable_parameters())]
        decay = mx.array(self.decay_at(updates), mx.float32)
        self.average = _blend_compiled(self.average, weights, decay)
        mx.eval(self.average)

    def weights(self) -> dict[str, mx.array]:
        """The averaged weights by parameter name."""
        return dict(zip(self.names, self.average, strict=True))

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The averaged weights in ``model`` inside the block, its own weights after it."""
        own = tree_flatten(model.trainable_parameters())
        model.load_weights(list(self.weights().items()), strict=False)
        try:
            yield
        finally:
            model.load_weights(own, strict=False)


def save_training_weights(model: nn.Module, folder: Path) -> None:
    """Write the model's trainable weights (the ones training continues from) into ``folder``."""
    weights = dict(tree_flatten(model.trainable_parameters()))
    mx.save_safetensors(str(folder / TRAINING_WEIGHTS_FILE), weights, metadata={"format": "mlx"})
