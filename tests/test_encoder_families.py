"""What every new encoder family (SigLIP, DINOv2, ViT) must do beyond its forward pass:
preprocessing as transformers' processor, conversion (and its refusals), loading at another
image size, the PT bridge and ``encode``, on random checkpoints saved with save_pretrained."""

import json

import mlx.core as mx  # noqa: I001
import numpy as np
import pytest
from encoder_fixtures import (
    image_processor,
    make_hf_encoder,
    processor_args,
    save_hf_encoder,
    torch_forward,
    vision_tower,
)
from PIL import Image
from prerequisites import require_module
from test_preprocess import random_image

import mlx_caption  # noqa: F401  (before mlx.core)
from mlx_caption import loading
from mlx_caption.cli import main
from mlx_caption.data.preprocess import (
    PreprocessConfig,
    preprocess_config_from_hf,
    preprocess_image,
    preprocess_paths,
)
from mlx_caption.errors import UserError
from mlx_caption.models.registry import FAMILIES

require_module("transformers", "transformers (the [torch] extra)")

from mlx_caption import bridge  # noqa: E402

TOL = 1e-4
# (family, variant) of each checkpoint kind the hub has.
CHECKPOINTS = [
    ("siglip", "full"),
    ("siglip", "vision"),
    ("dinov2", "plain"),
    ("dinov2", "registers"),
    ("vit", "pooler"),
]


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))))


def hf_pixels(family: str, img: Image.Image, args: dict) -> np.ndarray:
    """transformers' PIL processor output, NHWC. ViT's processor does not convert to RGB
    (a grayscale image comes out with one channel): ours always does, so the reference is
    asked to as well."""
    proc = image_processor(family, **{"do_convert_rgb": True, **args})
    return proc(images=img, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)


# ----------------------------------------------------------------------------- processors


@pytest.mark.parametrize(
    "family,resample", [("siglip", 3), ("siglip", 2), ("dinov2", 3), ("vit", 2)]
)  # SigLIP 2's fixed-resolution checkpoints resample bilinear (2), SigLIP's bicubic (3)
@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "P", "RGBA", "CMYK"])
def test_processor_matches_transformers(family, resample, mode):
    args = {**processor_args(family, 40), "resample": resample}
    family_default = FAMILIES[family].config_class().preprocess
    cfg = preprocess_config_from_hf(args, family_default)
    assert cfg.resize_mode == ("shortest_edge" if family == "dinov2" else "exact")
    for size in [(97, 61), (61, 97), (13, 17), (300, 200)]:
        img = random_image(mode, size=size, seed=sum(size))
        ours = preprocess_image(img, cfg)
        assert ours.shape == (40, 40, 3) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, hf_pixels(family, img, args), atol=1e-5)


@pytest.mark.parametrize("family", ["siglip", "dinov2", "vit"])
def test_default_processor_is_the_hubs(family):
    """With no preprocessor_config.json, the family's processor is the hub's."""
    cfg = FAMILIES[family].config_class().preprocess
    size = 224
    assert cfg == preprocess_config_from_hf(processor_args(family, size), PreprocessConfig())
    assert cfg.at_size(336).crop_size == 336
    expected_resize = 384 if family == "dinov2" else 336  # DINOv2 keeps 256:224
    assert cfg.at_size(336).resize_shortest_edge == expected_resize


# ----------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("family,variant", CHECKPOINTS)
def test_convert_and_load_match_transformers(family, variant, tmp_path, capsys):
    src = save_hf_encoder(tmp_path / "src", family, variant, seed=5)
    out = tmp_path / "conv"
    assert main(["convert", "--model", str(src), "--out", str(out), "--verify", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["family"] == family and record["verify_max_abs_diff"] < TOL
    assert "last_hidden_state" in record["verify_outputs"]
    assert ("pooler_output" in record["verify_outputs"]) == (family != "vit" or variant == "pooler")
    converted = json.loads((out / "config.json").read_text())
    assert converted["model_type"] == FAMILIES[family].config_class.MODEL_TYPE
    # The converted folder, and the Hugging Face one converted in memory, give the same tokens
    # as transformers at the processor's size.
    encoder, in_memory = loading.load_encoder(out), loading.load_encoder(src)
    assert encoder.config == in_memory.config
    size = encoder.config.input_size
    pixels = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
    ref = torch_forward(vision_tower(make_hf_encoder(family, variant, seed=5)), pixels)
    for model in (encoder, in_memory):
        out_ = model(mx.array(pixels))
        assert max_diff(out_.last_hidden_state, ref.last_hidden_state) < TOL
        assert max_diff(out_.pooler_output, ref.pooler_output) < TOL
    # Converting the converted folder changes nothing.
    assert loading.convert(out, tmp_path / "again")["family"] == family
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (
        out / "model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize("family", ["siglip", "dinov2", "vit"])
def test_conversion_refusals(family, tmp_path, capsys):
    src = save_hf_encoder(tmp_path / "src", family, seed=6)
    weights = dict(mx.load(str(src / "model.safetensors")))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((src / "config.json").read_bytes())

    def refused(*fragments):
        assert main(["convert", "--model", str(bad), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert all(f in err for f in fragments), err

    second_norm = ("1.layer_norm2.bias", "1.norm2.bias", "1.layernorm_after.bias")
    block = next(k for k in weights if k.endswith(second_norm))  # a norm of the last block
    mx.save_safetensors(
        str(bad / "model.safetensors"), {k: v for k, v in weights.items() if k != block}
    )
    refused("missing tensor", block)
    wrong = {**weights, block: mx.zeros((33,))}
    mx.save_safetensors(str(bad / "model.safetensors"), wrong)
    refused("shape mismatch", "(33,)")
    config = json.loads((src / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "hidden_size": 48}))
    mx.save_safetensors(str(bad / "model.safetensors"), weights)
    refused("do not fit")
    blob = (src / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(blob[:-100])
    refused("truncated")
    assert not (tmp_path / "out").exists()


def test_dinov2_swiglu_is_refused_as_a_user_error(tmp_path, capsys):
    src = save_hf_encoder(tmp_path / "src", "dinov2", seed=7)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "use_swiglu_ffn": True}))
    assert main(["convert", "--model", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "SwiGLU" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("family,variant", [("siglip", "vision"), ("dinov2", "registers")])
def test_load_encoder_at_another_image_size(family, variant, tmp_path):
    src = save_hf_encoder(tmp_path / "src", family, variant, seed=8)
    base = loading.load_encoder(src)
    big = loading.load_encoder(src, image_size=2 * base.config.input_size)
    assert big.config.input_size == 2 * base.config.input_size
    assert big.config.num_tokens - big.config.prefix_tokens == 4 * base.config.num_patches
    assert loading.encoder_config(str(src), image_size=big.config.input_size) == big.config
    # Images go through the scaled processor to the resized positions, as transformers with
    # interpolate_pos_encoding=True on its processor's output at that size.
    path = tmp_path / "photo.png"
    random_image("RGB", size=(150, 110), seed=1).save(path)
    pixels = preprocess_paths([path], big.config.preprocess)
    pre = big.config.preprocess
    args = processor_args(family, pre.crop_size)
    assert np.abs(pixels[0] - hf_pixels(family, Image.open(path), args)).max() < 1e-5
    ref = torch_forward(make_hf_encoder(family, variant, seed=8), pixels)
    assert max_diff(big(mx.array(pixels)).last_hidden_state, ref.last_hidden_state) < TOL
    with pytest.raises(UserError, match="smaller than one"):
        loading.load_encoder(src, image_size=4)
    with pytest.raises(UserError, match="whole number"):
        loading.encoder_config("dinov2-base", image_size="big")


# ----------------------------------------------------------------------------- bridge, encode


@pytest.mark.parametrize("family,variant", CHECKPOINTS[1:])
def test_bridge_matches_the_mlx_encoder(family, variant, tmp_path):
    src = save_hf_encoder(tmp_path / "src", family, variant, seed=9)
    encoder = loading.load_encoder(src, image_size=56)  # the bridge resizes positions too
    twin = bridge.BridgeEncoder.from_mlx(encoder)
    pixels = np.random.default_rng(1).standard_normal((2, 56, 56, 3)).astype(np.float32)
    mine = encoder(mx.array(pixels)).last_hidden_state
    assert max_diff(twin(pixels), mine) < TOL
    small = pixels[:, :28, :28]
    from_folder = bridge.BridgeEncoder.from_pretrained(str(src))(small)
    assert max_diff(from_folder, loading.load_encoder(src)(mx.array(small)).last_hidden_state) < TOL
    back = twin.to_mlx()
    assert max_diff(back(mx.array(pixels)).last_hidden_state, mine) < TOL


def test_encode_writes_the_pooler_only_when_there_is_one(tmp_path, capsys):
    image = tmp_path / "a.png"
    random_image("RGB", size=(50, 40)).save(image)
    for variant, pooled in (("pooler", True), ("no_pooler", False)):
        src = save_hf_encoder(tmp_path / variant, "vit", variant)
        out = tmp_path / f"{variant}.safetensors"
        args = ["encode", "--weights", str(src), str(image), "--out", str(out), "--json"]
        assert main([*args, "--image-size", "48"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["last_hidden_state"] == [1, 10, 32]  # 3x3 patches of 16 px + class
        assert ("pooler_output" in summary) == pooled
        assert ("pooler_output" in mx.load(str(out))) == pooled


@pytest.mark.parametrize("name,family,variant", [
    ("siglip2-base-patch16-224", "siglip", "full"),
    ("dinov2-with-registers-small", "dinov2", "registers"),
    ("vit-base-patch16-224-in21k", "vit", "pooler"),
])  # fmt: skip
def test_zoo_name_downloads_and_converts_once(name, family, variant, tmp_path, monkeypatch):
    """A zoo name fetches its hub repo (configs and safetensors only) through
    huggingface_hub.snapshot_download and converts it into the cache once."""
    import huggingface_hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv(loading.WEIGHTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    src = save_hf_encoder(tmp_path / "src", family, variant, seed=10)
    calls = []

    def fake_snapshot(repo_id, allow_patterns):
        calls.append((repo_id, tuple(allow_patterns)))
        return str(src)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    encoder = loading.load_encoder(name)
    assert [c[0] for c in calls] == [loading.zoo.ZOO[name].hub_id]
    assert "model.safetensors" in calls[0][1] and "pytorch_model.bin" not in calls[0][1]
    assert loading.is_converted(tmp_path / "hf" / "mlx-caption" / name)
    assert loading.load_encoder(name).config == encoder.config and len(calls) == 1
    assert type(encoder) is FAMILIES[family].model_class
