"""The MLX SigLIP encoder against transformers' SiglipVisionModel on random checkpoints."""

import mlx.core as mx  # noqa: I001
import numpy as np
import pytest
from mlx.utils import tree_flatten
from encoder_fixtures import make_hf_encoder, mlx_twin, torch_forward, vision_tower
from prerequisites import require_module

import mlx_caption  # noqa: F401  (before mlx.core)
from mlx_caption.models.siglip import SiglipVisionConfig, SiglipVisionModel

require_module("transformers", "transformers (the [torch] extra)")

TOL = 1e-4


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))))


def assert_parity(encoder, torch_model, size: int, interpolate: bool) -> None:
    pixels = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
    kwargs = {"interpolate_pos_encoding": True} if interpolate else {}
    ref = torch_forward(vision_tower(torch_model), pixels, **kwargs)
    out = encoder(mx.array(pixels), output_hidden_states=True)
    grid = size // encoder.config.patch_size
    assert out.last_hidden_state.shape == (2, grid * grid, encoder.config.hidden_size)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert max_diff(mine, theirs) < TOL
    assert max_diff(out.last_hidden_state, ref.last_hidden_state) < TOL
    assert max_diff(out.pooler_output, ref.pooler_output) < TOL


@pytest.mark.parametrize(
    "variant,image_size,patch_size,act,sizes",
    [
        ("vision", 224, 16, "gelu_pytorch_tanh", (224, 256)),  # base-patch16-224, and at 256
        ("full", 384, 14, "gelu_pytorch_tanh", (384, 224)),  # so400m-patch14-384 geometry
        ("vision", 32, 16, "gelu", (32, 80)),  # exact gelu, 2x2 -> 5x5 grid
    ],
)
def test_parity_with_transformers(variant, image_size, patch_size, act, sizes):
    torch_model = make_hf_encoder(
        "siglip", variant, seed=1, image_size=image_size, patch_size=patch_size, hidden_act=act
    )
    encoder = mlx_twin("siglip", torch_model)
    assert encoder.config.hidden_act == act and encoder.config.prefix_tokens == 0
    for size in sizes:
        assert_parity(encoder, torch_model, size, interpolate=size != image_size)


def test_hub_config_defaults_and_names():
    """A hub config that leaves out what equals transformers' defaults reads as they do."""
    hub = {"model_type": "siglip", "vision_config": {"patch_size": 16}, "text_config": {}}
    cfg = SiglipVisionConfig.from_hf(hub)
    assert (cfg.hidden_act, cfg.layer_norm_eps, cfg.image_size) == ("gelu_pytorch_tanh", 1e-6, 224)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_tokens) == (768, 12, 196)
    assert cfg.preprocess.resize_mode == "exact" and cfg.preprocess.image_mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="not a SigLIP checkpoint"):
        SiglipVisionConfig.from_hf({"model_type": "clip"})
    tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4}
    model = SiglipVisionModel(SiglipVisionConfig(intermediate_size=64, **tiny))
    names = dict(tree_flatten(model.parameters()))
    assert names["embeddings.patch_embedding.weight"].shape == (32, 16, 16, 3)  # OHWI
    assert names["head.attention.in_proj_weight"].shape == (96, 32)
    assert {"head.probe", "post_layernorm.bias", "embeddings.patch_embedding.bias"} <= set(names)
    assert "head" in model.never_trained
    no_head = SiglipVisionModel(SiglipVisionConfig(vision_use_head=False, **tiny))
    assert no_head(mx.zeros((1, 224, 224, 3))).pooler_output is None


def test_sanitize_drops_the_text_tower_and_is_idempotent():
    torch_model = make_hf_encoder("siglip", "full")
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    once = SiglipVisionModel.sanitize(state)
    assert not any(k.startswith(("text_model", "logit", "vision_model")) for k in once)
    twice = SiglipVisionModel.sanitize(once)
    assert once.keys() == twice.keys()
    assert all(np.array_equal(once[k], twice[k]) for k in once)
