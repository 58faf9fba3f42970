"""The MLX DINOv2 encoder against transformers' Dinov2Model and Dinov2WithRegistersModel on
random checkpoints: class token, registers, layer scale, positions resized to any grid."""

import mlx.core as mx  # noqa: I001
import numpy as np
import pytest
from encoder_fixtures import make_hf_encoder, mlx_twin, processor_args, torch_forward
from mlx.utils import tree_flatten
from prerequisites import require_module

import mlx_caption  # noqa: F401  (before mlx.core)
from mlx_caption.models.dinov2 import Dinov2Config, Dinov2Model

require_module("transformers", "transformers (the [torch] extra)")

TOL = 1e-4


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))))


@pytest.mark.parametrize(
    "variant,image_size,sizes",
    [
        ("plain", 518, (224, 518, 336)),  # the hub geometry: a 37x37 table, 224-px crops
        ("registers", 518, (224, 336)),  # antialiased resizing, 4 registers
        ("registers", 42, (42, 70, 28, 14)),  # a 3x3 table up to 5x5, down to 2x2 and 1x1
    ],
)
def test_parity_with_transformers(variant, image_size, sizes):
    torch_model = make_hf_encoder("dinov2", variant, seed=3, image_size=image_size)
    encoder = mlx_twin("dinov2", torch_model)
    registers = 4 if variant == "registers" else 0
    assert encoder.config.num_register_tokens == registers
    assert encoder.config.with_registers == (variant == "registers")
    for size in sizes:
        pixels = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
        ref = torch_forward(torch_model, pixels)
        out = encoder(mx.array(pixels), output_hidden_states=True)
        assert out.last_hidden_state.shape == (2, 1 + registers + (size // 14) ** 2, 32)
        assert len(out.hidden_states) == len(ref.hidden_states) == 3
        for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
            assert max_diff(mine, theirs) < TOL
        assert max_diff(out.last_hidden_state, ref.last_hidden_state) < TOL
        assert max_diff(out.pooler_output, ref.pooler_output) < TOL


def test_hub_config_names_and_refusals():
    hub = {
        "model_type": "dinov2", "hidden_size": 384, "num_attention_heads": 6,
        "num_hidden_layers": 12, "image_size": 518, "patch_size": 14, "mlp_ratio": 4,
        "layerscale_value": 1.0, "use_swiglu_ffn": False,
    }  # fmt: skip
    pre = processor_args("dinov2", 224)  # the hub's preprocessor_config.json
    cfg = Dinov2Config.from_hf(hub, pre)
    assert (cfg.num_positions, cfg.num_tokens, cfg.intermediate_size) == (1370, 257, 1536)
    assert (cfg.preprocess.resize_shortest_edge, cfg.preprocess.crop_size) == (256, 224)
    assert cfg.preprocess == Dinov2Config().preprocess  # the family's default processor
    regs = Dinov2Config.from_hf({**hub, "model_type": "dinov2_with_registers"}, pre)
    assert (regs.num_register_tokens, regs.num_tokens, regs.with_registers) == (4, 261, True)
    with pytest.raises(ValueError, match="SwiGLU"):
        Dinov2Config.from_hf({**hub, "use_swiglu_ffn": True})
    with pytest.raises(ValueError, match="not a DINOv2 checkpoint"):
        Dinov2Config.from_hf({"model_type": "vit"})
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_attention_heads=4, num_hidden_layers=1))
    names = dict(tree_flatten(model.parameters()))
    layer = "encoder.layer.0."
    expected = {"layer_scale1.lambda1", "mlp.fc2.bias", "attention.attention.value.weight"}
    assert {layer + name for name in expected} <= set(names)
    assert "embeddings.register_tokens" not in names


def test_sanitize_reads_both_names_and_drops_the_mask_token():
    torch_model = make_hf_encoder("dinov2", "registers")
    memory = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    assert any(".attention.q_proj." in k for k in memory)  # transformers 5's names
    once = Dinov2Model.sanitize(memory)
    assert "embeddings.mask_token" not in once
    assert "encoder.layer.0.attention.attention.query.weight" in once
    assert once.keys() == Dinov2Model.sanitize(once).keys()
