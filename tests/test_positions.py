"""Resizing a position table: bicubic exactly as torch.nn.functional.interpolate, with and
without antialias, and the table of a class token plus a grid."""

import mlx.core as mx  # noqa: I001
import numpy as np
import pytest
from prerequisites import require_module

import mlx_caption  # noqa: F401  (before mlx.core)
from mlx_caption.models.layers import bicubic_matrix, resize_grid, resize_positions

require_module("torch", "torch (the [torch] extra)")

import torch  # noqa: E402

SIZES = [(1, 1), (2, 5), (3, 2), (5, 3), (7, 16), (16, 37), (37, 16), (24, 27), (27, 24), (37, 64)]


def torch_resize(x: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    """(H, W, C) through torch's interpolate on the NCHW transpose."""
    t = torch.from_numpy(x).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(
        t, size=size, mode="bicubic", align_corners=False, antialias=antialias
    )
    return out[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("in_size,out_size", SIZES)
def test_matrices_are_torch_exact(in_size, out_size, antialias):
    """In float64 the separable matrices reproduce torch's kernel to rounding."""
    x = np.random.default_rng(in_size * 100 + out_size).standard_normal((in_size, in_size + 1, 4))
    rows = bicubic_matrix(in_size, out_size, antialias)
    cols = bicubic_matrix(in_size + 1, out_size + 2, antialias)
    ours = np.einsum("ih,hwc->iwc", rows, x)
    ours = np.einsum("jw,iwc->ijc", cols, ours)
    ref = torch_resize(x, (out_size, out_size + 2), antialias)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_antialias_differs_when_shrinking_only_in_its_kernel():
    # Shrinking, antialias widens the filter: every input row contributes somewhere.
    aa, plain = bicubic_matrix(37, 16, True), bicubic_matrix(37, 16, False)
    assert np.count_nonzero(aa[3]) > np.count_nonzero(plain[3]) == 4
    # Each row is a partition of unity, and the same size is the identity.
    np.testing.assert_allclose(aa.sum(1), 1.0)
    np.testing.assert_allclose(plain.sum(1), 1.0)
    np.testing.assert_allclose(bicubic_matrix(9, 9, False), np.eye(9), atol=1e-15)


@pytest.mark.parametrize("antialias", [False, True])
def test_resize_grid_in_mlx_float32(antialias):
    x = np.random.default_rng(0).standard_normal((37, 37, 8)).astype(np.float32)
    for size in [(16, 16), (24, 20), (64, 64)]:
        ours = np.array(resize_grid(mx.array(x), size, antialias))
        np.testing.assert_allclose(ours, torch_resize(x, size, antialias), atol=5e-5)
    half = resize_grid(mx.array(x).astype(mx.float16), (16, 16), antialias)
    assert half.dtype == mx.float16


def test_resize_positions_keeps_the_prefix_and_passes_gradients():
    table = mx.random.normal((1 + 16, 6))
    assert resize_positions(table, (4, 4), prefix=1) is table  # same grid: untouched
    out = resize_positions(table, (6, 5), prefix=1)
    assert out.shape == (1 + 30, 6)
    assert mx.array_equal(out[0], table[0])
    ref = torch_resize(np.array(table[1:]).reshape(4, 4, 6), (6, 5), False).reshape(30, 6)
    np.testing.assert_allclose(np.array(out[1:]), ref, atol=1e-5)
    # Linear in the table: the gradient of a sum is each entry's total weight.
    grad = mx.grad(lambda t: resize_positions(t, (6, 5), prefix=1).sum())(table)
    weights = np.outer(bicubic_matrix(4, 6).sum(0), bicubic_matrix(4, 5).sum(0)).reshape(-1)
    np.testing.assert_allclose(np.array(grad[1:, 0]), weights, atol=1e-5)
    with pytest.raises(ValueError, match="smaller than one patch"):
        resize_positions(table, (0, 4), prefix=1)
