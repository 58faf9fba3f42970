"""Multi-head attention: reference values, masks, cross-attention, KV cache, gradients."""

import mlx_caption  # noqa: F401  (loads the optimized BLAS before mlx.core)

# isort: split
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_caption.models.layers.attention import (
    KVCache,
    MultiHeadAttention,
    causal_mask,
    combine_masks,
    key_padding_mask,
)


def _attn(dims=16, heads=4, kv_dims=None, seed=0):
    mx.random.seed(seed)
    return MultiHeadAttention(dims, heads, kv_dims=kv_dims)


def _numpy_reference(m: MultiHeadAttention, x, src, allowed):
    """Attention computed independently in float64 NumPy."""
    p = {k: np.array(v, dtype=np.float64) for k, v in _flat(m.parameters()).items()}
    x, src = np.array(x, np.float64), np.array(src, np.float64)
    h, hd = m.num_heads, m.head_dim

    def proj(name, a):
        return a @ p[f"{name}.weight"].T + p.get(f"{name}.bias", 0.0)

    def split(a):
        b, n, _ = a.shape
        return a.reshape(b, n, h, hd).transpose(0, 2, 1, 3)

    q, k, v = split(proj("q_proj", x)), split(proj("k_proj", src)), split(proj("v_proj", src))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    s = np.where(allowed, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = (w @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
    return proj("out_proj", o), w


def _flat(tree):
    return dict(tree_flatten(tree))


def test_self_attention_matches_numpy_reference_fast_and_explicit():
    m = _attn()
    x = mx.random.normal((2, 5, 16))
    allowed = np.tril(np.ones((5, 5), bool))
    ref, ref_w = _numpy_reference(m, x, x, allowed)
    fast = m(x, mask="causal")
    explicit, w = m(x, mask=causal_mask(5), return_weights=True)
    np.testing.assert_allclose(np.array(fast), ref, atol=1e-5)
    np.testing.assert_allclose(np.array(explicit), ref, atol=1e-5)
    np.testing.assert_allclose(np.array(w), ref_w, atol=1e-6)
    assert w.shape == (2, 4, 5, 5)
    np.testing.assert_allclose(np.array(w.sum(-1)), 1.0, atol=1e-6)
    assert float(mx.abs(mx.triu(w, k=1)).max()) == 0.0  # nothing above the diagonal


def test_cross_attention_other_width():
    m = _attn(dims=16, heads=2, kv_dims=24)
    x, src = mx.random.normal((3, 4, 16)), mx.random.normal((3, 7, 24))
    out = m(x, src)
    assert out.shape == (3, 4, 16)
    assert m.k_proj.weight.shape == (16, 24)
    ref, _ = _numpy_reference(m, x, src, np.ones((4, 7), bool))
    np.testing.assert_allclose(np.array(out), ref, atol=1e-5)
    # Precomputed keys/values give the same result.
    np.testing.assert_allclose(np.array(m(x, kv=m.project_kv(src))), np.array(out), atol=1e-6)


def test_causal_mask_future_does_not_leak():
    m = _attn()
    x = mx.random.normal((1, 6, 16))
    y = mx.concatenate([x[:, :3], mx.random.normal((1, 3, 16)) * 10], axis=1)
    for kwargs in ({"mask": "causal"}, {"mask": causal_mask(6), "return_weights": True}):
        a, b = m(x, **kwargs), m(y, **kwargs)
        if isinstance(a, tuple):
            a, b = a[0], b[0]
        np.testing.assert_allclose(np.array(a[:, :3]), np.array(b[:, :3]), atol=1e-6)
        assert float(mx.abs(a[:, 3:] - b[:, 3:]).max()) > 1e-3


def test_causal_mask_with_offset_and_buffer():
    mask = np.array(causal_mask(2, key_length=6, offset=3))
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])


@pytest.mark.parametrize("explicit", [False, True])
def test_key_padding_mask_ignores_padded_keys(explicit):
    m = _attn(kv_dims=8)
    x = mx.random.normal((2, 3, 16))
    src = mx.random.normal((2, 4, 8))
    keep = mx.array([[True, True, True, True], [True, True, False, False]])
    junk = mx.concatenate([src[:, :2], mx.random.normal((2, 2, 8)) * 100], axis=1)
    junk = mx.where(keep[..., None], src, junk)
    out = m(x, src, mask=key_padding_mask(keep), return_weights=explicit)
    out_junk = m(x, junk, mask=key_padding_mask(keep), return_weights=explicit)
    if explicit:
        (out, w), (out_junk, _) = out, out_junk
        assert float(w[1, :, :, 2:].max()) == 0.0
    np.testing.assert_allclose(np.array(out), np.array(out_junk), atol=1e-5)
    # Row 1 equals attending to its two real keys only.
    alone = m(x[1:], src[1:, :2])
    np.testing.assert_allclose(np.array(out[1:]), np.array(alone), atol=1e-5)


def test_combine_masks():
    a = mx.array([[True, False], [True, True]])
    b = mx.array([[True, True], [False, True]])
    np.testing.assert_array_equal(np.array(combine_masks(a, None, b)), [[1, 0], [0, 1]])
    assert combine_masks(None, None) is None


def test_kv_cache_writes_at_offset_and_reorders():
    cache = KVCache.empty(batch=2, num_heads=1, max_length=4, head_dim=2)
    k1 = mx.ones((2, 1, 2, 2))
    keys, _ = cache.update_and_fetch(k1, k1 * 2)
    assert cache.offset == 2 and keys.shape == (2, 1, 4, 2)
    k2 = mx.array([[[[3.0, 3.0]]], [[[4.0, 4.0]]]])
    keys, values = cache.update_and_fetch(k2, k2)
    np.testing.assert_array_equal(np.array(keys[:, 0, :, 0]), [[1, 1, 3, 0], [1, 1, 4, 0]])
    cache.reorder(mx.array([1, 1]))
    np.testing.assert_array_equal(np.array(cache.keys[:, 0, 2, 0]), [4, 4])
    with pytest.raises(ValueError, match="holds 4"):
        cache.update_and_fetch(mx.ones((2, 1, 2, 2)), mx.ones((2, 1, 2, 2)))


def test_cache_incremental_equals_full():
    m = _attn()
    x = mx.random.normal((2, 5, 16))
    full = m(x, mask="causal")
    cache = KVCache.empty(2, 4, 8, 4)
    steps = [m(x[:, :2], mask=causal_mask(2, 8, 0), cache=cache)]
    for i in range(2, 5):
        steps.append(m(x[:, i : i + 1], mask=causal_mask(1, 8, i), cache=cache))
    np.testing.assert_allclose(np.array(mx.concatenate(steps, 1)), np.array(full), atol=1e-5)


class _SelfThenCross(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = MultiHeadAttention(8, 2)
        self.cross_attn = MultiHeadAttention(8, 2, kv_dims=6)


@pytest.mark.parametrize("explicit", [False, True])
def test_gradient_matches_central_differences(explicit):
    """Analytic gradients of a causal self- then cross-attention loss against numerical ones."""
    mx.random.seed(3)
    m = _SelfThenCross()
    x = mx.random.normal((2, 4, 8))
    src = mx.random.normal((2, 3, 6))
    target = mx.random.normal((2, 4, 8))

    def first(out):
        return out[0] if explicit else out

    def loss_fn(params):
        m.update(params)
        h = first(m.self_attn(x, mask=causal_mask(4), return_weights=explicit))
        c = first(m.cross_attn(h, src, return_weights=explicit))
        return mx.sum((c - target) ** 2)

    params = m.trainable_parameters()
    grads = mx.grad(loss_fn)(params)
    rng = np.random.default_rng(0)
    eps = 1e-2
    checked = [
        ("self_attn", "q_proj", "weight"),
        ("self_attn", "k_proj", "weight"),
        ("self_attn", "v_proj", "bias"),
        ("cross_attn", "k_proj", "weight"),
        ("cross_attn", "out_proj", "weight"),
    ]
    for block, layer, name in checked:
        base = np.array(params[block][layer][name])
        g = np.array(grads[block][layer][name])
        for _ in range(2):
            idx = tuple(int(rng.integers(0, s)) for s in base.shape)
            values = []
            for sign in (1, -1):
                p = base.copy()
                p[idx] += sign * eps
                values.append(float(loss_fn(_replace(params, (block, layer, name), mx.array(p)))))
            numeric = (values[0] - values[1]) / (2 * eps)
            assert numeric == pytest.approx(g[idx], rel=2e-2, abs=2e-3), (block, layer, name, idx)
    m.update(params)


def _replace(tree, path, value):
    """Copy of a nested parameter dict with one leaf replaced."""
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _replace(tree[path[0]], path[1:], value)}


def test_key_bias_would_not_change_attention():
    """Why k_proj has no bias: adding one shifts every score of a query equally."""
    m = MultiHeadAttention(16, 2)
    assert "bias" not in m.k_proj
    x = mx.random.normal((2, 5, 16))
    before = m(x, mask="causal")
    m.k_proj.bias = mx.random.normal((16,))
    after = m(x, mask="causal")
    assert mx.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("return_weights", [False, True])
def test_grouped_queries_equal_keys_repeated_per_row(return_weights):
    """Cross-attention for g rows per image (beams) reads one copy of the image's keys and
    values: the same numbers as repeating them for every row."""
    from mlx_caption.models.layers import attend

    mx.random.seed(0)
    q = mx.random.normal((6, 2, 1, 8))  # 2 images x 3 beams, 2 heads, one new token
    k, v = mx.random.normal((2, 2, 5, 8)), mx.random.normal((2, 2, 5, 8))
    grouped, w_grouped = attend(q, k, v, 0.35, return_weights=return_weights)
    repeated, w_repeated = attend(
        q, mx.repeat(k, 3, axis=0), mx.repeat(v, 3, axis=0), 0.35, return_weights=return_weights
    )
    np.testing.assert_allclose(np.array(grouped), np.array(repeated), atol=1e-6)
    if return_weights:
        np.testing.assert_allclose(np.array(w_grouped), np.array(w_repeated), atol=1e-6)
    with pytest.raises(ValueError, match="no mask"):
        attend(q, k, v, 0.35, mask=mx.ones((6, 1, 1, 5), dtype=mx.bool_))


def _plain_attention(q, k, v, scale, mask=None):
    """The formula with MLX's own softmax (what a GPU computes)."""
    scores = (q * scale) @ k.swapaxes(-1, -2)
    if mask is not None:
        scores = mx.where(mask, scores, mx.finfo(mx.float32).min)
    return mx.softmax(scores, axis=-1, precise=True) @ v


@pytest.mark.parametrize(
    ("batch", "heads", "lq", "lk", "mask_kind"),
    [
        (5, 3, 7, 7, None),  # one chunk
        (9, 12, 197, 197, None),  # one image per chunk (a ViT-B/16 grid)
        (6, 4, 20, 20, "causal"),
        (7, 4, 9, 50, "padding"),  # cross-attention over padded keys, batch-wise mask
        (3, 2, 1, 24, "causal"),  # one decoding step against a preallocated cache
    ],
)
def test_cpu_attention_core_matches_softmax_values_and_gradients(
    monkeypatch, batch, heads, lq, lk, mask_kind
):
    from mlx_caption.models.layers import attention

    # Small chunks, so that every case above is attended in several.
    monkeypatch.setattr(attention, "CHUNK_BYTES", 4 * heads * lq * lk * 2)
    keys = iter(mx.random.split(mx.random.key(0), 4))
    q, k, v = (mx.random.normal((batch, heads, n, 16), key=next(keys)) for n in (lq, lk, lk))
    if mask_kind == "causal":
        mask = causal_mask(lq, lk, lk - lq)
    elif mask_kind == "padding":
        keep = mx.arange(lk)[None] < mx.array([lk, 3, 1, lk, 10, 25, 40])[:, None]
        mask = key_padding_mask(keep)
    else:
        mask = None
    scale = 0.25
    out = attention.scaled_dot_product_attention(
        q, k, v, scale, mask="causal" if mask_kind == "causal" else mask
    )
    ref = _plain_attention(q, k, v, scale, mask)
    np.testing.assert_allclose(np.array(out), np.array(ref), atol=2e-5)

    cot = mx.random.normal(ref.shape, key=next(keys))
    grads = mx.vjp(
        lambda *a: attention.scaled_dot_product_attention(*a, scale, mask), [q, k, v], [cot]
    )[1]
    ref_grads = mx.vjp(lambda *a: _plain_attention(*a, scale, mask), [q, k, v], [cot])[1]
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(np.array(g), np.array(r), atol=5e-5, rtol=1e-4)
