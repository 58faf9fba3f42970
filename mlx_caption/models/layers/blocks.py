"""The pre-LN transformer block of the ViT families, with Hugging Face's names, and the
blocks' forward pass with one image's tokens split over CPU streams.

Every encoder block (this one, ViT's and DINOv2's) is written in two halves:
``attention_qkv(x)``, the queries, keys and values of its tokens, and ``finish(x, q, k, v)``,
the rest of the block for those tokens, their queries attending over ``k``/``v``. Only the
attention core needs every token's keys and values; the rest is row by row. So
:func:`blocks_over_token_streams` can run each half on a share of the tokens per CPU stream,
joining only the keys and values once per block.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from mlx_caption import backend
from mlx_caption.models.layers.mlp import MLP
from mlx_caption.models.layers.norm import LayerNorm


class PreNormBlock(nn.Module):
    """``x + self_attn(layer_norm1(x))``, then ``x + mlp(layer_norm2(x))``.

    Args:
        attention: the family's self-attention (its projections keep their own names:
            CLIP's ``q_proj``..., BLIP's fused ``qkv``), with ``project_qkv`` and
            ``attend_heads``.
        dims, hidden: the width and the MLP's hidden width.
        act: the MLP activation's Hugging Face name.
        eps: the LayerNorms' epsilon.
    """

    def __init__(self, attention: nn.Module, dims: int, hidden: int, act: str, eps: float):
        super().__init__()
        self.self_attn = attention
        self.layer_norm1 = LayerNorm(dims, eps=eps)
        self.mlp = MLP(dims, hidden, act)
        self.layer_norm2 = LayerNorm(dims, eps=eps)

    def attention_qkv(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """The attention's queries, keys and values ``(B, H, L, hd)`` of these tokens."""
        return self.self_attn.project_qkv(self.layer_norm1(x))

    def finish(self, x: mx.array, q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        """The block's output for tokens ``x`` whose queries ``q`` attend over ``k``/``v``
        (every token's, when the tokens were split)."""
        x = x + self.self_attn.attend_heads(q, k, v)
        return x + self.mlp(self.layer_norm2(x))

    def __call__(self, x: mx.array) -> mx.array:
        return self.finish(x, *self.attention_qkv(x))


# Splitting one image's tokens pays where the attention core and the element-wise ops (one
# core each) weigh most against the matmuls (which use every core anyway): many tokens for
# the width. Batch 1, 2 cores, against the blocks run whole: DINOv2-S (257 tokens, 384 wide)
# 1.09-1.10x, DINOv2-B (257 / 768) 1.05x, ViT-B/16 at 384 px (577 / 768) 1.16x, DINOv2-B at
# 384 px (730 / 768) 1.17x; ViT-B/16 (197 / 768) 0.99-1.01x, ViT-L/14 (257 / 1024) 0.98x.
MIN_TOKENS_PER_WIDTH = 0.3


def worth_splitting_tokens(x: mx.array) -> bool:
    """Whether ``x``'s (B, L, D) tokens are many enough for their width to split them over
    streams (:data:`MIN_TOKENS_PER_WIDTH`)."""
    return x.shape[1] >= MIN_TOKENS_PER_WIDTH * x.shape[2]


def blocks_over_token_streams(
    layers: Sequence[nn.Module], x: mx.array, streams: Sequence, hidden: list | None = None
) -> mx.array:
    """``x`` (B, L, D) through ``layers``, each block's tokens split over ``streams``; evaluated.

    For one image on a multi-core CPU, where splitting the batch has nothing to split: each
    stream takes a contiguous share of the tokens with a share of the BLAS's threads, and
    runs both halves of every block on it (see the module docstring); the keys and values
    are joined on the first stream. The streams' work is queued half-block by half-block
    (``mx.async_eval``): queued as one graph, MLX would run one stream's work to its end
    before starting the other's. The values are those of the blocks run whole. With
    ``hidden``, every block's output is appended to it. For inference: nothing may
    differentiate through the result.
    """
    mx.eval(x)  # what came before runs with every BLAS thread
    ranges = backend.row_ranges(x.shape[1], len(streams))
    streams = streams[: len(ranges)]
    chunks = [x[:, start:stop] for start, stop in ranges]
    with backend.blas_threads(backend.threads_per_part(len(streams))):
        for layer in layers:
            qkv = []
            for stream, chunk in zip(streams, chunks, strict=True):
                with mx.stream(stream):
                    qkv.append(layer.attention_qkv(chunk))
            mx.async_eval([t for _, k, v in qkv for t in (k, v)])
            with mx.stream(streams[0]):
                k = mx.concatenate([t[1] for t in qkv], axis=2)
                v = mx.concatenate([t[2] for t in qkv], axis=2)
            finished = []
            for stream, chunk, (q, _, _) in zip(streams, chunks, qkv, strict=True):
                with mx.stream(stream):
                    finished.append(layer.finish(chunk, q, k, v))
            chunks = finished
            mx.async_eval(chunks)
            if hidden is not None:
                with mx.stream(streams[0]):
                    hidden.append(mx.concatenate(chunks, axis=1))
        out = mx.concatenate(chunks, axis=1)
        mx.eval(out, hidden or [])
    return out
