"""Layers every model family shares: attention and its KV cache, the MLP, the pre-LN block,
BERT's post-LN pieces, Linear, LayerNorm, activations, patch stems and position embeddings. A family folder
builds its modules from these."""

from mlx_caption.models.layers.activations import ACTIVATIONS, gelu_tanh, softmax
from mlx_caption.models.layers.attention import (
    KVCache,
    MultiHeadAttention,
    attend,
    attend_prefixed,
    attention_weights,
    causal_mask,
    combine_masks,
    key_padding_mask,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from mlx_caption.models.layers.bert import (
    BertAttention,
    BertEmbeddings,
    BertIntermediate,
    BertOutput,
    BertSelfAttention,
)
from mlx_caption.models.layers.blocks import PreNormBlock
from mlx_caption.models.layers.linear import Linear, linear
from mlx_caption.models.layers.mlp import MLP, activation
from mlx_caption.models.layers.norm import LayerNorm, layer_norm
from mlx_caption.models.layers.positions import (
    bicubic_matrix,
    resize_grid,
    resize_positions,
    sincos_position_embedding,
)
from mlx_caption.models.layers.stems import STEMS, ConvStem, PatchEmbedding

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "activation",
    "BertAttention",
    "BertEmbeddings",
    "BertIntermediate",
    "BertOutput",
    "BertSelfAttention",
    "STEMS",
    "ConvStem",
    "KVCache",
    "LayerNorm",
    "Linear",
    "MultiHeadAttention",
    "PatchEmbedding",
    "PreNormBlock",
    "attend",
    "attend_prefixed",
    "attention_weights",
    "bicubic_matrix",
    "causal_mask",
    "combine_masks",
    "gelu_tanh",
    "key_padding_mask",
    "layer_norm",
    "linear",
    "merge_heads",
    "resize_grid",
    "resize_positions",
    "scaled_dot_product_attention",
    "sincos_position_embedding",
    "softmax",
    "split_heads",
]
