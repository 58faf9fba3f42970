"""Sums and means over an axis as matmuls with a vector of ones.

MLX's CPU reductions read element by element on one core; a matmul with a ones vector is
read by BLAS at full speed (a row sum over a 160 x 8192 block: 0.23 ms against 1.15 ms). The
LayerNorm, the linear layers' bias gradients and the caption loss use these for their sums.
"""

from __future__ import annotations

import mlx.core as mx


def row_sum(x: mx.array) -> mx.array:
    """Sum over the last axis, keepdims."""
    return x @ mx.ones((x.shape[-1], 1), x.dtype)


def row_mean(x: mx.array) -> mx.array:
    """Mean over the last axis, keepdims."""
    return x @ mx.full((x.shape[-1], 1), 1.0 / x.shape[-1], x.dtype)


def column_sum(x: mx.array) -> mx.array:
    """Sum over every axis but the last."""
    rows = x.reshape(-1, x.shape[-1])
    return (mx.ones((1, rows.shape[0]), x.dtype) @ rows)[0]
