"""Learning-rate schedules and the AdamW parameter groups the trainer uses.

A schedule is an optax-style callable ``step -> lr`` on ``mx.array`` steps, so it can be
handed to ``mlx.optimizers.AdamW(learning_rate=...)``: the optimizer keeps ``step`` in its own
state, which the checkpoint saves, so a resumed run continues at exactly the same lr.

Parameter groups (encoder vs. the rest, and optionally decayed vs. not-decayed weights) are
separate AdamW instances under one ``MultiOptimizer``. Every group exists whether or not it
has parameters, so the optimizer state always has the same structure for a given recipe and
``tree_flatten(optimizer.state)`` round-trips through safetensors without special cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from mlx_caption.errors import UserError
from mlx_caption.train.config import TrainOptimConfig

Schedule = Callable[[mx.array], mx.array]

# Group order is part of the checkpoint format (optimizer.safetensors keys "states.<i>.*").
GROUPS = ("encoder_decay", "encoder_no_decay", "decay", "no_decay")


KINDS = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class WarmupDecay:
    """Linear warmup from ``peak / warmup_steps`` to ``peak``, then cosine/linear/no decay to
    ``peak * min_ratio`` at ``total_steps``.

    Calling it on an ``mx.array`` step gives the lr with ``mx`` ops (so it works inside a
    compiled step and as an optimizer's ``learning_rate``); :meth:`at` is the same in plain
    Python, for logs and as the reference the tests check the first against. The first update
    (step 0) already uses a non-zero lr so no step is wasted.
    """

    peak: float
    warmup_steps: int
    total_steps: int
    kind: str = "cosine"
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown lr schedule {self.kind!r} (use {', '.join(KINDS)})")

    @property
    def _decay_steps(self) -> int:
        return max(1, self.total_steps - self.warmup_steps)

    def __call__(self, step: mx.array) -> mx.array:
        peak, warmup, floor = self.peak, self.warmup_steps, self.peak * self.min_ratio
        s = mx.array(step).astype(mx.float32)
        if self.kind == "constant":
            after = mx.array(peak, mx.float32)
        else:
            t = mx.clip((s - warmup) / float(self._decay_steps), 0.0, 1.0)
            shape = 1.0 - t if self.kind == "linear" else 0.5 * (1.0 + mx.cos(math.pi * t))
            after = floor + (peak - floor) * shape
        if warmup <= 0:
            return after
        return mx.where(s < warmup, peak * (s + 1.0) / warmup, after)

    def at(self, step: float) -> float:
        """The lr after ``step`` optimizer updates."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.peak
        t = min(1.0, max(0.0, (step - self.warmup_steps) / self._decay_steps))
        floor = self.peak * self.min_ratio
        if self.kind == "linear":
            return floor + (self.peak - floor) * (1.0 - t)
        return floor + (self.peak - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


# Learned position/class embeddings are excluded from weight decay (as norms and biases are).
_NO_DECAY_NAMES = ("position_embedding", "class_embedding", "embed_positions", "pos_embed")


def group_of(
    path: str, param: mx.array, decay_all: bool = False, encoder_prefix: str = "encoder."
) -> str:
    """Which AdamW group a parameter (dotted path from ``tree_flatten``) belongs to; the
    model's encoder parameters are those under ``encoder_prefix`` (``vision_model.`` for
    BLIP: a model's ``encoder_prefix``)."""
    encoder = path.startswith(encoder_prefix)
    no_decay = not decay_all and (param.ndim < 2 or any(n in path for n in _NO_DECAY_NAMES))
    return ("encoder_" if encoder else "") + ("no_decay" if no_decay else "decay")


OPTIMIZERS = ("adamw", "sgd")


def _make_optimizer(cfg: TrainOptimConfig, lr: Schedule, weight_decay: float) -> optim.Optimizer:
    if cfg.optimizer == "sgd":
        return optim.SGD(learning_rate=lr, momentum=cfg.momentum, weight_decay=weight_decay)
    return optim.AdamW(
        learning_rate=lr,
        betas=list(cfg.betas),
        eps=cfg.eps,
        weight_decay=weight_decay,
        bias_correction=cfg.bias_correction,
    )


def build_optimizer(
    cfg: TrainOptimConfig, total_steps: int, encoder_prefix: str = "encoder."
) -> tuple[optim.MultiOptimizer, dict[str, Schedule]]:
    """AdamW groups (see :data:`GROUPS`) with their schedules, over the trainable parameters
    (the encoder's are those under ``encoder_prefix``).

    Returns the optimizer and the schedule of each group (for logging the current lr).
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise UserError(
            f"unknown optim.optimizer {cfg.optimizer!r}; choose {', '.join(OPTIMIZERS)}"
        )
    encoder_lr = cfg.encoder_lr if cfg.encoder_lr is not None else cfg.lr / 10
    schedules: dict[str, Schedule] = {}
    optimizers = []
    for name in GROUPS:
        peak = encoder_lr if name.startswith("encoder") else cfg.lr
        sched = WarmupDecay(peak, cfg.warmup_steps, total_steps, cfg.schedule, cfg.min_lr_ratio)
        schedules[name] = sched
        wd = 0.0 if name.endswith("no_decay") else cfg.weight_decay
        optimizers.append(_make_optimizer(cfg, sched, wd))
    decay_all = cfg.decay_all

    def predicate(group: str) -> Callable[[str, mx.array], bool]:
        return lambda path, p: group_of(path, p, decay_all, encoder_prefix) == group

    filters = [predicate(g) for g in GROUPS[:-1]]
    return optim.MultiOptimizer(optimizers, filters), schedules


def group_sizes(model: nn.Module, decay_all: bool = False) -> dict[str, int]:
    """Number of trainable scalars in each group (reported at start-up)."""
    from mlx.utils import tree_flatten

    sizes = dict.fromkeys(GROUPS, 0)
    for path, p in tree_flatten(model.trainable_parameters()):
        sizes[group_of(path, p, decay_all, model.encoder_prefix)] += p.size
    return sizes
