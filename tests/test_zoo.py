"""The encoder zoo: registry, listing, load_encoder by name/folder/hub id, presets."""

import json

import mlx.core as mx
import numpy as np
import pytest
from clip_fixtures import save_hf_clip

from mlx_caption import hub, zoo
from mlx_caption import loading as conv
from mlx_caption.cli import main
from mlx_caption.errors import UserError
from mlx_caption.models import registry
from mlx_caption.models.captioner import CaptionerConfig
from mlx_caption.models.decoder import DECODER_PRESETS
from mlx_caption.models.registry import FAMILIES

# Parameter counts of transformers' models (CLIPVisionModelWithProjection, SiglipVisionModel,
# Dinov2Model / Dinov2WithRegistersModel, ViTModel) built from the real checkpoints' configs,
# so a wrong registry entry shows up here.
KNOWN_PARAMS = {
    "clip-vit-base-patch32": 87_849_216,
    "clip-vit-base-patch16": 86_192_640,
    "clip-vit-large-patch14": 303_966_208,
    "clip-vit-large-patch14-336": 304_293_888,
    "laion-clip-vit-b32": 87_849_216,
    "siglip-base-patch16-224": 92_884_224,
    "siglip-base-patch16-256": 92_930_304,
    "siglip-base-patch16-384": 93_176_064,
    "siglip-base-patch16-512": 93_520_128,
    "siglip-large-patch16-256": 315_956_224,
    "siglip-large-patch16-384": 316_283_904,
    "siglip-so400m-patch14-384": 428_225_600,
    "siglip2-base-patch16-224": 92_884_224,
    "siglip2-base-patch16-256": 92_930_304,
    "siglip2-base-patch16-384": 93_176_064,
    "siglip2-base-patch16-512": 93_520_128,
    "siglip2-large-patch16-256": 315_956_224,
    "siglip2-large-patch16-384": 316_283_904,
    "siglip2-large-patch16-512": 316_742_656,
    "siglip2-so400m-patch14-384": 428_225_600,
    "siglip2-so400m-patch16-384": 428_256_704,
    "dinov2-small": 22_056_576,
    "dinov2-base": 86_580_480,
    "dinov2-large": 304_368_640,
    "dinov2-with-registers-small": 22_058_112,
    "dinov2-with-registers-base": 86_583_552,
    "dinov2-with-registers-large": 304_372_736,
    "vit-base-patch16-224-in21k": 86_389_248,
    "vit-large-patch16-224-in21k": 304_351_232,
}
# Per image: tokens, then the processor (resize side, crop, filter) as the hub has it.
EXPECTED = {
    "siglip-base-patch16-224": (196, 224, 224, "bicubic"),
    "siglip-so400m-patch14-384": (729, 384, 384, "bicubic"),
    "siglip2-base-patch16-512": (1024, 512, 512, "bilinear"),
    "dinov2-base": (257, 256, 224, "bicubic"),
    "dinov2-with-registers-large": (261, 256, 224, "bicubic"),
    "vit-large-patch16-224-in21k": (197, 224, 224, "bilinear"),
}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real weights dir or cache leaks in: everything under tmp_path."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv(conv.WEIGHTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("name", [e.name for e in zoo.entries("encoder")])
def test_registry_entries_are_complete(name):
    entry = zoo.ZOO[name]
    cfg = entry.make_config()
    family = FAMILIES[entry.family]
    assert entry.name == name and entry.kind == "encoder" and "/" in entry.hub_id
    assert isinstance(cfg, family.config_class)
    assert cfg.hidden_size % cfg.num_attention_heads == 0
    if entry.family == "dinov2":  # a 518-px table fed 224-px crops
        assert (cfg.image_size, cfg.input_size) == (518, 224)
    else:
        assert cfg.preprocess.crop_size == cfg.image_size
    act = {"clip": "quick_gelu", "siglip": "gelu_pytorch_tanh"}.get(entry.family, "gelu")
    assert cfg.hidden_act == ("gelu" if name.startswith("laion") else act)
    # Our encoders leave out DINOv2's mask token (masked-image modelling only).
    mask_token = cfg.hidden_size if entry.family == "dinov2" else 0
    assert conv.count_parameters(cfg) == KNOWN_PARAMS[name] - mask_token
    assert registry.encoder_config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    row = entry.describe()
    assert row["tokens"] == cfg.num_tokens and str(row["tokens"]) in entry.description
    if name in EXPECTED:
        pre = cfg.preprocess
        assert (cfg.num_tokens, pre.resize_shortest_edge, pre.crop_size, pre.resample) == (
            EXPECTED[name]
        )


def test_registry_covers_required_models():
    hubs = {e.hub_id for e in zoo.ZOO.values()}
    assert {
        "openai/clip-vit-base-patch32",
        "openai/clip-vit-base-patch16",
        "openai/clip-vit-large-patch14",
        "openai/clip-vit-large-patch14-336",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        *(f"google/siglip-base-patch16-{n}" for n in (224, 256, 384, 512)),
        "google/siglip-large-patch16-256",
        "google/siglip-large-patch16-384",
        "google/siglip-so400m-patch14-384",
        "google/siglip2-base-patch16-224",
        *(f"facebook/dinov2-{s}" for s in ("small", "base", "large")),
        *(f"facebook/dinov2-with-registers-{s}" for s in ("small", "base", "large")),
        "google/vit-base-patch16-224-in21k",
        "google/vit-large-patch16-224-in21k",
    } <= hubs


def test_list_and_cli_show_local_conversions(tmp_path, monkeypatch, capsys):
    src = save_hf_clip(tmp_path / "src", kind="vision_proj")
    conv.convert(src, tmp_path / "mine" / "clip-vit-base-patch16")
    conv.convert(src, tmp_path / "weights" / "clip-vit-base-patch32")
    monkeypatch.setenv(conv.WEIGHTS_ENV, str(tmp_path / "mine"))
    rows = {r["name"]: r for r in conv.list_models()}
    assert rows["clip-vit-base-patch16"]["converted"]
    assert rows["clip-vit-base-patch16"]["path"].endswith("mine/clip-vit-base-patch16")
    assert rows["clip-vit-base-patch32"]["path"] == "weights/clip-vit-base-patch32"
    assert not rows["clip-vit-large-patch14"]["converted"]
    assert rows["clip-vit-large-patch14-336"]["tokens"] == 577

    assert main(["zoo", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in listed] == list(zoo.ZOO)
    blip_large = next(r for r in listed if r["name"] == "blip-large")
    # float32 bytes of transformers' parameter count (test_captioner_families.ZOO_ROWS)
    assert blip_large["size_mb"] == pytest.approx(4 * 446_290_492 / 1e6, abs=0.1)
    assert main(["zoo"]) == 0
    text = capsys.readouterr().out
    assert "openai/clip-vit-large-patch14-336" in text and "mine/clip-vit-base-patch16" in text
    assert "Salesforce/blip-image-captioning-large" in text and "136.7" in text


def test_load_encoder_from_folders(tmp_path):
    src = save_hf_clip(tmp_path / "src", kind="vision_proj", seed=2, geometry="tiny")
    conv.convert(src, tmp_path / "conv")
    x = mx.random.normal((1, 64, 64, 3))
    a = conv.load_encoder(tmp_path / "conv")
    b = conv.load_encoder(str(tmp_path / "conv"))  # loading twice gives the same model
    c = conv.load_encoder(src)  # an unconverted HF folder, converted in memory
    assert a.config == b.config == c.config
    outs = [np.array(m(x).last_hidden_state) for m in (a, b, c)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert not a.training


def test_zoo_name_converts_once_into_cache(tmp_path, monkeypatch):
    src = save_hf_clip(tmp_path / "src", kind="vision_proj", geometry="tiny")
    calls = []

    def fake_download(repo_id, allow_patterns):
        calls.append(repo_id)
        return src

    monkeypatch.setattr(hub, "download", fake_download)
    model = conv.load_encoder("clip-vit-base-patch32")
    assert calls == ["openai/clip-vit-base-patch32"]
    cached = tmp_path / "hf" / "mlx-caption" / "clip-vit-base-patch32"
    assert conv.is_converted(cached)
    again = conv.load_encoder("openai/clip-vit-base-patch32")  # hub id of a zoo entry
    assert calls == ["openai/clip-vit-base-patch32"]
    assert again.config == model.config
    other = conv.load_encoder("someone/custom-clip")  # any hub id
    assert calls[-1] == "someone/custom-clip"
    assert (tmp_path / "hf" / "mlx-caption" / "someone--custom-clip" / "convert.json").is_file()
    assert other.config == model.config


def test_load_encoder_refusals(tmp_path):
    with pytest.raises(UserError, match="unknown encoder"):
        conv.load_encoder("no-such-model")
    src = save_hf_clip(tmp_path / "src", kind="vision", geometry="tiny")
    conv.convert(src, tmp_path / "conv")
    blob = (tmp_path / "conv" / "model.safetensors").read_bytes()
    (tmp_path / "conv" / "model.safetensors").write_bytes(blob[:-8])
    with pytest.raises(UserError, match="truncated"):
        conv.load_encoder(tmp_path / "conv")


def test_decoder_presets_and_encoder_config(tmp_path):
    tiny, small, base = (DECODER_PRESETS[k] for k in ("tiny", "small", "base"))
    assert (tiny.hidden_size, tiny.num_layers, tiny.num_heads, tiny.intermediate_size) == (
        256, 3, 4, 1024,
    )  # fmt: skip
    assert (small.hidden_size, small.num_layers, small.num_heads) == (512, 6, 8)
    assert (base.hidden_size, base.num_layers, base.num_heads) == (768, 12, 12)
    vision = conv.encoder_config("clip-vit-base-patch16")  # no download: the zoo's table
    assert (vision.patch_size, vision.projection_dim, vision.num_tokens) == (16, 512, 197)
    cfg = CaptionerConfig(vision=vision, decoder=small, encoder_name="clip-vit-base-patch16")
    assert CaptionerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    src = save_hf_clip(tmp_path / "src", kind="vision", geometry="tiny")
    conv.convert(src, tmp_path / "conv")
    assert conv.encoder_config(str(tmp_path / "conv")).image_size == 64
    assert conv.encoder_config(str(src)).image_size == 64  # an unconverted HF folder
    with pytest.raises(UserError, match="unknown encoder"):
        conv.encoder_config("no-such-encoder")
