"""How pixels become a ViT's patch tokens: the usual patch projection, or a conv stem."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.layers.conv import conv3x3_stride2
from mlx_caption.models.layers.linear import Linear
from mlx_caption.models.layers.norm import LayerNorm


class PatchEmbedding(nn.Module):
    """Stride-``p`` convolution, run as one matmul over flattened patches.

    The kernel is stored OHWI (``(D, p, p, C)``) like an MLX ``Conv2d``; because the patches
    do not overlap, reshaping the NHWC image into ``(B*N, p*p*C)`` rows and multiplying by
    the flattened kernel gives the same result as ``conv2d`` and is faster on the CPU.
    """

    def __init__(self, channels: int, dim: int, patch: int, bias: bool = False):
        super().__init__()
        self.patch = patch
        scale = 1.0 / math.sqrt(channels * patch * patch)
        self.weight = mx.random.uniform(-scale, scale, (dim, patch, patch, channels))
        if bias:
            self.bias = mx.zeros((dim,))

    def __call__(self, x: mx.array) -> mx.array:
        b, h, w, c = x.shape
        p = self.patch
        gh, gw = h // p, w // p
        if h % p or w % p:
            x = x[:, : gh * p, : gw * p]  # a stride-p convolution ignores the leftover border
        x = x.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, gh * gw, p * p * c)
        out = x @ self.weight.reshape(self.weight.shape[0], -1).T
        return out + self.bias if "bias" in self else out


class Conv3x3Stride2(nn.Module):
    """3x3 convolution, stride 2, padding 1 (NHWC), kernel stored OHWI like an MLX ``Conv2d``.

    Equals ``mx.conv2d(x, weight, stride=2, padding=1) + bias``; the gradient is hand-written
    (:func:`mlx_caption.models.layers.conv.conv3x3_stride2`) because MLX's is slow on the CPU.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # He initialisation: the stem's layers are followed by ReLU.
        std = math.sqrt(2.0 / (9 * in_channels))
        self.weight = mx.random.normal((out_channels, 3, 3, in_channels)) * std
        self.bias = mx.zeros((out_channels,))

    def __call__(self, x: mx.array) -> mx.array:
        return conv3x3_stride2(x, self.weight) + self.bias


class ConvStem(nn.Module):
    """Early convolutions in place of the patch projection (Xiao et al., 2021).

    ``log2(patch)`` 3x3 stride-2 convolutions with ReLU halve the image down to the patch grid
    (channel widths double up to ``dim``), then a linear map and a LayerNorm give the tokens.
    The same grid and token count as :class:`PatchEmbedding`, but translation-equivariant
    features from the first layer: a ViT trained from scratch on small images learns shapes
    in a fraction of the steps the patch projection needs.
    """

    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        depth = patch.bit_length() - 1
        if patch < 2 or 1 << depth != patch:
            raise ValueError(f"stem: conv needs a power-of-two patch_size, not {patch}")
        widths = [max(16, dim >> (depth - 1 - i)) for i in range(depth)]
        ins = [channels, *widths[:-1]]
        self.convs = [Conv3x3Stride2(a, b) for a, b in zip(ins, widths, strict=True)]
        self.proj = Linear(widths[-1], dim)
        self.norm = LayerNorm(dim)

    def __call__(self, x: mx.array) -> mx.array:
        for conv in self.convs:
            x = nn.relu(conv(x))
        b, gh, gw, c = x.shape
        return self.norm(self.proj(x.reshape(b, gh * gw, c)))


STEMS = {"patch": PatchEmbedding, "conv": ConvStem}
