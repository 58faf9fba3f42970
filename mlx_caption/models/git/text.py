"""GIT's text decoder: a post-LN BERT (``git.embeddings``, ``git.encoder.layer.N``) over
``[image tokens ; text tokens]``, Hugging Face parameter names.

There is no cross-attention: the projected image tokens are a prefix of the sequence. Image
tokens attend to image tokens only (bidirectionally), text tokens to every image token and
causally to the text. So the image tokens' hidden states never depend on the text: every
layer's image keys and values are computed once per image (:meth:`GitDecoderLayer.image_forward`
through the layers, see ``GitForCausalLM.decoding_memory``), and each text token then
attends over them and the cached text keys/values in one softmax
(:func:`~mlx_caption.models.layers.attend_prefixed`). transformers recomputes the prefix for
every beam instead.

The layer's pieces are BERT's (:mod:`mlx_caption.models.layers.bert`), as BLIP's decoder's
are: the embeddings, the attention's projections, the residual output and the feed-forward.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.git.config import GitTextConfig
from mlx_caption.models.layers import (
    BertAttention,
    BertIntermediate,
    BertOutput,
    BertSelfAttention,
    KVCache,
    attend_prefixed,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)

ImageKV = tuple[mx.array, mx.array]


class GitSelfAttention(BertSelfAttention):
    """BERT's ``query``/``key``/``value`` over the image prefix and the text."""

    def image_attention(self, x: mx.array, kv: ImageKV) -> mx.array:
        """Image tokens ``(B, T, D)`` over their own keys/values (no mask)."""
        q = split_heads(self.query(x), self.num_heads)
        return merge_heads(scaled_dot_product_attention(q, *kv, self.scale))

    def __call__(
        self,
        x: mx.array,
        image_kv: ImageKV,
        mask: mx.array,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        """Text tokens over the image's keys/values (one row per image, see
        :func:`attend_prefixed`) and, causally (``mask``), the text's own."""
        q = split_heads(self.query(x), self.num_heads)
        k, v = self.project_kv(x)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out, weights = attend_prefixed(q, image_kv, k, v, self.scale, mask, return_weights)
        return merge_heads(out), weights


class GitDecoderLayer(nn.Module):
    """Self-attention over the image prefix and the text, then feed-forward; each post-LN
    (transformers' ``GitLayer``)."""

    def __init__(self, cfg: GitTextConfig):
        super().__init__()
        self.attention = BertAttention(cfg, GitSelfAttention)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(
            cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps, cfg.hidden_dropout_prob
        )

    def feed_forward(self, x: mx.array) -> mx.array:
        return self.output(self.intermediate(x), x)

    def image_forward(self, x: mx.array, kv: ImageKV) -> mx.array:
        """The image tokens' next hidden states, from their keys/values ``kv`` here."""
        attention = self.attention
        return self.feed_forward(attention.output(attention.self.image_attention(x, kv), x))

    def __call__(
        self, x: mx.array, image_kv: ImageKV, **options: Any
    ) -> tuple[mx.array, mx.array | None]:
        """Text tokens' next hidden states (``options``: :class:`GitSelfAttention`'s mask,
        cache and return_weights), and their attention weights over the image if asked."""
        x, weights = self.attention(x, image_kv, **options)
        return self.feed_forward(x), weights


class GitEncoder(nn.Module):
    def __init__(self, cfg: GitTextConfig):
        super().__init__()
        self.layer = [GitDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)]
