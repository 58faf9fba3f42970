"""CLIP preprocessing against transformers' CLIPImageProcessorPil, and image loading."""

import json

import mlx.core as mx
import numpy as np
import pytest
from clip_fixtures import image_processor, make_hf_clip, torch_vision_forward
from PIL import Image

from mlx_caption.data.preprocess import (
    PreprocessConfig,
    load_image,
    preprocess_config_from_hf,
    preprocess_image,
    preprocess_paths,
)
from mlx_caption.errors import UserError
from mlx_caption.models.clip import CLIPVisionConfig, CLIPVisionModel
from mlx_caption.models.clip import CLIPVisionModel as VisionTransformer


def random_image(mode: str, size=(97, 61), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    # Smooth-ish content so resampling differences would show; plus noise.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
    rgb = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    if mode == "RGBA" or mode == "LA":
        alpha = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
        img = img.convert(mode[:-1])
        img.putalpha(alpha)
        return img
    if mode == "P_transparent":
        img = img.convert("P")
        img.info["transparency"] = 0
        return img
    return img.convert(mode)


def reference(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    proc = image_processor(
        size=cfg.resize_shortest_edge,
        crop_size={"height": cfg.crop_size, "width": cfg.crop_size},
        resample={"bicubic": 3, "bilinear": 2, "nearest": 0}[cfg.resample],
        image_mean=list(cfg.image_mean),
        image_std=list(cfg.image_std),
    )
    out = proc(images=img, return_tensors="np")["pixel_values"][0]
    return out.transpose(1, 2, 0)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "P", "P_transparent", "RGBA", "CMYK"])
def test_modes_match_transformers(mode, tmp_path):
    img = random_image(mode)
    cfg = PreprocessConfig(resize_shortest_edge=48, crop_size=48)
    ref = reference(img, cfg)
    ours = preprocess_image(img, cfg)
    assert ours.shape == (48, 48, 3) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5
    # Through a file as well (PNG keeps every mode but CMYK, which goes to TIFF).
    path = tmp_path / ("img.tiff" if mode == "CMYK" else "img.png")
    img.save(path)
    assert (
        np.abs(preprocess_image(load_image(path), cfg) - reference(Image.open(path), cfg)).max()
        < 1e-5
    )


@pytest.mark.parametrize(
    "size,short,crop,resample",
    [
        ((300, 200), 224, 224, "bicubic"),  # landscape
        ((199, 401), 224, 224, "bicubic"),  # portrait, upscaling
        ((500, 500), 336, 336, "bicubic"),
        ((120, 90), 40, 48, "bilinear"),  # crop larger than the resized image: zero padding
        ((64, 77), 33, 21, "nearest"),  # odd sizes
    ],
)
def test_geometry_and_filters_match_transformers(size, short, crop, resample):
    img = random_image("RGB", size=size, seed=3)
    cfg = PreprocessConfig(resize_shortest_edge=short, crop_size=crop, resample=resample)
    ref = reference(img, cfg)
    ours = preprocess_image(img, cfg)
    assert ours.shape == ref.shape == (crop, crop, 3)
    assert np.abs(ours - ref).max() < 1e-5


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    img = load_image(path)
    assert img.mode == "RGB"
    arr = np.asarray(img)
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(arr[..., 0], expected) and np.array_equal(arr[..., 2], expected)


def test_exif_orientation_applied(tmp_path):
    img = random_image("RGB", size=(80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    loaded = load_image(path)
    assert loaded.size == (40, 80)


def test_bad_files_raise_user_error_naming_them(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(UserError, match="notes.txt"):
        load_image(text)
    good = tmp_path / "photo.jpg"
    random_image("RGB", size=(200, 200)).save(good, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="cut.jpg"):
        load_image(cut)
    with pytest.raises(UserError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="missing.png"):
        preprocess_paths([good, tmp_path / "missing.png"], PreprocessConfig())


def test_load_from_bytes_and_file_object(tmp_path):
    path = tmp_path / "a.png"
    random_image("RGB").save(path)
    a = np.asarray(load_image(path))
    assert np.array_equal(a, np.asarray(load_image(path.read_bytes())))
    with open(path, "rb") as f:
        assert np.array_equal(a, np.asarray(load_image(f)))


def test_image_file_to_encoder_end_to_end(tmp_path):
    """File -> our preprocessing -> MLX ViT equals CLIPImageProcessorPil -> CLIPVisionModel."""
    torch_model = make_hf_clip("vision", seed=2, geometry="B/32")
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    vcfg = CLIPVisionConfig.from_hf(json.loads(torch_model.config.to_json_string()))
    vit = VisionTransformer(vcfg)
    vit.load_weights([(k, mx.array(v)) for k, v in CLIPVisionModel.sanitize(state).items()])
    paths = []
    for i, (mode, size) in enumerate([("RGB", (320, 240)), ("RGBA", (200, 260))]):
        paths.append(tmp_path / f"{i}.png")
        random_image(mode, size=size, seed=i).save(paths[-1])
    pixels = preprocess_paths(paths, vcfg.preprocess)
    ref_pixels = np.stack([reference(Image.open(p), vcfg.preprocess) for p in paths])
    assert np.abs(pixels - ref_pixels).max() < 1e-5
    ref = torch_vision_forward(torch_model, ref_pixels)
    out = vit(mx.array(pixels))
    assert np.abs(np.array(out.last_hidden_state) - ref["last_hidden_state"]).max() < 1e-4
    assert np.abs(np.array(out.pooler_output) - ref["pooler_output"]).max() < 1e-4


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
@pytest.mark.parametrize(("side", "resample"), [(24, "bilinear"), (40, "bicubic")])
def test_exact_resize_matches_transformers_vit_processor(mode, side, resample):
    """``size={"height", "width"}`` processors (ViT, BLIP, SigLIP) squash the whole image."""
    import transformers

    hf = {"size": {"height": side, "width": side}, "resample": {"bilinear": 2, "bicubic": 3}[resample],
          "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}  # fmt: skip
    cfg = preprocess_config_from_hf(hf, PreprocessConfig())
    assert (cfg.resize_mode, cfg.crop_size, cfg.do_center_crop) == ("exact", side, False)
    img = random_image(mode, size=(97, 61))
    proc = transformers.ViTImageProcessorPil(**hf, do_convert_rgb=True)
    ref = proc(images=img, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    out = preprocess_image(img, cfg)
    assert out.shape == (side, side, 3)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # A non-square exact size is refused: no zoo model has one.
    with pytest.raises(UserError, match="non-square"):
        preprocess_config_from_hf({"size": {"height": 24, "width": 32}}, PreprocessConfig())
