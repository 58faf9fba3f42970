"""Position embeddings shared by the encoder families: sine-cosine tables, and resizing a
learned table to another patch grid."""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import numpy as np


def sincos_position_embedding(grid: int, dim: int) -> mx.array:
    """2-D sine-cosine positions for a ``grid x grid`` patch grid, class token first (zeros).

    Half the channels encode the row, half the column, each as sines and cosines of
    geometrically spaced frequencies (as in MAE). Used to initialise a ViT trained from
    scratch: the position embedding then starts out knowing which patches are neighbours,
    which a random init has to learn.
    """

    def axis(pos: np.ndarray, channels: int) -> np.ndarray:
        freqs = 1.0 / 10000 ** (np.arange(channels // 2) / (channels / 2))
        angles = np.outer(pos, freqs)
        out = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
        return np.pad(out, ((0, 0), (0, channels - out.shape[1])))

    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    half = dim // 2
    patches = np.concatenate([axis(rows.ravel(), half), axis(cols.ravel(), dim - half)], axis=1)
    table = np.concatenate([np.zeros((1, dim)), patches], axis=0)
    return mx.array(table.astype(np.float32))


# ----------------------------------------------------------------------------- resizing
#
# A ViT's learned position table belongs to the grid it was trained on. To run at another
# image size, transformers resizes the table with ``torch.nn.functional.interpolate(...,
# mode="bicubic", align_corners=False)`` (DINOv2 with registers: ``antialias=True``). Both
# are separable: one matrix per axis, here computed once per (source, target) size in NumPy
# exactly as torch's CPU kernels compute their weights, then applied as two small matmuls, so
# gradients still reach the table when the encoder fine-tunes.


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a`` (torch: -0.75, or -0.5 with
    antialias, as PIL)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(in_size: int, out_size: int, antialias: bool = False) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix of 1-D bicubic resizing, ``align_corners=False``.

    Without ``antialias``: torch's ``upsample_bicubic2d`` (four taps at ``(i + 0.5) * scale -
    0.5``, indices clamped to the border). With it: ``_upsample_bicubic2d_aa`` (PIL's
    filter, ``a = -0.5``, widened by the scale when shrinking, taps outside the input dropped
    and the rest renormalised).
    """
    scale = in_size / out_size
    out = np.zeros((out_size, in_size))
    for i in range(out_size):
        if antialias:
            support = 2.0 * scale if scale >= 1.0 else 2.0
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), in_size)
            taps = np.arange(lo, hi)
            w = _cubic((taps - center + 0.5) / max(scale, 1.0), -0.5)
            out[i, lo:hi] = w / w.sum() if w.sum() != 0 else w
        else:
            x = scale * (i + 0.5) - 0.5
            base = np.floor(x)
            t = x - base
            taps = np.clip(base + np.arange(-1, 3), 0, in_size - 1).astype(int)
            np.add.at(out[i], taps, _cubic(t - np.arange(-1, 3), -0.75))
    return out


@functools.lru_cache(maxsize=64)
def _resize_matrices(
    in_grid: tuple[int, int], out_grid: tuple[int, int], antialias: bool
) -> tuple[mx.array, mx.array]:
    rows = bicubic_matrix(in_grid[0], out_grid[0], antialias)
    cols = bicubic_matrix(in_grid[1], out_grid[1], antialias)
    return mx.array(rows.astype(np.float32)), mx.array(cols.astype(np.float32))


def resize_grid(grid: mx.array, size: tuple[int, int], antialias: bool = False) -> mx.array:
    """Bicubic resize of an ``(H, W, C)`` array to ``size`` (rows, cols), in float32, as
    ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False, antialias=...)``
    on its NCHW transpose; the result has the input's dtype."""
    h, w, c = grid.shape
    rows, cols = _resize_matrices((h, w), tuple(size), antialias)
    x = (rows @ grid.astype(mx.float32).reshape(h, w * c)).reshape(size[0], w, c)
    return (cols @ x).astype(grid.dtype)


def resize_positions(
    table: mx.array, grid: tuple[int, int], prefix: int = 0, antialias: bool = False
) -> mx.array:
    """A position table ``(prefix + S*S, D)`` for a ``grid`` of patches.

    The first ``prefix`` rows (a class token's) are kept; the rest, a square grid, is resized
    when ``grid`` differs from it (transformers' ``interpolate_pos_encoding``).
    """
    if min(grid) < 1:
        raise ValueError(
            f"no patch grid ({grid[0]}x{grid[1]}): the input is smaller than one patch"
        )
    side = math.isqrt(table.shape[0] - prefix)
    if tuple(grid) == (side, side):
        return table
    patches = resize_grid(table[prefix:].reshape(side, side, -1), grid, antialias)
    return mx.concatenate([table[:prefix], patches.reshape(-1, table.shape[-1])], axis=0)
