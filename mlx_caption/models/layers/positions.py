"""Position embeddings shared by the encoder families."""

from __future__ import annotations

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
