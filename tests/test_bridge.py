"""The PT bridge (torch CLIPVisionModel -> mx.array) against the MLX ViT, on tiny random models."""

import builtins
import sys

import mlx.core as mx  # noqa: I001
import numpy as np
import pytest
from prerequisites import require_module

import mlx_caption  # noqa: F401  (before mlx.core)
from mlx_caption.errors import UserError
from mlx_caption.models.clip import CLIPVisionConfig as VisionConfig

require_module("torch", "torch (the [torch] extra)")
require_module("transformers", "transformers (the [torch] extra)")

from mlx_caption import bridge  # noqa: E402
from mlx_caption.models.clip import reference  # noqa: E402

TOL = 1e-4


def tiny_config(**kw) -> VisionConfig:
    args = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=64,
        patch_size=16,
    )
    args.update(kw)
    return VisionConfig(**args)


def pixels(cfg: VisionConfig, batch: int = 2, seed: int = 0) -> np.ndarray:
    shape = (batch, cfg.image_size, cfg.image_size, 3)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_from_config_matches_mlx_vit(act):
    cfg = tiny_config(hidden_act=act)
    enc = bridge.BridgeEncoder.from_config(cfg, seed=3)
    vit = enc.to_mlx()
    x = pixels(cfg)
    out = enc(x)
    assert isinstance(out, mx.array)
    assert out.shape == (2, cfg.num_tokens, cfg.hidden_size)
    assert out.dtype == mx.float32
    ref = vit(mx.array(x)).last_hidden_state
    assert max_diff(out, ref) < TOL
    # mx.array input gives the same result as numpy input
    assert max_diff(enc(mx.array(x)), out) == 0.0


def test_from_mlx_copies_weights():
    from mlx_caption.models.clip import CLIPVisionModel as VisionTransformer

    cfg = tiny_config(projection_dim=16)
    mx.random.seed(5)
    vit = VisionTransformer(cfg)
    vit.eval()
    enc = bridge.BridgeEncoder.from_mlx(vit)
    x = pixels(cfg, batch=3, seed=1)
    assert max_diff(enc(x), vit(mx.array(x)).last_hidden_state) < TOL


def test_from_pretrained_folder(tmp_path):
    from transformers import CLIPVisionModel

    cfg = tiny_config()
    model = CLIPVisionModel(reference.hf_config(cfg))
    model.save_pretrained(tmp_path / "clip")
    enc = bridge.BridgeEncoder.from_pretrained(str(tmp_path / "clip"), threads=1)
    assert enc.config.image_size == 64 and enc.config.patch_size == 16
    assert enc.threads == 1
    x = pixels(cfg, batch=1)
    assert max_diff(enc(x), enc.to_mlx()(mx.array(x)).last_hidden_state) < TOL


def test_from_pretrained_missing_folder_is_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        bridge.BridgeEncoder.from_pretrained(str(tmp_path / "nothing-here"))


def test_missing_torch_is_user_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'", name="torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    # Without torch no family's transformers side was ever imported.
    for module in ("mlx_caption.models.clip.reference", "mlx_caption.models.reference"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert not bridge.torch_available()
    with pytest.raises(UserError, match=r"mlx-caption\[torch\]"):
        bridge.BridgeEncoder.from_config(tiny_config())
