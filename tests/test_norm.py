"""LayerNorm: values and gradients against a float64 reference and mx.fast.layer_norm."""

import mlx_caption  # noqa: F401  (loads the optimized BLAS before mlx.core)

# isort: split
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_caption.models.layers.norm import LayerNorm, layer_norm


def _reference(x, w, b, eps, dy):
    """Output and gradients of (x, w, b) for the loss sum(y * dy), in float64 NumPy."""
    x, w, b, dy = (np.asarray(a, np.float64) for a in (x, w, b, dy))
    mean = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    x_hat = (x - mean) * rstd
    g = dy * w
    dx = rstd * (g - g.mean(-1, keepdims=True) - x_hat * (g * x_hat).mean(-1, keepdims=True))
    rows = (-1, x.shape[-1])
    dw = (dy * x_hat).reshape(rows).sum(0)
    return x_hat * w + b, dx, dw, dy.reshape(rows).sum(0)


def _inputs(shape, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32) * 2.0 + offset
    w = rng.standard_normal(shape[-1]).astype(np.float32)
    b = rng.standard_normal(shape[-1]).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, w, b, dy


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize(
    ("shape", "offset"),
    [((37, 24), 0.0), ((3, 11, 64), 0.0), ((2, 5, 5, 8), 0.0), ((4, 7, 48), 300.0)],
)
def test_values_and_gradients_match_float64(shape, offset, compiled):
    # The offset: rows far from zero mean (CLIP's residual stream has huge channels).
    x, w, b, dy = _inputs(shape, offset)
    eps = 1e-5

    def loss(x, w, b):
        return (layer_norm(x, w, b, eps) * mx.array(dy)).sum()

    grad = mx.grad(loss, argnums=(0, 1, 2))
    forward = lambda x, w, b: layer_norm(x, w, b, eps)  # noqa: E731
    if compiled:
        grad, forward = mx.compile(grad), mx.compile(forward)
    args = (mx.array(x), mx.array(w), mx.array(b))
    y, grads = forward(*args), grad(*args)
    ref = _reference(x, w, b, eps, dy)
    scale = [np.abs(r).max() for r in ref]
    for got, want, s in zip((y, *grads), ref, scale, strict=True):
        np.testing.assert_allclose(np.array(got), want, atol=2e-5 * s, rtol=0)
    # And what mx.fast.layer_norm gives, value and gradient.
    fast = mx.fast.layer_norm(*args, eps)
    np.testing.assert_allclose(np.array(y), np.array(fast), atol=2e-5 * scale[0], rtol=0)


def test_input_gradient_alone_and_weights_alone():
    x, w, b, dy = (mx.array(a) for a in _inputs((16, 32)))
    ref = _reference(*(np.array(a) for a in (x, w, b)), 1e-6, np.array(dy))

    def loss(x, w, b):
        return (layer_norm(x, w, b, 1e-6) * dy).sum()

    dx = mx.grad(loss, argnums=0)(x, w, b)
    dw, db = mx.grad(loss, argnums=(1, 2))(mx.stop_gradient(x), w, b)
    np.testing.assert_allclose(np.array(dx), ref[1], atol=1e-4)
    np.testing.assert_allclose(np.array(dw), ref[2], atol=1e-4)
    np.testing.assert_allclose(np.array(db), ref[3], atol=1e-4)


def test_module_is_nn_layer_norm_with_the_same_weights():
    mx.random.seed(0)
    ours, theirs = LayerNorm(24, eps=1e-6), nn.LayerNorm(24, eps=1e-6)
    rng = np.random.default_rng(1)
    weights = [
        ("weight", mx.array(rng.standard_normal(24).astype(np.float32))),
        ("bias", mx.array(rng.standard_normal(24).astype(np.float32))),
    ]
    ours.load_weights(weights)
    theirs.load_weights(weights)
    assert isinstance(ours, nn.LayerNorm)
    assert sorted(k for k, _ in tree_flatten(ours.parameters())) == ["bias", "weight"]
    x = mx.array(rng.standard_normal((3, 9, 24)).astype(np.float32) * 5)
    np.testing.assert_allclose(np.array(ours(x)), np.array(theirs(x)), atol=2e-5)
    # Without the affine part: normalisation only.
    bare, plain = LayerNorm(24, affine=False), nn.LayerNorm(24, affine=False)
    np.testing.assert_allclose(np.array(bare(x)), np.array(plain(x)), atol=2e-5)


def test_other_dtypes_use_mlx_fast_layer_norm():
    x, w, b, _ = (mx.array(a).astype(mx.bfloat16) for a in _inputs((8, 16)))
    got = layer_norm(x, w, b, 1e-5)
    assert got.dtype == mx.bfloat16
    assert mx.array_equal(got, mx.fast.layer_norm(x, w, b, 1e-5))
