"""MLX-native ViT with Hugging Face parameter names (the checkpoints' names).

Same computation as transformers' ``ViTModel``: patch embedding (with a bias), class token,
learned positions, pre-LN blocks (``layernorm_before``, attention, ``layernorm_after``, MLP as
``intermediate.dense`` and ``output.dense``), a final ``layernorm`` over every token and,
when the checkpoint has it, the ``pooler`` (dense + tanh on the class token).

The embeddings and the attention (``attention.attention.query/key/value``,
``attention.output.dense``) are DINOv2's too; ``models/dinov2`` builds on them.
transformers 5 renames these in memory (``layers.N.attention.q_proj``, ``mlp.fc1``) while the
checkpoints keep the names used here; ``sanitize`` reads both.
"""

from __future__ import annotations

import re
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.base import VisionEncoder, VisionOutput, sanitize_state
from mlx_caption.models.layers import (
    PatchEmbedding,
    activation,
    merge_heads,
    resize_positions,
    scaled_dot_product_attention,
    split_heads,
)
from mlx_caption.models.layers.linear import Linear
from mlx_caption.models.layers.norm import LayerNorm
from mlx_caption.models.vit.config import ViTConfig

PATCH_KEY = "embeddings.patch_embeddings.projection.weight"
# Keys a ViT checkpoint may carry that the encoder does not use: the masked-image-modelling
# token, an image classifier's head.
DROP_PREFIXES = ("embeddings.mask_token", "classifier.")

# transformers 5's in-memory names -> the checkpoints' (what this module and the hub use).
_ATTENTION_RENAMES = {
    "q": "attention.query",
    "k": "attention.key",
    "v": "attention.value",
    "o": "output.dense",
}
_ATTENTION_PATTERN = re.compile(r"\.attention\.([qkvo])_proj\.")
_MLP_RENAMES = {".mlp.fc1.": ".intermediate.dense.", ".mlp.fc2.": ".output.dense."}


def checkpoint_attention_name(key: str) -> str:
    """A transformers 5 attention key (``attention.q_proj``) under its checkpoint name
    (``attention.attention.query``); other keys are returned unchanged."""
    return _ATTENTION_PATTERN.sub(lambda m: f".attention.{_ATTENTION_RENAMES[m.group(1)]}.", key)


def hf_key_to_ours(key: str) -> str | None:
    """This module's name for a ViT key, as saved or as transformers 5 holds it in memory
    (None: a tensor the encoder does not use)."""
    key = key.removeprefix("vit.")  # ViTForImageClassification
    if key.startswith(DROP_PREFIXES):
        return None
    key = re.sub(r"^layers\.(\d+)\.", r"encoder.layer.\1.", key)
    for new, old in _MLP_RENAMES.items():
        key = key.replace(new, old)
    return checkpoint_attention_name(key)


class Dense(nn.Module):
    """A ``dense`` Linear (HF nests it one level down: ``output.dense``)."""

    def __init__(self, in_dims: int, out_dims: int):
        super().__init__()
        self.dense = Linear(in_dims, out_dims)


class PatchProjection(nn.Module):
    """``patch_embeddings.projection``: the patch convolution, with a bias."""

    def __init__(self, channels: int, dims: int, patch: int):
        super().__init__()
        self.projection = PatchEmbedding(channels, dims, patch, bias=True)


class ViTEmbeddings(nn.Module):
    """Class token, then the patches, plus learned positions resized (bicubic; antialiased
    for DINOv2 with registers) to the input's grid; ``register_tokens`` go after the class
    token, without positions."""

    def __init__(self, cfg: Any, register_tokens: int = 0, antialias: bool = False):
        super().__init__()
        d = cfg.hidden_size
        self.patch_size = cfg.patch_size
        self.antialias = antialias
        self.cls_token = mx.zeros((1, 1, d))
        self.patch_embeddings = PatchProjection(cfg.num_channels, d, cfg.patch_size)
        grid = cfg.image_size // cfg.patch_size
        self.position_embeddings = mx.zeros((1, grid * grid + 1, d))
        if register_tokens:
            self.register_tokens = mx.zeros((1, register_tokens, d))

    def __call__(self, pixels: mx.array) -> mx.array:
        b, h, w, _ = pixels.shape
        patches = self.patch_embeddings.projection(pixels)
        d = patches.shape[-1]
        cls = mx.broadcast_to(self.cls_token.astype(patches.dtype), (b, 1, d))
        grid = (h // self.patch_size, w // self.patch_size)
        table = self.position_embeddings[0]
        positions = resize_positions(table, grid, prefix=1, antialias=self.antialias)
        x = mx.concatenate([cls, patches], axis=1) + positions
        if "register_tokens" in self:
            registers = self.register_tokens.astype(x.dtype)
            registers = mx.broadcast_to(registers, (b, *registers.shape[1:]))
            x = mx.concatenate([x[:, :1], registers, x[:, 1:]], axis=1)
        return x


class SelfAttentionProjections(nn.Module):
    """``attention.attention``: the query, key and value projections."""

    def __init__(self, dims: int, bias: bool):
        super().__init__()
        self.query = Linear(dims, dims, bias=bias)
        self.key = Linear(dims, dims, bias=bias)
        self.value = Linear(dims, dims, bias=bias)


class ViTAttention(nn.Module):
    """ViT's (and DINOv2's) self-attention under its HF names, over the shared attention core."""

    def __init__(self, dims: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f"width {dims} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dims // num_heads) ** -0.5
        self.attention = SelfAttentionProjections(dims, qkv_bias)
        self.output = Dense(dims, dims)

    def project_qkv(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Queries, keys and values ``(B, H, L, hd)`` of ``x``."""
        p = self.attention
        q, k, v = (split_heads(proj(x), self.num_heads) for proj in (p.query, p.key, p.value))
        return q, k, v

    def attend_heads(self, q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        """``(B, L, dims)``: the queries attend over the keys/values, projected out."""
        return self.output.dense(merge_heads(scaled_dot_product_attention(q, k, v, self.scale)))

    def __call__(self, x: mx.array) -> mx.array:
        return self.attend_heads(*self.project_qkv(x))


class ViTLayer(nn.Module):
    """Pre-LN block: x + attention(layernorm_before(x)), then x + MLP(layernorm_after(x))."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.attention = ViTAttention(d, cfg.num_attention_heads, cfg.qkv_bias)
        self.layernorm_before = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.layernorm_after = LayerNorm(d, eps=cfg.layer_norm_eps)
        # The MLP under HF's names: intermediate.dense -> activation -> output.dense.
        self.act = activation(cfg.hidden_act)
        self.intermediate = Dense(d, cfg.intermediate_size)
        self.output = Dense(cfg.intermediate_size, d)

    def attention_qkv(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """The attention's queries, keys and values of these tokens (see PreNormBlock)."""
        return self.attention.project_qkv(self.layernorm_before(x))

    def finish(self, x: mx.array, q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        """The block's output for tokens ``x`` whose queries ``q`` attend over ``k``/``v``."""
        x = x + self.attention.attend_heads(q, k, v)
        h = self.act(self.intermediate.dense(self.layernorm_after(x)))
        return x + self.output.dense(h)

    def __call__(self, x: mx.array) -> mx.array:
        return self.finish(x, *self.attention_qkv(x))


class Encoder(nn.Module):
    """The blocks, under HF's name ``encoder.layer``."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.layer = blocks

    @property
    def layers(self) -> list[nn.Module]:
        return self.layer


class ViTModel(VisionEncoder):
    """ViT over NHWC float pixels; ``model.config`` is its :class:`ViTConfig`."""

    # Fine-tuning rules (see models.base.set_encoder_trainable): the final layernorm trains
    # with any block; the pooler is off the captioning path, which reads the token grid.
    after_blocks = ("layernorm",)

    def __init__(self, cfg: ViTConfig):
        super().__init__(cfg)
        self.embeddings = ViTEmbeddings(cfg)
        self.encoder = Encoder([ViTLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.layernorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if cfg.add_pooling_layer:
            self.pooler = Dense(cfg.hidden_size, cfg.pooler_output_size or cfg.hidden_size)

    @property
    def never_trained(self) -> list[str]:
        """Parameters fine-tuning leaves alone: the pooler and the key biases."""
        return (["pooler"] if "pooler" in self else []) + key_biases(self)

    def __call__(self, pixels: mx.array, output_hidden_states: bool = False) -> VisionOutput:
        """Encode NHWC pixels of any size of at least one patch (positions resized to the
        grid, bicubic, as transformers' ``interpolate_pos_encoding``)."""
        x, hidden = self.run_blocks(self.embeddings(pixels), output_hidden_states)
        x = self.layernorm(x)
        pooled = mx.tanh(self.pooler.dense(x[:, 0])) if "pooler" in self else None
        return VisionOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden)

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Map HF ViT tensors to this module's names; running it twice changes nothing.

        Reads a ``ViTModel`` checkpoint (or transformers 5's in-memory names), the ``vit.``
        of a ``ViTForImageClassification``, and the ``encoder.`` half of a
        ``VisionEncoderDecoderModel`` (ViT-GPT2: its decoder's tensors are dropped). The patch
        kernel goes from OIHW into OHWI.
        """
        if any(k.startswith("encoder.embeddings.") for k in weights):
            encoder = {k: v for k, v in weights.items() if k.startswith("encoder.")}
            weights = {k.removeprefix("encoder."): v for k, v in encoder.items()}
        return sanitize_state(weights, hf_key_to_ours, PATCH_KEY)


def key_biases(model: nn.Module) -> list[str]:
    """The key-projection biases of a ViT-style model's blocks (their gradient is zero)."""
    if not model.config.qkv_bias:
        return []
    return [f"encoder.layer.{i}.attention.attention.key.bias" for i in range(len(model.layers))]
