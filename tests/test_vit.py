"""The MLX CLIP ViT against transformers' CLIPVisionModel on random-initialised checkpoints."""

import json

import mlx.core as mx  # noqa: I001
import mlx.nn as nn
import numpy as np
import pytest
from clip_fixtures import make_hf_clip, torch_vision_forward

import mlx_caption  # noqa: F401  (before mlx.core)
from mlx_caption.models.base import VisionOutput
from mlx_caption.models.clip import CLIPVisionConfig, CLIPVisionModel
from mlx_caption.models.clip import CLIPVisionModel as VisionTransformer
from mlx_caption.models.layers.activations import fast_gelu, fast_quick_gelu, gelu, quick_gelu

TOL = 1e-4


def mlx_from_torch(model) -> VisionTransformer:
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    has_proj = "visual_projection.weight" in state
    names = {"visual_projection.weight"} if has_proj else set()
    cfg = CLIPVisionConfig.from_hf(json.loads(model.config.to_json_string()), None, names)
    vit = VisionTransformer(cfg)
    vit.load_weights(
        [(k, mx.array(v)) for k, v in CLIPVisionModel.sanitize(state).items()], strict=True
    )
    vit.eval()
    return vit


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))))


@pytest.mark.parametrize(
    "kind,geometry,act",
    [
        ("vision", "B/32", "quick_gelu"),
        ("vision_proj", "B/16", "quick_gelu"),
        ("clip", "L/14-336", "quick_gelu"),
        ("vision_proj", "B/32", "gelu"),  # OpenCLIP LAION checkpoints use exact gelu
    ],
)
def test_parity_with_transformers(kind, geometry, act):
    torch_model = make_hf_clip(kind, seed=1, geometry=geometry, hidden_act=act)
    vit = mlx_from_torch(torch_model)
    size = vit.config.image_size
    pixels = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
    ref = torch_vision_forward(torch_model, pixels)
    out = vit(mx.array(pixels), output_hidden_states=True)
    assert isinstance(out, VisionOutput)
    assert out.last_hidden_state.shape == (2, vit.config.num_tokens, 32)
    assert max_diff(out.last_hidden_state, ref["last_hidden_state"]) < TOL
    assert max_diff(out.pooler_output, ref["pooler_output"]) < TOL
    assert len(out.hidden_states) == len(ref["hidden_states"]) == vit.config.num_hidden_layers + 1
    for mine, theirs in zip(out.hidden_states, ref["hidden_states"], strict=True):
        assert max_diff(mine, theirs) < TOL
    if kind == "vision":
        assert out.image_embeds is None
    else:
        assert out.image_embeds.shape == (2, 16)
        assert max_diff(out.image_embeds, ref["image_embeds"]) < TOL


def test_hidden_states_off_by_default_and_layers_exposed():
    vit = mlx_from_torch(make_hf_clip("vision", geometry="tiny"))
    out = vit(mx.zeros((1, 64, 64, 3)))
    assert out.hidden_states is None
    assert vit.layers is vit.encoder.layers and len(vit.layers) == 2
    names = dict(nn.utils.tree_flatten(vit.parameters()))
    assert names["embeddings.patch_embedding.weight"].shape == (32, 16, 16, 3)  # OHWI
    assert "encoder.layers.1.self_attn.q_proj.weight" in names
    assert "pre_layrnorm.bias" in names and "post_layernorm.weight" in names


def test_patch_embedding_matches_conv2d():
    vit = mlx_from_torch(make_hf_clip("vision", geometry="tiny"))
    x = mx.random.normal((2, 64, 64, 3))
    w = vit.embeddings.patch_embedding.weight
    conv = mx.conv2d(x, w, stride=16).reshape(2, -1, 32)
    assert max_diff(vit.embeddings.patch_embedding(x), conv) < 1e-5


@pytest.mark.parametrize("height,width", [(96, 96), (48, 48), (80, 48)])
def test_other_resolution_matches_transformers_interpolation(height, width):
    """At another input size the position table is resized as transformers'
    ``interpolate_pos_encoding=True`` does (bicubic, class position kept)."""
    import torch

    torch_model = make_hf_clip("vision", geometry="tiny")  # 64 px, 16-px patches
    vit = mlx_from_torch(torch_model)
    pixels = np.random.default_rng(1).standard_normal((2, height, width, 3)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(
            pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2),
            interpolate_pos_encoding=True,
            output_hidden_states=True,
        )
    out = vit(mx.array(pixels), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 1 + (height // 16) * (width // 16), 32)
    for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert max_diff(mine, theirs.numpy()) < TOL
    assert max_diff(out.pooler_output, ref.pooler_output.numpy()) < TOL
    with pytest.raises(ValueError, match="smaller than one patch"):
        vit(mx.zeros((1, 8, 64, 3)))


def test_fast_quick_gelu_error_bound():
    xs = np.concatenate(
        [np.linspace(-20, 20, 400001), np.array([-1e30, -1e4, -200, -88, 88, 200, 1e4, 1e30])]
    ).astype(np.float32)
    got = np.array(fast_quick_gelu(mx.array(xs)))
    x64 = xs.astype(np.float64)
    exact = x64 / (1.0 + np.exp(np.clip(-1.702 * x64, -700, 700)))
    assert np.all(np.isfinite(got))
    # Absolute error 1e-5 for moderate inputs; for |x| huge only float32 rounding remains.
    err = np.abs(got - exact) / np.maximum(1.0, np.abs(exact) * 1e-2)
    assert err.max() < 1e-5, err.max()
    small = np.abs(xs) <= 20
    assert np.abs(got[small] - exact[small]).max() < 1e-5
    # At the tails the positive side is x itself and the negative side is (close to) 0.
    assert got[-1] == np.float32(1e30) and abs(got[-8]) < 1e-7


def test_quick_gelu_dispatch_matches_reference():
    x = mx.random.normal((64, 128)) * 6
    ref = x * mx.sigmoid(1.702 * x)
    assert max_diff(quick_gelu(x), ref) < 1e-5


def test_grad_checkpoint_gives_same_gradients():
    vit = mlx_from_torch(make_hf_clip("vision", geometry="tiny"))
    vit.train()
    x = mx.random.normal((2, 64, 64, 3))

    def loss(model):
        return (model(x).last_hidden_state ** 2).mean()

    grad_fn = nn.value_and_grad(vit, loss)
    v0, g0 = grad_fn(vit)
    vit.grad_checkpoint = True
    v1, g1 = grad_fn(vit)
    assert abs(v0.item() - v1.item()) < 1e-6
    flat0, flat1 = dict(nn.utils.tree_flatten(g0)), dict(nn.utils.tree_flatten(g1))
    assert flat0.keys() == flat1.keys() and len(flat0) > 10
    for k in flat0:
        assert max_diff(flat0[k], flat1[k]) < 1e-5, k


def test_fast_quick_gelu_gradient():
    x = mx.random.normal((4096,)) * 8
    got = mx.grad(lambda y: fast_quick_gelu(y).sum())(x)
    ref = mx.grad(lambda y: (y * mx.sigmoid(1.702 * y)).sum())(x)
    assert max_diff(got, ref) < 1e-5


def test_fast_gelu_error_bound_and_gradient():
    from math import erf

    xs = np.concatenate(
        [np.linspace(-12, 12, 240001), np.array([-1e30, -1e4, -50, 50, 1e4, 1e30, 0.0])]
    ).astype(np.float32)
    got = np.array(fast_gelu(mx.array(xs)))
    exact = np.array([0.5 * float(v) * (1 + erf(float(v) / 2**0.5)) for v in xs])
    assert np.all(np.isfinite(got))
    err = np.abs(got - exact) / np.maximum(1.0, np.abs(exact) * 1e-2)
    assert err.max() < 1e-5, err.max()
    assert got[-2] == np.float32(1e30) and got[-7] == 0.0
    x = mx.random.normal((4096,)) * 4
    assert max_diff(gelu(x), nn.gelu(x)) < 1e-5
    g = mx.grad(lambda y: fast_gelu(y).sum())(x)
    ref = mx.grad(lambda y: nn.gelu(y).sum())(x)
    assert max_diff(g, ref) < 1e-4


def test_sincos_positions_are_smooth_over_the_grid():
    from mlx_caption.models.layers import sincos_position_embedding

    grid, dim = 4, 16
    table = np.array(sincos_position_embedding(grid, dim))
    assert table.shape == (1 + grid * grid, dim)
    assert np.all(table[0] == 0)  # the class token has no place in the image
    pos = table[1:].reshape(grid, grid, dim)
    # Neighbours are closer than far patches, along rows and along columns.
    near = np.linalg.norm(pos[0, 0] - pos[0, 1])
    far = np.linalg.norm(pos[0, 0] - pos[0, 3])
    assert near < far
    assert np.linalg.norm(pos[0, 0] - pos[1, 0]) < np.linalg.norm(pos[0, 0] - pos[3, 0])
    # Row channels ignore the column and vice versa.
    np.testing.assert_allclose(pos[2, 0, : dim // 2], pos[2, 3, : dim // 2])
    np.testing.assert_allclose(pos[0, 1, dim // 2 :], pos[3, 1, dim // 2 :])


def test_conv3x3_stride2_matches_conv2d():
    from mlx_caption.models.layers.stems import Conv3x3Stride2

    mx.random.seed(0)
    conv = Conv3x3Stride2(5, 7)
    conv.bias = mx.random.normal((7,))
    for size in (16, 9):  # even and odd sides: padding 1 gives ceil(size / 2)
        x = mx.random.normal((2, size, size, 5))
        ref = mx.conv2d(x, conv.weight, stride=2, padding=1) + conv.bias
        assert conv(x).shape == ref.shape
        assert max_diff(conv(x), ref) < 1e-5


def test_conv3x3_stride2_gradient_matches_autodiff_of_conv2d():
    from mlx_caption.models.layers.conv import conv3x3_stride2

    mx.random.seed(1)
    for side in (8, 7):  # odd sides go through the zero-padded even path
        x = mx.random.normal((2, side, side, 3))
        w = mx.random.normal((5, 3, 3, 3))
        probe = mx.random.normal((2, (side + 1) // 2, (side + 1) // 2, 5))

        def grads(conv, x=x, w=w, probe=probe):
            return mx.grad(lambda x, w: (conv(x, w) * probe).sum(), (0, 1))(x, w)

        ref = grads(lambda x, w: mx.conv2d(x, w, stride=2, padding=1))
        ours = grads(conv3x3_stride2)
        for a, b in zip(ours, ref, strict=True):
            assert a.shape == b.shape
            assert max_diff(a, b) < 1e-4


def test_conv_stem_gives_the_patch_grid():
    from mlx_caption.models.clip import CLIPVisionConfig as VisionConfig
    from mlx_caption.models.layers import ConvStem

    cfg = VisionConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=2,
        image_size=64, patch_size=16, stem="conv",
    )  # fmt: skip
    vit = VisionTransformer(cfg)
    stem = vit.embeddings.patch_embedding
    assert isinstance(stem, ConvStem)
    # log2(16) = 4 stride-2 convolutions, widths doubling up to the hidden size.
    assert [c.weight.shape[0] for c in stem.convs] == [16, 16, 24, 48]
    out = vit(mx.random.normal((2, 64, 64, 3)), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, cfg.num_tokens, 48) == (2, 17, 48)
    # The stem's tokens are layer-normalised before the position embedding is added.
    tokens = np.array(stem(mx.random.normal((1, 64, 64, 3))))
    np.testing.assert_allclose(tokens.mean(-1), 0, atol=1e-5)
    # Each token sees only its own neighbourhood: a change in the top-left corner leaves the
    # bottom-right token alone.
    x = mx.random.normal((1, 64, 64, 3))
    y = x.at[:, :8, :8, :].add(5.0)
    diff = np.abs(np.array(stem(x)) - np.array(stem(y))).max(-1)[0]
    assert diff[0] > 1e-3 and diff[-1] == 0


def test_bad_stem_settings_are_refused():
    from mlx_caption.models.clip import CLIPVisionConfig as VisionConfig
    from mlx_caption.models.layers import ConvStem

    with pytest.raises(ValueError, match="power-of-two"):
        ConvStem(3, 32, 14)
    with pytest.raises(ValueError, match="stem must be one of patch, conv"):
        VisionTransformer(VisionConfig(hidden_size=32, num_hidden_layers=1, stem="hybrid"))
