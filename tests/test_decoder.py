"""Text decoder: KV-cache decoding equals a full pass, masks, tying, dropout, gradients."""

import mlx_caption  # noqa: F401  (loads the optimized BLAS before mlx.core)

# isort: split
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_caption.models.decoder import DecoderConfig, TextDecoder
from mlx_caption.models.layers.activations import gelu_tanh as gelu
from mlx_caption.models.layers.attention import KVCache

CFG = DecoderConfig(
    vocab_size=30,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_length=12,
    dropout=0.1,
)


def _decoder(seed=0, kv_dims=None, **overrides):
    mx.random.seed(seed)
    cfg = DecoderConfig(**{**CFG.to_dict(), **overrides})
    dec = TextDecoder(cfg, kv_dims=kv_dims)
    dec.eval()
    return dec


def _inputs(batch=2, length=10, tokens=5, width=32, seed=1):
    mx.random.seed(seed)
    return (
        mx.random.randint(0, CFG.vocab_size, (batch, length)),
        mx.random.normal((batch, tokens, width)),
    )


def test_cache_steps_equal_full_forward():
    dec = _decoder()
    tokens, image = _inputs()
    full = dec(tokens, image)
    assert full.shape == (2, 10, 30)
    cross = dec.cross_kv(image)
    caches = dec.make_cache(2)
    # A 3-token prefill, then one token at a time.
    outs = [dec(tokens[:, :3], cross_kv=cross, caches=caches, offset=0)]
    for i in range(3, 10):
        outs.append(dec(tokens[:, i : i + 1], cross_kv=cross, caches=caches, offset=i))
    np.testing.assert_allclose(np.array(mx.concatenate(outs, 1)), np.array(full), atol=1e-5)


def test_cache_step_compiled_with_array_offset_equals_full():
    """The generation step's form: fixed-shape buffers, offset as an array, mx.compile."""
    dec = _decoder()
    tokens, image = _inputs()
    full = np.array(dec(tokens, image))

    def step(token, offset, state, cross):
        caches = [KVCache(k, v, offset) for k, v in state]
        logits = dec(token, cross_kv=cross, caches=caches, offset=offset)
        return logits[:, -1], [c.state for c in caches]

    compiled = mx.compile(step, inputs=dec.state)
    state = [c.state for c in dec.make_cache(2, 10)]
    cross = dec.cross_kv(image)
    for i in range(10):
        logits, state = compiled(tokens[:, i : i + 1], mx.array(i, dtype=mx.int32), state, cross)
        np.testing.assert_allclose(np.array(logits), full[:, i], atol=1e-5)


def test_no_position_sees_the_future():
    dec = _decoder()
    tokens, image = _inputs(batch=1)
    changed = mx.concatenate([tokens[:, :4], (tokens[:, 4:] + 7) % CFG.vocab_size], axis=1)
    a, b = np.array(dec(tokens, image)), np.array(dec(changed, image))
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-3


def test_padding_changes_nothing():
    """A right-padded batch with a key padding mask equals each sequence run alone, and the
    padded positions' contents do not matter."""
    dec = _decoder()
    tokens, image = _inputs(length=8)
    lengths = [8, 5]
    keep = mx.arange(8)[None, :] < mx.array(lengths)[:, None]
    padded = mx.where(keep, tokens, 0)
    junk = mx.where(keep, tokens, 17)
    out = np.array(dec(padded, image, padding_mask=keep))
    out_junk = np.array(dec(junk, image, padding_mask=keep))
    for b, n in enumerate(lengths):
        alone = np.array(dec(tokens[b : b + 1, :n], image[b : b + 1]))[0]
        np.testing.assert_allclose(out[b, :n], alone, atol=1e-5)
        np.testing.assert_allclose(out_junk[b, :n], alone, atol=1e-5)


def test_cross_attention_uses_the_image():
    dec = _decoder()
    tokens, image = _inputs(batch=1)
    a = np.array(dec(tokens, image))
    b = np.array(dec(tokens, image + 1.0))
    assert np.abs(a - b).max() > 1e-3


def test_cross_attention_maps_returned():
    dec = _decoder()
    tokens, image = _inputs()
    logits, maps = dec(tokens, image, return_attention=True)
    np.testing.assert_allclose(np.array(logits), np.array(dec(tokens, image)), atol=1e-5)
    assert len(maps) == CFG.num_layers and maps[0].shape == (2, 4, 10, 5)
    np.testing.assert_allclose(np.array(maps[0].sum(-1)), 1.0, atol=1e-5)


def test_image_width_differs_from_decoder_width():
    dec = _decoder(kv_dims=48)
    tokens, image = _inputs(width=48)
    assert dec(tokens, image).shape == (2, 10, 30)


def test_weight_tying():
    tied = _decoder()
    keys = dict(tree_flatten(tied.parameters()))
    assert "lm_head.weight" not in keys and "output_bias" in keys
    tokens, image = _inputs()
    hidden_logits = tied(tokens, image)
    tied.embed_tokens.weight = tied.embed_tokens.weight * 2
    assert np.abs(np.array(tied(tokens, image) - hidden_logits)).max() > 1e-3

    untied = _decoder(tie_embeddings=False)
    keys = dict(tree_flatten(untied.parameters()))
    assert keys["lm_head.weight"].shape == (30, 32) and "output_bias" not in keys


def test_dropout_only_in_training():
    dec = _decoder(dropout=0.5)
    tokens, image = _inputs()
    a, b = np.array(dec(tokens, image)), np.array(dec(tokens, image))
    np.testing.assert_array_equal(a, b)
    dec.train()
    c = np.array(dec(tokens, image))
    assert np.abs(a - c).max() > 1e-3


def test_max_length_positions():
    dec = _decoder()
    assert dec.embed_positions.weight.shape == (12, 32)
    assert len(dec.layers) == 2


def test_gelu_matches_tanh_gelu_and_its_gradient():
    x = mx.linspace(-9, 9, 1001)
    np.testing.assert_allclose(np.array(gelu(x)), np.array(nn.gelu_approx(x)), atol=3e-6)
    g = mx.grad(lambda v: (gelu(v) * v).sum())(x)
    g_ref = mx.grad(lambda v: (nn.gelu_approx(v) * v).sum())(x)
    np.testing.assert_allclose(np.array(g), np.array(g_ref), atol=3e-5)


def test_decoder_gradient_matches_central_differences():
    dec = _decoder(dropout=0.0, num_layers=1)
    tokens, image = _inputs(length=6)
    targets = mx.random.randint(0, CFG.vocab_size, (2, 6))

    def loss_fn(params):
        dec.update(params)
        logits = dec(tokens, image)
        return nn.losses.cross_entropy(logits, targets, reduction="sum")

    params = dec.trainable_parameters()
    grads = dict(tree_flatten(mx.grad(loss_fn)(params)))
    flat = dict(tree_flatten(params))
    rng = np.random.default_rng(0)
    eps = 1e-2
    for name in [
        "layers.0.self_attn.q_proj.weight",
        "layers.0.cross_attn.v_proj.weight",
        "layers.0.mlp.fc1.weight",
        "embed_positions.weight",
    ]:
        base = np.array(flat[name])
        idx = tuple(int(rng.integers(0, s)) for s in base.shape)
        values = []
        for sign in (1, -1):
            p = base.copy()
            p[idx] += sign * eps
            dec.load_weights([(name, mx.array(p))], strict=False)
            values.append(float(loss_fn(dec.trainable_parameters())))
        dec.load_weights([(name, mx.array(base))], strict=False)
        numeric = (values[0] - values[1]) / (2 * eps)
        assert numeric == pytest.approx(float(np.array(grads[name])[idx]), rel=3e-2, abs=3e-3), name
