"""The MLX ViT encoder against transformers' ViTModel on random checkpoints (also the encoder
half of a VisionEncoderDecoderModel, as ViT-GPT2 is)."""

import json

import mlx.core as mx  # noqa: I001
import numpy as np
import pytest
from encoder_fixtures import make_hf_encoder, mlx_twin, torch_forward, vision_tower
from mlx.utils import tree_flatten
from prerequisites import require_module

import mlx_caption  # noqa: F401  (before mlx.core)
from mlx_caption.models.vit import ViTConfig, ViTModel

require_module("transformers", "transformers (the [torch] extra)")

TOL = 1e-4


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))))


@pytest.mark.parametrize(
    "variant,image_size,patch_size,sizes",
    [
        ("pooler", 224, 16, (224, 288)),  # vit-base-patch16-224-in21k geometry, and at 288
        ("no_pooler", 32, 16, (32, 64, 16)),
        ("encoder_decoder", 32, 16, (32, 48)),  # ViT-GPT2's encoder
    ],
)
def test_parity_with_transformers(variant, image_size, patch_size, sizes):
    torch_model = make_hf_encoder(
        "vit", variant, seed=2, image_size=image_size, patch_size=patch_size
    )
    encoder = mlx_twin("vit", torch_model)
    assert encoder.config.add_pooling_layer == (variant != "no_pooler")
    for size in sizes:
        pixels = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
        ref = torch_forward(vision_tower(torch_model), pixels, interpolate_pos_encoding=True)
        out = encoder(mx.array(pixels), output_hidden_states=True)
        assert out.last_hidden_state.shape == (2, 1 + (size // patch_size) ** 2, 32)
        assert len(out.hidden_states) == len(ref.hidden_states) == 3
        for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
            assert max_diff(mine, theirs) < TOL
        assert max_diff(out.last_hidden_state, ref.last_hidden_state) < TOL
        if variant == "no_pooler":
            assert out.pooler_output is None and ref.pooler_output is None
        else:
            assert max_diff(out.pooler_output, ref.pooler_output) < TOL


def test_names_and_sanitize():
    torch_model = make_hf_encoder("vit", "encoder_decoder")
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    once = ViTModel.sanitize(state)
    assert not any(k.startswith("decoder.") for k in once)
    twice = ViTModel.sanitize(once)
    assert once.keys() == twice.keys()
    cfg = ViTConfig.from_hf(json.loads(torch_model.config.to_json_string()), None, set(once))
    names = dict(tree_flatten(ViTModel(cfg).parameters()))
    assert set(names) == set(once)
    assert "encoder.layer.1.attention.attention.query.weight" in names
    assert "encoder.layer.0.intermediate.dense.weight" in names and "pooler.dense.bias" in names
    assert names["embeddings.patch_embeddings.projection.weight"].shape == (32, 16, 16, 3)
    with pytest.raises(ValueError, match="not a ViT checkpoint"):
        ViTConfig.from_hf({"model_type": "deit"})
