"""GPT-2 with cross-attention to the image in every block (the decoder of ViT-GPT2), with
Hugging Face's parameter names (``transformer.wte/wpe/h.N/ln_f``; in each block ``ln_1``,
``attn``, ``ln_cross_attn``, ``crossattention``, ``ln_2``, ``mlp``). GPT-2's ``Conv1D``
projections are ``nn.Linear`` here (``sanitize`` transposes their weights); the LM head is
the word embeddings (tied), so it holds no parameter of its own.

It speaks the generation engine's protocol through
:class:`~mlx_caption.models.cross_decoder.CrossAttentionDecoder`.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.models.base import PretrainedCaptionerConfig
from mlx_caption.models.cross_decoder import CrossAttentionDecoder
from mlx_caption.models.layers import KVCache, activation, attend, merge_heads
from mlx_caption.models.layers import split_heads as heads
from mlx_caption.models.layers.linear import Linear, linear
from mlx_caption.models.layers.norm import LayerNorm
from mlx_caption.models.vit_gpt2.config import GPT2Config
from mlx_caption.tokens import SpecialTokens


def attention_scale(cfg: GPT2Config, layer_idx: int) -> float:
    """GPT-2's score scale: ``1/sqrt(head_dim)`` if ``scale_attn_weights``, divided by
    ``layer_idx + 1`` if ``scale_attn_by_inverse_layer_idx`` (both attentions of a block)."""
    scale = (cfg.n_embd // cfg.n_head) ** -0.5 if cfg.scale_attn_weights else 1.0
    if cfg.scale_attn_by_inverse_layer_idx:
        scale /= layer_idx + 1
    return scale


class GPT2Attention(nn.Module):
    """GPT-2's attention: fused ``c_attn`` (query, key, value; or key and value of the image
    for cross-attention, whose query is ``q_attn``) and the output ``c_proj``."""

    def __init__(self, cfg: GPT2Config, layer_idx: int, cross: bool = False):
        super().__init__()
        d = cfg.n_embd
        self.num_heads = cfg.n_head
        self.scale = attention_scale(cfg, layer_idx)
        self.upcast = cfg.reorder_and_upcast_attn
        if cross:
            self.q_attn = Linear(d, d)
        self.c_attn = Linear(d, (2 if cross else 3) * d)
        self.c_proj = Linear(d, d)
        self.resid_dropout = nn.Dropout(cfg.resid_pdrop)

    def project_kv(self, source: mx.array) -> tuple[mx.array, mx.array]:
        """Cross-attention keys and values ``(B, H, S, hd)`` of ``(B, S, d)`` image tokens."""
        k, v = mx.split(self.c_attn(source), 2, axis=-1)
        return heads(k, self.num_heads), heads(v, self.num_heads)

    def __call__(self, x: mx.array, mask: mx.array | str, cache: KVCache | None = None) -> mx.array:
        """Causal self-attention (``mask``: ``"causal"``, or the cache's mask when the new keys
        and values are written into ``cache``)."""
        q, k, v = (heads(t, self.num_heads) for t in mx.split(self.c_attn(x), 3, axis=-1))
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        return self.attend(x, q, k, v, mask)[0]

    def attend_image(
        self, x: mx.array, kv: tuple[mx.array, mx.array], return_weights: bool = False
    ) -> tuple[mx.array, mx.array | None]:
        """Cross-attention over the image's precomputed keys and values (:meth:`project_kv`);
        the output and, if asked, the weights."""
        return self.attend(x, heads(self.q_attn(x), self.num_heads), *kv, None, return_weights)

    def attend(
        self,
        x: mx.array,
        q: mx.array,
        k: mx.array,
        v: mx.array,
        mask: mx.array | str | None,
        return_weights: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        if self.upcast:  # reorder_and_upcast_attn: scores and softmax in float32
            q, k, v = (t.astype(mx.float32) for t in (q, k, v))
        out, weights = attend(q, k, v, self.scale, mask, return_weights)
        out = self.c_proj(merge_heads(out).astype(x.dtype))
        return self.resid_dropout(out), weights


class GPT2MLP(nn.Module):
    """``c_proj(act(c_fc(x)))`` under GPT-2's names, then the residual dropout."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = Linear(cfg.n_embd, cfg.inner_size)
        self.c_proj = Linear(cfg.inner_size, cfg.n_embd)
        self.act = activation(cfg.activation_function)
        self.dropout = nn.Dropout(cfg.resid_pdrop)

    def __call__(self, x: mx.array) -> mx.array:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPT2Block(nn.Module):
    """Pre-LN: causal self-attention, cross-attention to the image, MLP; each residual."""

    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        d, eps = cfg.n_embd, cfg.layer_norm_epsilon
        self.ln_1 = LayerNorm(d, eps=eps)
        self.attn = GPT2Attention(cfg, layer_idx)
        self.ln_cross_attn = LayerNorm(d, eps=eps)
        self.crossattention = GPT2Attention(cfg, layer_idx, cross=True)
        self.ln_2 = LayerNorm(d, eps=eps)
        self.mlp = GPT2MLP(cfg)

    def __call__(
        self,
        x: mx.array,
        image_kv: tuple[mx.array, mx.array],
        mask: mx.array | str,
        cache: KVCache | None = None,
        return_attention: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        """The block on ``x``; the image's keys and values ``image_kv`` come from
        :meth:`GPT2Attention.project_kv`. Also the cross-attention weights if asked."""
        x = x + self.attn(self.ln_1(x), mask, cache)
        h, weights = self.crossattention.attend_image(
            self.ln_cross_attn(x), image_kv, return_attention
        )
        x = x + h
        return x + self.mlp(self.ln_2(x)), weights


class GPT2Model(nn.Module):
    """``transformer``: token and position embeddings, the blocks, the final ``ln_f``."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.h = [GPT2Block(cfg, i) for i in range(cfg.n_layer)]
        self.ln_f = LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)


class GPT2LMHeadModel(CrossAttentionDecoder):
    """The decoder: ``transformer`` and the LM head (its word embeddings, tied).

    ``decoder(tokens, image_tokens)`` gives teacher-forced logits ``(B, L, vocab)`` (the image
    tokens already at the decoder's width); the generation protocol comes from
    :class:`~mlx_caption.models.cross_decoder.CrossAttentionDecoder`.
    """

    def __init__(self, cfg: GPT2Config, defaults: PretrainedCaptionerConfig):
        # Captions start with the decoder start token and end with eos (both <|endoftext|> in
        # ViT-GPT2, which also pads). GPT-2's unknown token is <|endoftext|> too: none is
        # declared, so banning the unknown token never bans the end. transformers suppresses
        # no token here, and neither do we.
        special = SpecialTokens(
            start=(cfg.decoder_start_token_id,), end=cfg.eos_token_id, pad=cfg.pad_token_id
        )
        super().__init__(special, cfg.vocab_size, cfg.n_positions, defaults)
        self.config = cfg
        self.transformer = GPT2Model(cfg)

    @property
    def layers(self) -> list[GPT2Block]:
        return self.transformer.h

    @property
    def attention_shape(self) -> tuple[int, int]:
        return self.config.n_head, self.config.n_embd // self.config.n_head

    def cross_attention(self, layer: GPT2Block) -> GPT2Attention:
        return layer.crossattention

    def embed(self, tokens: mx.array, offset: int | mx.array) -> mx.array:
        t = self.transformer
        return t.drop(t.wte(tokens) + t.wpe(mx.arange(tokens.shape[1]) + offset))

    def head(self, x: mx.array) -> mx.array:
        return linear(self.transformer.ln_f(x), self.transformer.wte.weight)
