"""Cross-entropy over a large vocabulary, fast on the CPU.

``nn.losses.cross_entropy`` on the CPU runs ``logsumexp`` through MLX's scalar ``exp`` and
autodiff through it: over a caption batch's logits (thousands of rows by an 8,192-word
vocabulary) that costs several times the logits matmul itself. Here the row's exponentials
come from the vectorised polynomial of :mod:`~mlx_caption.models.layers.activations`
(the softmax's), and the gradient is written out, ``softmax(x) - target distribution``,
built from the forward pass's exponentials and row sums instead of differentiating the
polynomial. The row maximum of the forward pass also gives the token accuracy, so nothing
else reads the logits again. The row sums are matmuls
(:mod:`~mlx_caption.models.layers.reductions`).

``streams`` splits the rows over several CPU streams: MLX's element-wise CPU kernels run on
one thread each, so two streams keep two cores busy through the loss (forward and backward).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from mlx_caption import backend
from mlx_caption.models.layers.activations import softmax_numerators
from mlx_caption.models.layers.reductions import row_mean, row_sum


def cross_entropy(
    logits: mx.array,
    targets: mx.array,
    label_smoothing: float = 0.0,
    *,
    streams: Sequence[mx.Stream] = (),
) -> tuple[mx.array, mx.array]:
    """Per-position cross-entropy and whether the target is the top logit.

    ``logits`` (..., V) float, ``targets`` (...) int. Returns ``(loss, correct)``, both shaped
    like ``targets``: the loss equals ``nn.losses.cross_entropy(logits, targets,
    label_smoothing=...)`` (to float rounding), with the same gradient; ``correct`` is 1.0
    where the target's logit is the row's largest (``argmax == target`` but for exact ties),
    and carries no gradient.

    On a GPU, or for other dtypes than float32, MLX's own loss and ``argmax`` are used.
    ``streams``: CPU streams to split the rows over (at most one chunk per stream).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if backend.on_gpu() or logits.dtype != mx.float32:
        loss = nn.losses.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        return loss, (mx.argmax(logits, axis=-1) == targets).astype(mx.float32)
    shape = targets.shape
    rows = logits.reshape(-1, logits.shape[-1])
    labels = targets.reshape(-1)
    chunks = backend.row_ranges(rows.shape[0], len(streams))
    if len(chunks) == 1:
        loss, correct = _row_cross_entropy(float(label_smoothing), None)(rows, labels)[:2]
    else:
        parts = []
        for (start, stop), stream in zip(chunks, streams, strict=False):
            kernel = _row_cross_entropy(float(label_smoothing), stream)
            with mx.stream(stream):
                parts.append(kernel(rows[start:stop], labels[start:stop])[:2])
        loss = mx.concatenate([p[0] for p in parts])
        correct = mx.concatenate([p[1] for p in parts])
    return loss.reshape(shape), correct.reshape(shape)


@mx.compile
def _dense_grad(e: mx.array, scale: mx.array, smooth: mx.array) -> mx.array:
    # (softmax - smoothing / V) times the row's cotangent; the target's share is added after.
    return e * scale - smooth


@functools.cache
def _row_cross_entropy(label_smoothing: float, stream: mx.Stream | None):
    """The loss over ``(N, V)`` rows as a custom function with its gradient written out.

    Outputs ``(loss, correct, exps, row_sums)``: the last two are the forward pass's
    ``exp(x - max)`` and their sums, which the gradient reuses (callers ignore them). The
    gradient runs on ``stream`` (the default stream when None), like the forward pass.
    """
    keep = 1.0 - label_smoothing

    @mx.custom_function
    def row_loss(logits: mx.array, targets: mx.array):
        row_max = mx.max(logits, axis=-1, keepdims=True)
        exps = softmax_numerators(logits, row_max)
        sums = row_sum(exps)
        picked = mx.take_along_axis(logits, targets[:, None], axis=-1)
        loss = row_max + mx.log(sums) - keep * picked
        if label_smoothing:
            loss = loss - label_smoothing * row_mean(logits)
        correct = (picked >= row_max).astype(mx.float32)
        return loss[:, 0], correct[:, 0], exps, sums

    @row_loss.vjp
    def row_loss_vjp(primals, cotangents, outputs):
        logits, targets = primals
        exps, sums = outputs[2], outputs[3]
        with mx.stream(stream or mx.default_stream(mx.default_device())):
            cot = cotangents[0][:, None]
            grad = _dense_grad(exps, cot / sums, cot * (label_smoothing / logits.shape[-1]))
            rows = mx.arange(logits.shape[0])
            grad = grad.at[rows, targets].add(-keep * cotangents[0])
        return grad, mx.zeros_like(targets)

    return row_loss
