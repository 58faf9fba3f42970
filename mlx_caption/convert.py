"""Convert a Hugging Face CLIP checkpoint into an MLX encoder folder.

A converted folder holds ``model.safetensors`` (HF names without ``vision_model.``, the
patch kernel OHWI), ``config.json`` (``VisionConfig.to_dict()``) and ``convert.json``
(source, dtype, checksums, versions).
"""

from __future__ import annotations

import numpy as np

from mlx_caption.config import CLIP_MEAN, CLIP_STD, PreprocessConfig, VisionConfig
from mlx_caption.errors import UserError

PATCH_KEY = "embeddings.patch_embedding.weight"
_DROP_PREFIXES = ("text_model.", "text_projection.", "logit_scale")


def sanitize(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map HF CLIP tensors to this package's vision names; running it twice changes nothing.

    Drops the text tower and ``position_ids`` buffers, strips ``vision_model.``, and turns
    the patch kernel from OIHW (torch) into OHWI (MLX). A kernel already OHWI is left as
    is: the channel axis (size ``num_channels``, normally 3) tells the two apart, since a
    patch is never 3 pixels wide while also having ``p`` channels.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        if key.startswith(_DROP_PREFIXES) or key.endswith("position_ids"):
            continue
        if key.startswith("vision_model."):
            key = key[len("vision_model.") :]
        if key == PATCH_KEY and value.ndim == 4 and _is_oihw(value.shape):
            value = np.ascontiguousarray(value.transpose(0, 2, 3, 1))
        out[key] = value
    return out


def _is_oihw(shape: tuple[int, ...]) -> bool:
    # OIHW: (D, C, p, p); OHWI: (D, p, p, C). Square patches mean H == W in both layouts.
    _, a, b, c = shape
    return b == c and a != b


def vision_config_from_hf(
    config: dict, preprocessor: dict | None = None, has_projection: bool = True
) -> VisionConfig:
    """A :class:`VisionConfig` from a HF ``config.json`` (CLIPConfig or CLIPVisionConfig).

    ``preprocessor`` is the ``preprocessor_config.json`` dict, if the checkpoint has one.
    ``projection_dim`` is kept only when the checkpoint holds a ``visual_projection``.
    """
    model_type = config.get("model_type")
    if model_type == "clip":
        vision = dict(config.get("vision_config") or {})
        projection_dim = config.get("projection_dim", vision.get("projection_dim", 512))
    elif model_type == "clip_vision_model":
        vision = config
        projection_dim = config.get("projection_dim", 512)
    else:
        raise UserError(
            f"not a CLIP checkpoint: config.json has model_type={model_type!r} "
            "(expected 'clip' or 'clip_vision_model')"
        )
    defaults = VisionConfig()
    names = [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_channels",
        "image_size",
        "patch_size",
        "hidden_act",
        "layer_norm_eps",
    ]
    # HF's CLIPVisionConfig defaults are ViT-B/32's, the same as VisionConfig's.
    args = {n: vision.get(n, getattr(defaults, n)) for n in names}
    cfg = VisionConfig(**args, projection_dim=int(projection_dim) if has_projection else None)
    cfg.preprocess = preprocess_config_from_hf(preprocessor or {}, cfg.image_size)
    return cfg


_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def preprocess_config_from_hf(pre: dict, image_size: int) -> PreprocessConfig:
    """A :class:`PreprocessConfig` from ``preprocessor_config.json`` (CLIP defaults if empty)."""
    size = pre.get("size", image_size)
    if isinstance(size, dict):
        size = size.get("shortest_edge") or size.get("height") or image_size
    crop = pre.get("crop_size", size)
    if isinstance(crop, dict):
        crop = crop.get("height") or crop.get("shortest_edge") or size
    resample = pre.get("resample", 3)
    if resample not in _RESAMPLE:
        raise UserError(f"unsupported resample filter {resample!r} in preprocessor_config.json")
    return PreprocessConfig(
        resize_shortest_edge=int(size),
        crop_size=int(crop),
        resample=_RESAMPLE[resample],
        do_center_crop=bool(pre.get("do_center_crop", True)),
        rescale_factor=float(pre.get("rescale_factor", 1 / 255)),
        image_mean=tuple(float(v) for v in pre.get("image_mean", CLIP_MEAN)),
        image_std=tuple(float(v) for v in pre.get("image_std", CLIP_STD)),
    )
