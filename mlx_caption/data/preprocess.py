"""Exact CLIP preprocessing with Pillow and NumPy.

Matches ``transformers``' ``CLIPImageProcessorPil`` step for step: RGB conversion
(transparency composited on white), resize of the shortest side with the checkpoint's
filter (long side ``int(size * long / short)``), center crop (zero padding if too small),
rescale in float64 then float32, normalize in float32. The output is NHWC-ready
``(H, W, 3)`` float32.

Beyond transformers: EXIF orientation is applied, and 16-bit images are scaled to 8 bits
instead of being clipped at 255.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlx_caption.errors import UserError

# OpenAI CLIP's normalisation: the default, as most checkpoints here use it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# transformers' IMAGENET_STANDARD_* (ViT, SigLIP) and IMAGENET_DEFAULT_* (DINOv2).
STANDARD_MEAN = STANDARD_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


RESIZE_MODES = ("shortest_edge", "exact")


@dataclass
class PreprocessConfig:
    """How an image becomes an encoder's input (a checkpoint's image-processor settings).

    The output is always ``crop_size x crop_size``. ``resize_mode`` says how: CLIP's and
    DINOv2's processors resize the shortest side to ``resize_shortest_edge`` (aspect kept),
    then center-crop; BLIP's, ViT's and SigLIP's squash the whole image to the output size
    (``"exact"``, transformers' ``size={"height", "width"}``), with no crop.
    """

    resize_shortest_edge: int = 224
    crop_size: int = 224
    resample: str = "bicubic"  # "bicubic" | "bilinear" | "nearest" | "lanczos"
    do_center_crop: bool = True
    resize_mode: str = "shortest_edge"  # or "exact"
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in data.items() if k in names})
        cfg.image_mean = tuple(cfg.image_mean)
        cfg.image_std = tuple(cfg.image_std)
        return cfg

    def at_size(self, size: int) -> PreprocessConfig:
        """The same processor with a ``size``-pixel output; a shortest-side resize keeps its
        ratio to the crop (DINOv2's 256 for a 224 crop becomes 384 for 336)."""
        resize = size
        if self.resize_mode == "shortest_edge":
            resize = round(self.resize_shortest_edge * size / self.crop_size)
        return dataclasses.replace(self, resize_shortest_edge=resize, crop_size=size)

    def summary(self) -> str:
        """A short description for listings: ``squash 224, bilinear, mean/std 0.5``."""
        names = {CLIP_MEAN: "CLIP", IMAGENET_MEAN: "ImageNet", STANDARD_MEAN: "0.5"}
        norm = names.get(tuple(self.image_mean), "custom")
        norm = f"mean/std {norm}" if norm == "0.5" else f"{norm} mean/std"
        if self.resize_mode == "exact":
            geometry = f"squash {self.crop_size}"
        else:
            crop = f", crop {self.crop_size}" if self.do_center_crop else ""
            geometry = f"resize {self.resize_shortest_edge}{crop}"
        return f"{geometry}, {self.resample}, {norm}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        return d


def squash_preprocess(
    size: int,
    resample: str,
    image_mean: tuple[float, float, float] = STANDARD_MEAN,
    image_std: tuple[float, float, float] = STANDARD_STD,
) -> PreprocessConfig:
    """A processor that squashes the whole image to ``size`` square, no crop (transformers'
    ``size={"height", "width"}``: ViT's, SigLIP's, BLIP's)."""
    return PreprocessConfig(
        resize_shortest_edge=size,
        crop_size=size,
        resample=resample,
        do_center_crop=False,
        resize_mode="exact",
        image_mean=image_mean,
        image_std=image_std,
    )


# PIL's filter numbers, as Hugging Face's preprocessor_config.json stores them.
_HF_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
_HF_FILTER_NUMBERS = {name: number for number, name in _HF_RESAMPLE.items()}


def preprocess_config_from_hf(pre: dict, defaults: PreprocessConfig) -> PreprocessConfig:
    """A :class:`PreprocessConfig` from ``preprocessor_config.json``; what the file leaves out
    comes from ``defaults`` (the family's processor).

    ``size`` may be an int or ``{"shortest_edge": n}`` (resize the shortest side, then crop to
    ``crop_size``) or ``{"height": h, "width": w}`` (squash to that size: ``"exact"``).
    """
    size = pre.get("size", defaults.resize_shortest_edge)
    mode = defaults.resize_mode
    if isinstance(size, dict):
        if "shortest_edge" in size:
            size, mode = size["shortest_edge"], "shortest_edge"
        elif "height" in size:
            if size.get("width", size["height"]) != size["height"]:
                raise UserError(f"non-square image size {size} in preprocessor_config.json")
            size, mode = size["height"], "exact"
        else:
            raise UserError(f"unsupported image size {size} in preprocessor_config.json")
    exact = mode == "exact"
    crop = (
        size if exact else pre.get("crop_size", defaults.crop_size if "size" not in pre else size)
    )
    if isinstance(crop, dict):
        crop = crop.get("height") or crop.get("shortest_edge") or size
    resample = pre.get("resample", _HF_FILTER_NUMBERS[defaults.resample])
    if resample not in _HF_RESAMPLE:
        raise UserError(f"unsupported resample filter {resample!r} in preprocessor_config.json")
    return PreprocessConfig(
        resize_shortest_edge=int(size),
        crop_size=int(crop),
        resample=_HF_RESAMPLE[resample],
        do_center_crop=False if exact else bool(pre.get("do_center_crop", defaults.do_center_crop)),
        resize_mode=mode,
        rescale_factor=float(pre.get("rescale_factor", defaults.rescale_factor)),
        image_mean=tuple(float(v) for v in pre.get("image_mean", defaults.image_mean)),
        image_std=tuple(float(v) for v in pre.get("image_std", defaults.image_std)),
    )


RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "<file object>"


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy of ``img``: alpha over white (as transformers does), 16-bit scaled to 8."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's own I;16 -> RGB clips at 255 (a 16-bit image turns white); scale instead.
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "I" and arr.max(initial=0) <= 255:
            scaled = arr
        else:
            scaled = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), mode="L")
    has_alpha = "A" in img.getbands() or img.info.get("transparency") is not None
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(source: str | os.PathLike | BinaryIO | bytes) -> Image.Image:
    """Open an image file (path, bytes or binary file object) as an RGB ``PIL.Image``.

    The whole file is decoded now, so a truncated or corrupt file fails here, with a
    :class:`UserError` naming it, rather than later inside a batch. EXIF orientation is
    applied, transparency composited on white, and grayscale, palette, CMYK and 16-bit
    images converted to 8-bit RGB.
    """
    name = _describe(source) if not isinstance(source, bytes) else "<bytes>"
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise UserError(f"image not found: {name}")
    try:
        with Image.open(source) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except UnidentifiedImageError:
        raise UserError(f"not an image (unrecognised format): {name}") from None
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow signals truncated/corrupt data with OSError (and SyntaxError for some formats).
        raise UserError(f"cannot read image {name}: {err}") from None


def resize_shortest_edge(img: Image.Image, size: int, resample: str = "bicubic") -> Image.Image:
    """Resize so the shorter side is ``size``; the longer side is ``int(size * long / short)``."""
    if resample not in RESAMPLE:
        raise UserError(f"unknown resample filter {resample!r}; choose from {sorted(RESAMPLE)}")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((new_w, new_h), resample=RESAMPLE[resample])


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Center crop ``(H, W, C)`` to ``size x size``; pads with zeros where the image is smaller."""
    h, w = arr.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    if top >= 0 and left >= 0:
        return arr[top : top + size, left : left + size]
    # Same placement as transformers: pad to at least size x size, centred (ceil), then crop.
    nh, nw = max(size, h), max(size, w)
    padded = np.zeros((nh, nw) + arr.shape[2:], dtype=arr.dtype)
    tp, lp = -(-(nh - h) // 2), -(-(nw - w) // 2)
    padded[tp : tp + h, lp : lp + w] = arr
    top, left = top + tp, left + lp
    return padded[max(0, top) : min(nh, top + size), max(0, left) : min(nw, left + size)]


def preprocess_image(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """One image as the encoder sees it: ``(crop, crop, 3)`` float32, normalized."""
    if img.mode != "RGB":
        img = to_rgb(img)
    if cfg.resize_mode == "exact":
        img = img.resize((cfg.crop_size, cfg.crop_size), resample=RESAMPLE[cfg.resample])
    else:
        img = resize_shortest_edge(img, cfg.resize_shortest_edge, cfg.resample)
    arr = np.asarray(img)
    if cfg.do_center_crop and cfg.resize_mode != "exact":
        arr = center_crop(arr, cfg.crop_size)
    # float64 multiply then float32, as transformers' rescale does (bit-identical results).
    x = (arr.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    mean = np.asarray(cfg.image_mean, dtype=np.float32)
    std = np.asarray(cfg.image_std, dtype=np.float32)
    return (x - mean) / std


def preprocess_paths(
    paths: Iterable[str | os.PathLike] | Sequence[str | os.PathLike], cfg: PreprocessConfig
) -> np.ndarray:
    """Load and preprocess image files in order: ``(N, crop, crop, 3)`` float32."""
    arrays = [preprocess_image(load_image(p), cfg) for p in paths]
    if not arrays:
        return np.zeros((0, cfg.crop_size, cfg.crop_size, 3), dtype=np.float32)
    return np.stack(arrays)
