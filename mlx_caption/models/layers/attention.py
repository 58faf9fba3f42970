"""Multi-head attention written out (q, k, v, out projections), its masks and a KV cache.

:func:`scaled_dot_product_attention` is the one attention core every model uses, whatever its
projections are called. :class:`MultiHeadAttention` (Hugging Face's ``q_proj``/``k_proj``/
``v_proj``/``out_proj`` names) serves the CLIP-style encoders' self-attention, the decoder's
causal self-attention and its cross-attention to the image tokens (``kv_dims`` may differ
from the query width). Masks are boolean "may attend" arrays broadcastable to
``(B, heads, L_query, L_key)``; combining booleans first and turning them into scores once
avoids the ``-inf + -inf`` and all-masked-row NaNs of additive masks.

The KV cache preallocates fixed-size buffers and writes each step at an offset. Attention
then always runs over the whole buffer, with the unwritten slots masked, so every decoding
step has the same shapes: ``mx.compile`` traces the step once instead of once per length,
and the cost of the few extra masked keys is negligible next to the projections. Measured
on the CPU, eager, preallocated and concatenated caches cost the same, and compiling the
fixed-shape step saves about a quarter, which a concatenating cache (new shapes every step)
cannot get.
"""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import mlx.nn as nn

from mlx_caption import backend
from mlx_caption.models.layers.activations import softmax, softmax_numerators
from mlx_caption.models.layers.linear import Linear


def causal_mask(
    query_length: int, key_length: int | None = None, offset: int | mx.array = 0
) -> mx.array:
    """Boolean ``(L_query, L_key)`` mask: query ``i`` (absolute position ``offset + i``)
    may attend key ``j`` iff ``j <= offset + i``.

    With a preallocated cache ``key_length`` is the buffer length, and the same rule hides
    the slots not written yet (they lie after every query position).
    """
    key_length = query_length if key_length is None else key_length
    query_pos = mx.arange(query_length) + offset
    return mx.arange(key_length)[None, :] <= query_pos[:, None]


def key_padding_mask(keep: mx.array) -> mx.array:
    """``(B, L_key)`` booleans (True = a real token) -> ``(B, 1, 1, L_key)`` mask."""
    return keep.astype(mx.bool_)[:, None, None, :]


def combine_masks(*masks: mx.array | None) -> mx.array | None:
    """Logical AND of boolean masks (``None`` entries are ignored); ``None`` if all are."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else mx.logical_and(out, m)
    return out


def _mask_scores(scores: mx.array, mask: mx.array | None) -> mx.array:
    if mask is None:
        return scores
    if mask.dtype == mx.bool_:
        return mx.where(mask, scores, mx.finfo(scores.dtype).min)
    return scores + mask.astype(scores.dtype)


# On the CPU the batch is attended in chunks whose scores take about this many bytes (one
# core's L2 on the x86 servers measured): small enough to stay in cache between the passes
# that write and read them (scores, row max, exponentials, row sums, weighted sum), large
# enough that the per-op overhead of many chunks stays small. A quarter of this made a
# caption decoder's training step (hundreds of short captions, each a small score block)
# spend more on per-chunk ops and their gradients than the cache saved.
CHUNK_BYTES = 1 << 21


def scaled_dot_product_attention(
    q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | str | None = None
) -> mx.array:
    """``softmax(q k^T * scale + mask) v`` over ``(B, H, L, head_dim)`` arrays.

    ``mask`` is boolean (True = may attend), additive, or ``"causal"``. On a GPU this is MLX's
    fused kernel. On the CPU that kernel is a matmul and ``mx.softmax`` with its scalar
    ``exp``; here instead, per chunk of the batch (:data:`CHUNK_BYTES`): the exponentials
    from the vectorised polynomial of :mod:`~mlx_caption.models.layers.activations`, the
    weighted sum of the unnormalised ones divided by their row sums afterwards (a pass over
    ``L_query x head_dim`` values instead of ``L_query x L_key``), and the gradient written
    out (see :func:`_attention_vjp`).
    """
    if backend.on_gpu():
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    if isinstance(mask, str):
        mask = causal_mask(q.shape[2], k.shape[2], k.shape[2] - q.shape[2])
    if q.dtype != mx.float32:
        return softmax(_mask_scores((q * scale) @ k.swapaxes(-1, -2), mask)) @ v
    return _chunked_attention(q, k, v, float(scale), mask)


def _chunked_attention(
    q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None
) -> mx.array:
    """The float32 CPU core over chunks of the batch of about :data:`CHUNK_BYTES` of scores."""
    core = _attention_core(scale, mask is not None)
    extra = () if mask is None else (mask,)
    batch = q.shape[0]
    step = max(1, CHUNK_BYTES // (4 * q.shape[1] * q.shape[2] * k.shape[2]))
    if step >= batch:
        return core(q, k, v, *extra)[0]

    def rows(x: mx.array, start: int) -> mx.array:  # masks and k/v may broadcast over batch
        return x[start : start + step] if x.ndim == 4 and x.shape[0] == batch else x

    return mx.concatenate(
        [core(*(rows(x, start) for x in (q, k, v, *extra)))[0] for start in range(0, batch, step)]
    )


def _attention_forward(q, k, v, mask, scale):
    """Output, unnormalised weights ``exp(s - max)`` and their row sums."""
    scores = _mask_scores((q * scale) @ k.swapaxes(-1, -2), mask)
    exps = softmax_numerators(scores, mx.max(scores, axis=-1, keepdims=True))
    sums = mx.sum(exps, axis=-1, keepdims=True)
    return (exps @ v) * (1.0 / sums), exps, sums


def _attention_vjp(q, k, v, outputs, d_out, scale):
    """Gradients of q, k, v from the forward pass's outputs (as flash attention writes them):
    ``dV = P^T dO``, ``dS = P (dO V^T - rowsum(dO O))``, ``dQ = dS K s``, ``dK = dS^T Q s``."""
    out, exps, sums = outputs
    weights = exps * (1.0 / sums)
    d_scores = _softmax_input_grad(
        weights, d_out @ v.swapaxes(-1, -2), mx.sum(d_out * out, axis=-1, keepdims=True)
    )
    d_q = (d_scores @ k) * scale
    d_k = (d_scores.swapaxes(-1, -2) @ q) * scale
    return d_q, d_k, weights.swapaxes(-1, -2) @ d_out


@mx.compile
def _softmax_input_grad(weights: mx.array, d_weights: mx.array, row_dot: mx.array) -> mx.array:
    return weights * (d_weights - row_dot)


@functools.cache
def _attention_core(scale: float, masked: bool):
    """The CPU attention core as a custom function (outputs: ``_attention_forward``'s)."""
    if masked:

        @mx.custom_function
        def core(q, k, v, mask):
            return _attention_forward(q, k, v, mask, scale)

        @core.vjp
        def core_vjp(primals, cotangents, outputs):
            q, k, v, mask = primals
            return (*_attention_vjp(q, k, v, outputs, cotangents[0], scale), mx.zeros_like(mask))

        return core

    @mx.custom_function
    def core(q, k, v):
        return _attention_forward(q, k, v, None, scale)

    @core.vjp
    def core_vjp(primals, cotangents, outputs):
        return _attention_vjp(*primals, outputs, cotangents[0], scale)

    return core


def split_heads(x: mx.array, num_heads: int) -> mx.array:
    """``(B, L, H * hd)`` -> ``(B, H, L, hd)``, the attention core's layout."""
    b, n, _ = x.shape
    return x.reshape(b, n, num_heads, -1).transpose(0, 2, 1, 3)


def merge_heads(x: mx.array) -> mx.array:
    """``(B, H, L, hd)`` -> ``(B, L, H * hd)``: the inverse of :func:`split_heads`."""
    b, h, n, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def attention_weights(
    q: mx.array, k: mx.array, scale: float, mask: mx.array | None = None
) -> mx.array:
    """``softmax(q k^T * scale + mask)`` written out, ``(B, H, L_query, L_key)``.

    A boolean mask replaces disallowed scores by the dtype's lowest finite value, so a row
    with every key masked gives uniform weights instead of NaN.
    """
    scores = _mask_scores((q * scale) @ k.swapaxes(-1, -2), mask)
    return mx.softmax(scores, axis=-1, precise=True)


class KVCache:
    """Self-attention keys and values of the tokens decoded so far, for one layer.

    Buffers are ``(B, heads, max_length, head_dim)``, allocated once; ``offset`` (a Python
    int, or an ``mx.array`` scalar inside a compiled step) counts the positions written.
    """

    def __init__(self, keys: mx.array, values: mx.array, offset: int | mx.array = 0):
        self.keys = keys
        self.values = values
        self.offset = offset

    @classmethod
    def empty(
        cls,
        batch: int,
        num_heads: int,
        max_length: int,
        head_dim: int,
        dtype: mx.Dtype = mx.float32,
    ) -> KVCache:
        """Zero buffers for ``max_length`` positions."""
        shape = (batch, num_heads, max_length, head_dim)
        return cls(mx.zeros(shape, dtype), mx.zeros(shape, dtype))

    @property
    def max_length(self) -> int:
        return self.keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Write ``(B, H, L, hd)`` keys/values at ``offset``, advance it by L, and return the
        whole buffers (mask the slots after the current position, see :func:`causal_mask`)."""
        length = keys.shape[2]
        if isinstance(self.offset, int):
            if self.offset + length > self.max_length:
                raise ValueError(
                    f"KV cache holds {self.max_length} positions; "
                    f"cannot write {length} at offset {self.offset}"
                )
            start = mx.array([self.offset])
        else:
            start = self.offset.reshape(1).astype(mx.int32)
        self.keys = mx.slice_update(self.keys, keys.astype(self.keys.dtype), start, axes=(2,))
        self.values = mx.slice_update(
            self.values, values.astype(self.values.dtype), start, axes=(2,)
        )
        self.offset = self.offset + length
        return self.keys, self.values

    def reorder(self, indices: mx.array) -> None:
        """Keep batch rows ``indices`` (beam search moves each beam's history with it)."""
        self.keys = self.keys[indices]
        self.values = self.values[indices]

    @property
    def state(self) -> tuple[mx.array, mx.array]:
        return self.keys, self.values


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``.

    Args:
        dims: query (and output) width.
        num_heads: number of heads; ``dims`` must divide evenly.
        kv_dims: width of the key/value source (image tokens in cross-attention);
            defaults to ``dims``.
        bias: whether the projections have biases.
        key_bias: whether the key projection has one (pretrained checkpoints such as CLIP's
            do). Models trained here leave it out: a key bias adds the same amount to every
            score of a query, which softmax ignores, so its gradient is zero in exact
            arithmetic and Adam would turn rounding noise into lr-sized random steps (as
            Whisper does).
    """

    def __init__(
        self,
        dims: int,
        num_heads: int,
        kv_dims: int | None = None,
        bias: bool = True,
        key_bias: bool = False,
    ):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f"width {dims} is not divisible by {num_heads} heads")
        kv_dims = dims if kv_dims is None else kv_dims
        self.num_heads = num_heads
        self.head_dim = dims // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q_proj = Linear(dims, dims, bias=bias)
        self.k_proj = Linear(kv_dims, dims, bias=bias and key_bias)
        self.v_proj = Linear(kv_dims, dims, bias=bias)
        self.out_proj = Linear(dims, dims, bias=bias)

    def project_kv(self, source: mx.array) -> tuple[mx.array, mx.array]:
        """Keys and values ``(B, H, S, hd)`` of a ``(B, S, kv_dims)`` source.

        Cross-attention calls this once per image and passes the result as ``kv`` at every
        decoding step.
        """
        k, v = self.k_proj(source), self.v_proj(source)
        return split_heads(k, self.num_heads), split_heads(v, self.num_heads)

    def project_qkv(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Self-attention's queries, keys and values ``(B, H, L, hd)`` of ``x``."""
        return (split_heads(self.q_proj(x), self.num_heads), *self.project_kv(x))

    def attend_heads(self, q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        """``(B, L, dims)``: the queries attend over the keys/values (no mask), projected out."""
        return self.out_proj(merge_heads(scaled_dot_product_attention(q, k, v, self.scale)))

    def __call__(
        self,
        x: mx.array,
        source: mx.array | None = None,
        *,
        kv: tuple[mx.array, mx.array] | None = None,
        mask: mx.array | str | None = None,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> mx.array | tuple[mx.array, mx.array]:
        """Attend from ``x`` (B, L, dims) to ``source`` (cross) or to ``x`` itself (self).

        Args:
            source: keys/values come from here when given (cross-attention).
            kv: precomputed ``project_kv(source)``; takes precedence over ``source``.
            mask: boolean (True = may attend) or additive array broadcastable to
                ``(B, H, L, L_key)``, or ``"causal"`` (self-attention without a cache).
            cache: self-attention KV cache; the new keys/values are written into it and
                attention runs over the whole buffer (pass the matching ``causal_mask``).
            return_weights: also return the ``(B, H, L, L_key)`` attention weights,
                computed explicitly.

        Returns:
            ``(B, L, dims)``, or ``(output, weights)`` with ``return_weights``.
        """
        q = split_heads(self.q_proj(x), self.num_heads)
        if kv is not None:
            k, v = kv
        else:
            k, v = self.project_kv(x if source is None else source)
            if cache is not None:
                k, v = cache.update_and_fetch(k, v)

        out, weights = attend(q, k, v, self.scale, mask, return_weights)
        out = self.out_proj(merge_heads(out))
        return (out, weights) if return_weights else out


def attend(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    scale: float,
    mask: mx.array | str | None = None,
    return_weights: bool = False,
) -> tuple[mx.array, mx.array | None]:
    """Attention of ``(B, H, L, hd)`` queries over keys/values, per head ``(B, H, L, hd)``,
    and, with ``return_weights``, the weights ``(B, H, L, L_key)`` (computed explicitly).

    Keys and values may have fewer rows than the queries, ``B / g`` (cross-attention to one
    image for its ``g`` beams or samples, rows grouped by image): the ``g`` rows' queries then
    attend as one ``g * L``-long query, so each image's keys and values are read once, not
    once per row, and never copied per row.
    """
    groups = q.shape[0] // k.shape[0]
    if groups > 1:
        if mask is not None:
            raise ValueError("grouped queries take no mask (cross-attention has none)")
        n = q.shape[2]
        out, weights = attend(group_rows(q, groups), k, v, scale, None, return_weights)
        return ungroup_rows(out, groups, n), None if weights is None else ungroup_rows(
            weights, groups, n
        )
    if not return_weights:
        return scaled_dot_product_attention(q, k, v, scale, mask), None
    if isinstance(mask, str):
        mask = causal_mask(q.shape[2], k.shape[2])
    weights = attention_weights(q, k, scale, mask)
    return weights @ v, weights


def group_rows(x: mx.array, groups: int) -> mx.array:
    """``(B, H, L, d)`` rows grouped by image (``groups`` consecutive rows each) ->
    ``(B / groups, H, groups * L, d)``: each image's rows as one long query."""
    rows, h, n, d = x.shape
    b = rows // groups
    return x.reshape(b, groups, h, n, d).transpose(0, 2, 1, 3, 4).reshape(b, h, groups * n, d)


def ungroup_rows(x: mx.array, groups: int, length: int) -> mx.array:
    """The inverse of :func:`group_rows`: ``(B / g, H, g * L, d)`` -> ``(B, H, L, d)``."""
    b, h, _, last = x.shape
    x = x.reshape(b, h, groups, length, last).transpose(0, 2, 1, 3, 4)
    return x.reshape(b * groups, h, length, last)


def attend_prefixed(
    q: mx.array,
    prefix: tuple[mx.array, mx.array],
    k: mx.array,
    v: mx.array,
    scale: float,
    mask: mx.array | None = None,
    return_weights: bool = False,
) -> tuple[mx.array, mx.array | None]:
    """Attention of ``(B, H, L, hd)`` queries over a prefix's keys/values followed by their
    own, one softmax over both: an image prefix (GIT) that every query sees whole.

    ``prefix`` holds ``(B / g, H, T, hd)`` keys and values, one row per image (its ``g``
    beams or samples grouped as in :func:`attend`, so each image's prefix is read once and
    never copied per row); ``k``/``v`` are ``(B, H, S, hd)``, masked by ``mask`` (boolean,
    broadcastable to ``(B, H, L, S)``). Returns the output and, with ``return_weights``, the
    weights over the prefix ``(B, H, L, T)``.
    """
    prefix_k, prefix_v = prefix
    groups, n, t = q.shape[0] // prefix_k.shape[0], q.shape[2], prefix_k.shape[2]
    q = q * scale
    prefix_scores = group_rows(q, groups) @ prefix_k.swapaxes(-1, -2)
    own_scores = _mask_scores(q @ k.swapaxes(-1, -2), mask)
    weights = softmax(mx.concatenate([ungroup_rows(prefix_scores, groups, n), own_scores], axis=-1))
    on_prefix = weights[..., :t]
    out = ungroup_rows(group_rows(on_prefix, groups) @ prefix_v, groups, n)
    out = out + weights[..., t:] @ v
    return out, on_prefix if return_weights else None
