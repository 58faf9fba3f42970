"""3x3 stride-2 convolution with a hand-written gradient, for the ViT's conv stem.

MLX's autodiff of a strided convolution is slow on the CPU: through ``mx.conv2d``, and even
through the im2col form (nine strided views, one matmul), most of the time goes to
scattering the views' gradients back with strided ``slice_update``. Here the forward pass is
``mx.conv2d`` and the backward pass is two matmuls and a col2im made of unit-stride slices,
pads and stacks (``bench --ops``, "conv stem gradient", times all three).

The col2im uses the stride: with padding 1, input row ``2i`` is seen by output row ``i``
through kernel row 1 only, and input row ``2i + 1`` by output row ``i`` (kernel row 2) and
output row ``i + 1`` (kernel row 0). Columns work the same way, so the input gradient is
assembled at half resolution and interleaved once at the end.
"""

from __future__ import annotations

import mlx.core as mx


def _im2col(x: mx.array) -> mx.array:
    """(B, H, W, C) -> (B, H/2, W/2, 9C): the 3x3 windows, taps in (dy, dx) order."""
    _, h, w, _ = x.shape
    x = mx.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    views = [x[:, dy : dy + h : 2, dx : dx + w : 2, :] for dy in range(3) for dx in range(3)]
    return mx.concatenate(views, axis=-1)


def _next(a: mx.array, axis: int) -> mx.array:
    """``a`` moved one step back along ``axis`` (entry i holds a[i + 1]; the last is zero)."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(1, None)
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, 1)
    return mx.pad(a[tuple(index)], pad)


def _col2im(cols: mx.array, channels: int) -> mx.array:
    """The adjoint of :func:`_im2col`: (B, h, w, 9C) window gradients -> (B, 2h, 2w, C)."""
    b, h, w, _ = cols.shape
    taps = cols.reshape(b, h, w, 3, 3, channels)  # (..., dy, dx, C)
    even_rows = taps[:, :, :, 1]
    odd_rows = taps[:, :, :, 2] + _next(taps[:, :, :, 0], axis=1)
    rows = mx.stack([even_rows, odd_rows], axis=2)  # (B, h, 2, w, 3, C)
    even_cols = rows[..., 1, :]
    odd_cols = rows[..., 2, :] + _next(rows[..., 0, :], axis=3)
    return mx.stack([even_cols, odd_cols], axis=4).reshape(b, 2 * h, 2 * w, channels)


@mx.custom_function
def _conv3x3_stride2_even(x: mx.array, weight: mx.array) -> mx.array:
    return mx.conv2d(x, weight, stride=2, padding=1)


@_conv3x3_stride2_even.vjp
def _conv3x3_stride2_even_vjp(primals, cotangent, output):
    x, weight = primals
    out_channels, channels = weight.shape[0], weight.shape[-1]
    kernel = weight.reshape(out_channels, 9 * channels)
    dx = _col2im(cotangent @ kernel, channels)
    # The windows are recomputed rather than kept from the forward pass: cheap, and memory
    # then holds only what mx.conv2d kept.
    windows = _im2col(x).reshape(-1, 9 * channels)
    dweight = (cotangent.reshape(-1, out_channels).T @ windows).reshape(weight.shape)
    return dx, dweight


def conv3x3_stride2(x: mx.array, weight: mx.array) -> mx.array:
    """``mx.conv2d(x, weight, stride=2, padding=1)`` (NHWC, OHWI), with a fast gradient.

    Output side ``ceil(side / 2)``. Odd sides are padded by one zero row/column at the
    bottom/right first, which leaves the result unchanged.
    """
    _, h, w, _ = x.shape
    if h % 2 or w % 2:
        x = mx.pad(x, [(0, 0), (0, h % 2), (0, w % 2), (0, 0)])
    return _conv3x3_stride2_even(x, weight)
