"""MLX-native CLIP vision transformer with Hugging Face parameter names.

Same computation as ``transformers``' ``CLIPVisionModel`` (and ``...WithProjection``):
patch embedding, class token, learned positions, ``pre_layrnorm``, pre-LN encoder blocks,
``post_layernorm`` on the class token, optional ``visual_projection``. Parameter names are
HF's with the ``vision_model.`` prefix removed, so a converted checkpoint loads with
``load_weights`` and no renaming. The only layout change is the patch-embedding kernel,
stored OHWI because the input is NHWC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from mlx_caption import backend
from mlx_caption.config import VisionConfig
from mlx_caption.models.activations import ACTIVATIONS, softmax
from mlx_caption.models.conv import conv3x3_stride2


@dataclass
class VisionOutput:
    """What :class:`VisionTransformer` returns (the fields of HF's vision model output)."""

    last_hidden_state: mx.array  # (B, T, D), T = 1 + patches
    pooler_output: mx.array  # (B, D): post_layernorm(class token)
    image_embeds: mx.array | None = None  # (B, P) when the model has a visual_projection
    hidden_states: tuple[mx.array, ...] | None = None  # pre_layrnorm output + every layer's


class PatchEmbedding(nn.Module):
    """Stride-``p`` convolution without bias, run as one matmul over flattened patches.

    The kernel is stored OHWI (``(D, p, p, C)``) like an MLX ``Conv2d``; because the patches
    do not overlap, reshaping the NHWC image into ``(B*N, p*p*C)`` rows and multiplying by
    the flattened kernel gives the same result as ``conv2d`` and is faster on the CPU.
    """

    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        scale = 1.0 / math.sqrt(channels * patch * patch)
        self.weight = mx.random.uniform(-scale, scale, (dim, patch, patch, channels))

    def __call__(self, x: mx.array) -> mx.array:
        b, h, w, c = x.shape
        p = self.patch
        gh, gw = h // p, w // p
        x = x.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, gh * gw, p * p * c)
        return x @ self.weight.reshape(self.weight.shape[0], -1).T


class Conv3x3Stride2(nn.Module):
    """3x3 convolution, stride 2, padding 1 (NHWC), kernel stored OHWI like an MLX ``Conv2d``.

    Equals ``mx.conv2d(x, weight, stride=2, padding=1) + bias``; the gradient is hand-written
    (:func:`mlx_caption.models.conv.conv3x3_stride2`) because MLX's is slow on the CPU.
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
    in a fraction of the steps (on the synthetic shapes, single-object shape accuracy went
    from 40% to 90% at 400 steps).
    """

    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        depth = patch.bit_length() - 1
        if patch < 2 or 1 << depth != patch:
            raise ValueError(f"stem: conv needs a power-of-two patch_size, not {patch}")
        widths = [max(16, dim >> (depth - 1 - i)) for i in range(depth)]
        ins = [channels, *widths[:-1]]
        self.convs = [Conv3x3Stride2(a, b) for a, b in zip(ins, widths, strict=True)]
        self.proj = nn.Linear(widths[-1], dim)
        self.norm = nn.LayerNorm(dim)

    def __call__(self, x: mx.array) -> mx.array:
        for conv in self.convs:
            x = nn.relu(conv(x))
        b, gh, gw, c = x.shape
        return self.norm(self.proj(x.reshape(b, gh * gw, c)))


STEMS = {"patch": PatchEmbedding, "conv": ConvStem}


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if cfg.stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, not {cfg.stem!r}")
        self.image_size = cfg.image_size
        self.class_embedding = mx.zeros((cfg.hidden_size,))
        self.patch_embedding = STEMS[cfg.stem](cfg.num_channels, cfg.hidden_size, cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_tokens, cfg.hidden_size)

    def __call__(self, pixels: mx.array) -> mx.array:
        b, h, w, _ = pixels.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(
                f"input is {h}x{w} but the model expects {self.image_size}x{self.image_size}"
            )
        patches = self.patch_embedding(pixels)
        cls = mx.broadcast_to(self.class_embedding.astype(patches.dtype), (b, 1, patches.shape[-1]))
        return mx.concatenate([cls, patches], axis=1) + self.position_embedding.weight


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (HF names)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden_size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape
        h = self.heads

        def split(y: mx.array) -> mx.array:
            return y.reshape(b, t, h, d // h).transpose(0, 2, 1, 3)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if backend.on_gpu():
            o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            # On the CPU the fused kernel falls back to matmul + mx.softmax, whose scalar exp
            # made the attention core 2x slower than this (see bench/ops.py).
            o = softmax((q * self.scale) @ k.swapaxes(-1, -2)) @ v
        return self.out_proj(o.transpose(0, 2, 1, 3).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {act!r}; expected one of {list(ACTIVATIONS)}")
        self.act = ACTIVATIONS[act]
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        d = cfg.hidden_size
        self.self_attn = Attention(d, cfg.num_attention_heads)
        self.layer_norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = MLP(d, cfg.intermediate_size, cfg.hidden_act)
        self.layer_norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layers = [EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)]


def _checkpointed(layer: EncoderLayer, x: mx.array) -> mx.array:
    """Run ``layer`` under ``mx.checkpoint``: activations are recomputed in the backward pass.

    The parameters go in as explicit inputs so gradients still reach them.
    """

    def inner(params, y):
        layer.update(params)
        return EncoderLayer.__call__(layer, y)

    return mx.checkpoint(inner)(layer.trainable_parameters(), x)


def sincos_position_embedding(grid: int, dim: int) -> mx.array:
    """2-D sine-cosine positions for a ``grid x grid`` patch grid, class token first (zeros).

    Half the channels encode the row, half the column, each as sines and cosines of
    geometrically spaced frequencies (as in MAE). Used to initialise a ViT trained from
    scratch: the position embedding then starts out knowing which patches are neighbours,
    which a random init has to learn.
    """
    import numpy as np

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


class VisionTransformer(nn.Module):
    """CLIP ViT over NHWC float pixels; ``model.config`` is its :class:`VisionConfig`.

    ``grad_checkpoint = True`` recomputes each block's activations in the backward pass
    (only while ``model.training``), trading compute for memory when fine-tuning.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.config = cfg
        self.grad_checkpoint = False
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if cfg.projection_dim:
            self.visual_projection = nn.Linear(cfg.hidden_size, cfg.projection_dim, bias=False)

    def init_sincos_positions(self) -> None:
        """Reset the position embedding to 2-D sine-cosine values (for training from scratch)."""
        grid = self.config.image_size // self.config.patch_size
        self.embeddings.position_embedding.weight = sincos_position_embedding(
            grid, self.config.hidden_size
        )

    @property
    def layers(self) -> list[EncoderLayer]:
        """The encoder blocks, first to last (for freezing the first N)."""
        return self.encoder.layers

    def __call__(self, pixels: mx.array, output_hidden_states: bool = False) -> VisionOutput:
        x = self.pre_layrnorm(self.embeddings(pixels))
        hidden = [x] if output_hidden_states else None
        checkpoint = self.grad_checkpoint and self.training
        for layer in self.encoder.layers:
            x = _checkpointed(layer, x) if checkpoint else layer(x)
            if hidden is not None:
                hidden.append(x)
        pooled = self.post_layernorm(x[:, 0])
        embeds = self.visual_projection(pooled) if "visual_projection" in self else None
        return VisionOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            image_embeds=embeds,
            hidden_states=tuple(hidden) if hidden is not None else None,
        )
