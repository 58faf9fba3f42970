"""``nn.Linear`` whose weight gradient comes out in the weight's own layout.

``nn.Linear`` computes ``x @ weight.T``, so autodiff gives the gradient of ``weight.T`` and
hands back its transpose: a strided view of an ``(in, out)`` array. Every later pass over it
reads it column by column: the tied embedding adding its lookup gradient to it, the
training step summing its chunks' gradients, the gradient norm and the optimizer's update.
On the CPU that cost 6.6 ms against 0.4 ms for adding a transposed 8192 x 256 gradient, and
the decoder's training step 10-15% in all (``CHANGELOG``). Here the gradient is written out:
``cotangent.T @ x`` is one BLAS call that writes ``(out, in)`` row by row, the same numbers
in the weight's layout. The bias gradient (a column sum) is a matmul with a row of ones
(:mod:`~mlx_caption.models.layers.reductions`).

:func:`linear` also serves output heads tied to an embedding (``embedding.as_linear``).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.layers.reductions import column_sum


def _rows(x: mx.array) -> mx.array:
    return x.reshape(-1, x.shape[-1])


@mx.custom_function
def _linear_bias(x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    return mx.addmm(bias, x, weight.T)


@_linear_bias.vjp
def _linear_bias_vjp(primals, cotangent, output):
    x, weight, bias = primals
    rows = _rows(cotangent)
    return (
        (cotangent @ weight).astype(x.dtype),
        (rows.T @ _rows(x)).astype(weight.dtype),
        column_sum(rows).astype(bias.dtype),
    )


@mx.custom_function
def _linear(x: mx.array, weight: mx.array) -> mx.array:
    return x @ weight.T


@_linear.vjp
def _linear_vjp(primals, cotangent, output):
    x, weight = primals
    return (
        (cotangent @ weight).astype(x.dtype),
        (_rows(cotangent).T @ _rows(x)).astype(weight.dtype),
    )


def linear(x: mx.array, weight: mx.array, bias: mx.array | None = None) -> mx.array:
    """``x @ weight.T + bias`` (``weight`` is ``(out, in)``), with each gradient in its
    primal's layout (see the module docstring). Only the gradients asked for are computed."""
    if bias is None:
        return _linear(x, weight)
    return _linear_bias(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, names and arguments) computed by :func:`linear`."""

    def __call__(self, x: mx.array) -> mx.array:
        return linear(x, self.weight, self.bias if "bias" in self else None)
