"""The training step: caption loss, teacher forcing and the compiled optimizer update.

``TrainStep`` is ``nn.value_and_grad`` over the model's trainable parameters, gradient
averaging across ranks, global-norm clipping and an AdamW update, compiled once with
``mx.compile(inputs=state, outputs=state)`` where ``state = [model.state, optimizer.state,
mx.random.state]``. Batches must have fixed shapes (captions padded to ``max_length``, the
last ragged batch dropped) so it never recompiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from mlx_caption.config import TrainConfig
from mlx_caption.train.distributed import World

PAD = 0  # CaptionTokenizer.PAD; fixed by the project's contract


# ----------------------------------------------------------------------------- loss


def caption_loss(
    logits: mx.array, targets: mx.array, label_smoothing: float = 0.0
) -> tuple[mx.array, mx.array, mx.array]:
    """Summed cross-entropy over non-pad targets, the number of those, and how many are right.

    ``logits`` (B, L, V), ``targets`` (B, L) int. Returns sums (not means) so that ranks and
    batches can be combined exactly: mean loss = sum / count, token accuracy = correct / count.
    """
    mask = (targets != PAD).astype(mx.float32)
    ce = nn.losses.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    correct = (mx.argmax(logits, axis=-1) == targets).astype(mx.float32) * mask
    return (ce * mask).sum(), mask.sum(), correct.sum()


def image_tokens(model: nn.Module, images: mx.array, from_features: bool) -> mx.array:
    """Projected image tokens (B, T, d) from pixels, or from cached encoder grids."""
    if from_features:
        return model.project(images)
    return model.encode_images(images)


def teacher_forced(
    model: nn.Module,
    images: mx.array,
    tokens: mx.array,
    *,
    from_features: bool,
    captions_per_image: int = 1,
) -> tuple[mx.array, mx.array]:
    """Logits for ``tokens[:, :-1]`` and their targets ``tokens[:, 1:]``.

    ``images`` holds one entry per image; with ``captions_per_image = k`` the caption rows are
    grouped by image (rows ``i*k .. i*k+k-1`` belong to image ``i``) and the image tokens are
    repeated to match, so the encoder runs once per image, not once per caption.
    """
    grid = image_tokens(model, images, from_features)
    if captions_per_image > 1:
        grid = mx.repeat(grid, captions_per_image, axis=0)
    logits = model(None, tokens[:, :-1], image_tokens=grid)
    return logits, tokens[:, 1:]


# ----------------------------------------------------------------------------- step


@dataclass
class StepOutput:
    """What one optimizer step reports (global values, the same on every rank)."""

    loss: float  # label-smoothed cross-entropy per target token
    accuracy: float  # next-token accuracy over non-pad targets
    grad_norm: float  # before clipping
    tokens: int


class TrainStep:
    """One optimizer update, compiled or not (the two give the same numbers).

    ``step(images, tokens)`` takes this rank's rows. The loss is normalized by the *global*
    token count, so averaging gradients over ranks equals one process on the combined batch.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer,
        *,
        label_smoothing: float = 0.0,
        grad_clip: float | None = None,
        from_features: bool = False,
        captions_per_image: int = 1,
        world: World | None = None,
        compile: bool = True,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.world = world or World()
        world = self.world
        # Optimizer state must exist before compiling: the compiled function captures it.
        optimizer.init(model.trainable_parameters())

        def loss_fn(model, images, tokens, n_global):
            logits, targets = teacher_forced(
                model,
                images,
                tokens,
                from_features=from_features,
                captions_per_image=captions_per_image,
            )
            total, count, correct = caption_loss(logits, targets, label_smoothing)
            # x size: average_gradients divides by size; the result is the global mean's grad.
            return total / n_global * world.size, (total, correct)

        value_and_grad = nn.value_and_grad(model, loss_fn)

        def step(images: mx.array, tokens: mx.array):
            count = (tokens[:, 1:] != PAD).sum().astype(mx.float32)
            n_global = mx.maximum(self._all_sum(count), 1.0)
            (_, (total, correct)), grads = value_and_grad(model, images, tokens, n_global)
            if world.distributed:
                grads = nn.average_gradients(grads, group=world.group)
                total, correct = self._all_sum(total), self._all_sum(correct)
            if grad_clip is not None and grad_clip > 0:
                grads, norm = optim.clip_grad_norm(grads, grad_clip)
            else:
                norm = _global_norm(grads)
            optimizer.update(model, grads)
            return total / n_global, correct / n_global, norm, n_global

        self.state = [model.state, optimizer.state, mx.random.state]
        self._step: Callable = (
            mx.compile(step, inputs=self.state, outputs=self.state) if compile else step
        )

    @classmethod
    def for_recipe(
        cls,
        model: nn.Module,
        optimizer: optim.Optimizer,
        cfg: TrainConfig,
        world: World | None = None,
    ) -> TrainStep:
        """The step a training recipe asks for (loss, clipping, encoder mode, compilation)."""
        return cls(
            model,
            optimizer,
            label_smoothing=cfg.label_smoothing,
            grad_clip=cfg.optim.grad_clip,
            from_features=cfg.model.encoder_mode == "frozen",
            captions_per_image=cfg.data.captions_per_image,
            world=world,
            compile=cfg.compile,
        )

    def _all_sum(self, x: mx.array) -> mx.array:
        if not self.world.distributed:
            return x
        return mx.distributed.all_sum(x, group=self.world.group)

    def __call__(self, images: mx.array, tokens: mx.array) -> StepOutput:
        loss, acc, norm, count = self._step(images, tokens)
        mx.eval(loss, acc, norm, count, self.state)
        return StepOutput(loss.item(), acc.item(), norm.item(), int(count.item()))


def _global_norm(grads) -> mx.array:
    leaves = [g for _, g in tree_flatten(grads)]
    if not leaves:
        return mx.array(0.0)
    return mx.sqrt(sum((g.astype(mx.float32) ** 2).sum() for g in leaves))
