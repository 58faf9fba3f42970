"""LayerNorm that is fast on the CPU, with Hugging Face's parameter names.

On the CPU ``mx.fast.layer_norm`` is MLX's generic ops (a mean, a subtraction, a square, a
second mean, ...), and its gradient is autodiff through them. Their row reductions run on one
core, element by element. Here the row means are matmuls with a ``1/D`` column (BLAS reads the
rows at full speed, on the BLAS's threads), the element-wise passes are fused into few
compiled kernels, and the gradient is written out, reusing the forward pass's centred rows
and reciprocal standard deviations. Measured on the 2-core CPU: the forward 2.0-2.3 ns per
element against 4.5, forward and backward 5.7 against 7.3 (benchmarks/README.md).
On a GPU, and for dtypes other than float32, it is ``mx.fast.layer_norm``.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import mlx.nn as nn

from mlx_caption import backend
from mlx_caption.models.layers.reductions import column_sum, row_mean


@mx.compile
def _center(x: mx.array, mean: mx.array) -> tuple[mx.array, mx.array]:
    """The rows' mean-centred values and their squares: one fused pass."""
    centred = x - mean
    return centred, centred * centred


@mx.compile
def _normalize(centred: mx.array, var: mx.array, eps: mx.array) -> tuple[mx.array, mx.array]:
    rstd = mx.rsqrt(var + eps)
    return centred * rstd, rstd


@mx.compile
def _affine(x_hat: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    return x_hat * weight + bias


@mx.compile
def _input_grad(
    g: mx.array, x_hat: mx.array, rstd: mx.array, g_mean: mx.array, gx_mean: mx.array
) -> mx.array:
    # d/dx of (x - mean) * rstd, applied to g = dy * weight:
    # rstd * (g - mean(g) - x_hat * mean(g * x_hat)).
    return rstd * (g - g_mean - x_hat * gx_mean)


@functools.cache
def _cpu_layer_norm(eps: float):
    """The float32 CPU LayerNorm ``(x, weight, bias) -> y`` with its gradient written out.

    The custom function returns ``(y, x_hat, rstd)``: the last two are what the gradient
    reuses (callers keep only ``y``).
    """
    eps_array = mx.array(eps, mx.float32)

    @mx.custom_function
    def layer_norm(x: mx.array, weight: mx.array, bias: mx.array):
        centred, squares = _center(x, row_mean(x))
        x_hat, rstd = _normalize(centred, row_mean(squares), eps_array)
        return _affine(x_hat, weight, bias), x_hat, rstd

    @layer_norm.vjp
    def layer_norm_vjp(primals, cotangents, outputs):
        _, weight, _ = primals
        dy = cotangents[0]
        x_hat, rstd = outputs[1], outputs[2]
        g = dy * weight
        dx = _input_grad(g, x_hat, rstd, row_mean(g), row_mean(g * x_hat))
        # Only what is asked for is evaluated: frozen inputs never build dx.
        return dx, column_sum(dy * x_hat), column_sum(dy)

    return layer_norm


def layer_norm(x: mx.array, weight: mx.array | None, bias: mx.array | None, eps: float) -> mx.array:
    """``mx.fast.layer_norm(x, weight, bias, eps)``: normalise over the last axis, then scale
    and shift (either may be None), fast on the CPU (see the module docstring)."""
    if backend.on_gpu() or x.dtype != mx.float32:
        return mx.fast.layer_norm(x, weight, bias, eps)
    width = x.shape[-1]
    weight = mx.ones((width,), x.dtype) if weight is None else weight
    bias = mx.zeros((width,), x.dtype) if bias is None else bias
    return _cpu_layer_norm(float(eps))(x, weight.astype(x.dtype), bias.astype(x.dtype))[0]


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters, names and arguments) computed by :func:`layer_norm`."""

    def __call__(self, x: mx.array) -> mx.array:
        weight = self.weight if "weight" in self else None
        bias = self.bias if "bias" in self else None
        return layer_norm(x, weight, bias, self.eps)
