"""The fast cross-entropy against MLX's own: values, gradients, label smoothing, padding, streams."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_caption.tokens import NO_TOKEN
from mlx_caption.train.loss import cross_entropy
from mlx_caption.train.step import caption_loss


def _logits(shape, scale=4.0, seed=0):
    return mx.random.normal(shape, key=mx.random.key(seed)) * scale


def _reference(logits, targets, smoothing):
    return nn.losses.cross_entropy(logits, targets, label_smoothing=smoothing)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("streams", [0, 2])
def test_values_and_gradient_match_mlx(smoothing, streams):
    logits = _logits((3, 5, 301))
    # Rows far from zero and with a wide range: the polynomial exp must hold there too.
    logits = mx.concatenate([logits, 80.0 + 30.0 * _logits((3, 1, 301), seed=1)], axis=1)
    targets = mx.random.randint(0, 301, (3, 6), key=mx.random.key(2))
    pool = [mx.new_stream(mx.cpu) for _ in range(streams)]
    loss, correct = cross_entropy(logits, targets, smoothing, streams=pool)
    ref = _reference(logits, targets, smoothing)
    assert loss.shape == targets.shape
    np.testing.assert_allclose(np.array(loss), np.array(ref), rtol=1e-5, atol=2e-5)
    top = np.array(mx.argmax(logits, axis=-1) == targets)
    np.testing.assert_array_equal(np.array(correct) == 1.0, top)

    cot = mx.random.normal(targets.shape, key=mx.random.key(3))
    cot = cot * (mx.arange(6) != 4)  # a padded position: zero cotangent, zero gradient

    def fast(x):
        return cross_entropy(x, targets, smoothing, streams=pool)[0]

    grad = mx.vjp(fast, [logits], [cot])[1][0]
    ref_grad = mx.vjp(lambda x: _reference(x, targets, smoothing), [logits], [cot])[1][0]
    np.testing.assert_allclose(np.array(grad), np.array(ref_grad), atol=2e-6)
    assert mx.all(grad[:, 4] == 0).item()


def test_compiled_value_and_grad_match_mlx():
    """As the training step runs it: value_and_grad under mx.compile, summed with a mask."""
    logits = _logits((4, 7, 513))
    targets = mx.random.randint(0, 513, (4, 7), key=mx.random.key(5))
    mask = (mx.arange(7) < 5).astype(mx.float32)

    def total(loss_fn):
        return mx.compile(mx.value_and_grad(lambda x: (loss_fn(x) * mask).sum()))

    value, grad = total(lambda x: cross_entropy(x, targets, 0.1)[0])(logits)
    ref_value, ref_grad = total(lambda x: _reference(x, targets, 0.1))(logits)
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-5)
    np.testing.assert_allclose(np.array(grad), np.array(ref_grad), atol=2e-6)


def test_caption_loss_split_over_streams_is_the_same():
    logits = _logits((4, 9, 97))
    targets = mx.random.randint(1, 97, (4, 9), key=mx.random.key(6))
    targets = mx.where(mx.arange(9) > 6, NO_TOKEN, targets)  # padding after position 6
    pool = [mx.default_stream(mx.cpu), mx.new_stream(mx.cpu)]
    one = caption_loss(logits, targets, 0.1)
    two = caption_loss(logits, targets, 0.1, streams=pool)
    for a, b in zip(one, two, strict=True):
        assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert one[1].item() == 4 * 7


def test_rejects_bad_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(_logits((2, 5)), mx.array([0, 1]), 1.0)
