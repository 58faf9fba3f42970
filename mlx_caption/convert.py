"""Convert a Hugging Face CLIP checkpoint into an MLX encoder folder.

A converted folder holds ``model.safetensors`` (HF names without ``vision_model.``, the
patch kernel OHWI), ``config.json`` (``VisionConfig.to_dict()``) and ``convert.json``
(source, dtype, checksums, versions).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_caption.config import CLIP_MEAN, CLIP_STD, PreprocessConfig, VisionConfig
from mlx_caption.errors import UserError

PATCH_KEY = "embeddings.patch_embedding.weight"
_DROP_PREFIXES = ("text_model.", "text_projection.", "logit_scale")


def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
    """Map HF CLIP tensors to this package's vision names; running it twice changes nothing.

    Drops the text tower and ``position_ids`` buffers, strips ``vision_model.``, and turns
    the patch kernel from OIHW (torch) into OHWI (MLX). A kernel already OHWI is left as
    is: the two are told apart by which axes are equal (the square patch's), so only a
    3-pixel patch over 3 channels would be ambiguous. Works on numpy and MLX arrays.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        if key.startswith(_DROP_PREFIXES) or key.endswith("position_ids"):
            continue
        if key.startswith("vision_model."):
            key = key[len("vision_model.") :]
        if key == PATCH_KEY and value.ndim == 4 and _is_oihw(tuple(value.shape)):
            value = value.transpose(0, 2, 3, 1)
            if isinstance(value, np.ndarray):
                value = np.ascontiguousarray(value)
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


def _torch_dtype_map() -> dict:
    import torch

    return {torch.float32: mx.float32, torch.float16: mx.float16, torch.bfloat16: mx.bfloat16}


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


# ----------------------------------------------------------------------------- reading

CONVERTED_MARKER = "convert.json"
_SAFETENSORS_DTYPES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U8": 1, "BOOL": 1,
}  # fmt: skip
_HUB_PATTERNS_SAFE = [
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
]
_HUB_PATTERNS_BIN = ["config.json", "preprocessor_config.json", "pytorch_model.bin"]


@dataclass
class Checkpoint:
    """A CLIP checkpoint read from disk: vision weights (MLX names), config and provenance."""

    folder: Path
    config: VisionConfig
    weights: dict[str, mx.array]  # sanitized: vision tower only, HF names, OHWI patch kernel
    inputs: list[Path]  # the files read, for checksums
    converted: bool  # an MLX folder made by this module (convert.json present)
    source_info: dict = field(default_factory=dict)  # a converted folder's convert.json


def is_converted(folder: str | os.PathLike) -> bool:
    """True for a folder written by :func:`convert` (it has ``convert.json``)."""
    return (Path(folder) / CONVERTED_MARKER).is_file()


def check_safetensors(path: Path) -> dict:
    """Validate a safetensors file's header against its size; return the tensor table.

    Catches truncated downloads and files that are not safetensors at all, with a
    :class:`UserError` naming the file, before any tensor is read.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than the 8-byte header length")
            n = struct.unpack("<Q", raw)[0]
            if n > min(size - 8, 100 * 2**20):
                raise ValueError(f"header length {n} does not fit in a {size}-byte file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        end = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]
            want = _SAFETENSORS_DTYPES.get(dtype, 0) * math.prod(shape)
            if dtype in _SAFETENSORS_DTYPES and hi - lo != want:
                raise ValueError(f"tensor {name!r}: {hi - lo} bytes for shape {shape} {dtype}")
            end = max(end, hi)
        if 8 + n + end != size:
            raise ValueError(f"expected {8 + n + end} bytes, found {size} (truncated?)")
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise UserError(f"corrupt or truncated safetensors file {path}: {err}") from None
    return header


def _load_safetensors(path: Path) -> dict[str, mx.array]:
    check_safetensors(path)
    try:
        return mx.load(str(path))
    except (RuntimeError, ValueError, OSError) as err:
        raise UserError(f"cannot read safetensors file {path}: {err}") from None


def _load_torch_bin(path: Path) -> dict[str, mx.array]:
    try:
        import torch
    except ImportError:
        raise UserError(
            f"{path.name} is a PyTorch pickle and torch is not installed: install the torch "
            "extra (pip install 'mlx-caption[torch]') or use a checkpoint with safetensors"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files
        raise UserError(f"cannot read {path}: {err}") from None
    out = {}
    for key, value in state.items():
        if not key.startswith(_DROP_PREFIXES):
            # numpy has no bfloat16: go through float32, which is exact for bf16 and fp16.
            out[key] = mx.array(value.detach().float().numpy()).astype(
                _torch_dtype_map().get(value.dtype, mx.float32)
            )
    return out


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object")
    return data


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index} has no weight_map")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise UserError(f"{folder}: shard(s) listed in the index are missing: {missing}")
        return [folder / s for s in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise UserError(
        f"{folder} has no weights: expected model.safetensors, a sharded "
        "model.safetensors.index.json, or pytorch_model.bin"
    )


def read_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """Read a local CLIP checkpoint (HF or already converted) and validate every tensor."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json: not a Hugging Face or converted model")
    raw_config = _read_json(folder / "config.json")
    converted = is_converted(folder)
    if converted:
        cfg = VisionConfig.from_dict(raw_config)
        files = [folder / "model.safetensors"]
        if not files[0].is_file():
            raise UserError(f"{folder} has convert.json but no model.safetensors")
        raw = _load_safetensors(files[0])
        info = _read_json(folder / CONVERTED_MARKER)
    else:
        if raw_config.get("model_type") not in ("clip", "clip_vision_model"):
            raise UserError(
                f"{folder} is not a CLIP checkpoint: config.json has model_type="
                f"{raw_config.get('model_type')!r} (expected 'clip' or 'clip_vision_model')"
            )
        files = _weight_files(folder)
        raw = {}
        for path in files:
            part = _load_torch_bin(path) if path.suffix == ".bin" else _load_safetensors(path)
            raw.update(part)
        pre_path = folder / "preprocessor_config.json"
        pre = _read_json(pre_path) if pre_path.is_file() else None
        if pre is not None:
            files.append(pre_path)
        has_proj = any(k.endswith("visual_projection.weight") for k in raw)
        cfg = vision_config_from_hf(raw_config, pre, has_projection=has_proj)
        files.insert(0, folder / "config.json")
        info = {}
    weights = sanitize(raw)
    validate_weights(weights, cfg, str(folder))
    return Checkpoint(folder, cfg, weights, files, converted, info)


def expected_shapes(cfg: VisionConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of ``VisionTransformer(cfg)`` and its shape (nothing is computed)."""
    from mlx_caption.models.vit import VisionTransformer

    model = VisionTransformer(cfg)
    return {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}


def validate_weights(weights: dict[str, mx.array], cfg: VisionConfig, where: str) -> None:
    """Refuse missing, unexpected, non-float or wrongly shaped tensors (a UserError each)."""
    shapes = expected_shapes(cfg)
    missing = sorted(set(shapes) - set(weights))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UserError(f"{where}: missing tensor(s) {', '.join(missing[:5])}{more}")
    extra = sorted(set(weights) - set(shapes))
    if extra:
        raise UserError(f"{where}: unexpected tensor(s) for a CLIP vision model: {extra[:5]}")
    for key, shape in shapes.items():
        got = tuple(weights[key].shape)
        if got != shape:
            raise UserError(f"{where}: tensor {key} has shape {got}, expected {shape}")
        if not mx.issubdtype(weights[key].dtype, mx.floating):
            raise UserError(f"{where}: tensor {key} has dtype {weights[key].dtype}, not float")


# ----------------------------------------------------------------------------- sources


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` with no path syntax (a local path that exists always wins)."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name)) and ".." not in name


def resolve_source(model: str | os.PathLike) -> tuple[Path, str]:
    """A local folder for ``model`` (downloading a hub id); returns (folder, "local"|"hub")."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{path} is a file; give the checkpoint folder")
        return path, "local"
    if not looks_like_hub_id(str(model)):
        raise UserError(f"checkpoint folder not found: {model}")
    return download(str(model)), "hub"


def download(repo_id: str) -> Path:
    """Fetch only what conversion needs from the hub: configs and safetensors, else the .bin."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a core dependency
        raise UserError("huggingface_hub is needed to download models") from None
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS_SAFE))
        if not any(folder.glob("model*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS_BIN))
    except Exception as err:  # network, auth, missing repo: all the user's to fix
        raise UserError(f"cannot download {repo_id!r} from the Hugging Face hub: {err}") from None
    return folder


# ----------------------------------------------------------------------------- writing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("mlx-caption", "mlx", "numpy", "safetensors", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def convert(
    model: str | os.PathLike,
    out: str | os.PathLike,
    dtype: str = "float32",
    verify: bool = False,
) -> dict:
    """Convert ``model`` (hub id, HF folder or converted folder) into the folder ``out``.

    Everything is written into a temporary folder beside ``out`` and renamed into place,
    so ``out`` is either the old folder or the complete new one. Returns the
    ``convert.json`` record (plus ``verify_max_abs_diff`` when ``verify``).
    """
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not is_converted(out):
        raise UserError(
            f"--out {out} exists and is not a converted encoder folder; not touching it"
        )
    folder, kind = resolve_source(model)
    ckpt = read_checkpoint(folder)
    target = DTYPES[dtype]
    weights = {k: ckpt.weights[k].astype(target) for k in sorted(ckpt.weights)}
    mx.eval(weights)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(ckpt.config.to_dict(), indent=2) + "\n")
        record = {
            "source": str(model),
            "source_kind": "converted" if ckpt.converted else kind,
            "original_source": ckpt.source_info.get("original_source", str(model)),
            "dtype": dtype,
            "inputs": {p.name: sha256_file(p) for p in ckpt.inputs},
            "output": {"model.safetensors": sha256_file(tmp / "model.safetensors")},
            "versions": _versions(),
        }
        (tmp / CONVERTED_MARKER).write_text(json.dumps(record, indent=2) + "\n")
        if verify:
            record["verify_max_abs_diff"] = verify_conversion(ckpt, tmp, dtype)
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _replace_folder(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an old ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "x")
    os.rename(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
VERIFY_TOLERANCE = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 2.5e-1}


# ----------------------------------------------------------------------------- verify


def verify_conversion(ckpt: Checkpoint, converted: Path, dtype: str = "float32") -> float:
    """Max abs difference between transformers and the converted MLX model on random input.

    The torch side gets the source tensors in float32 (the original layout restored); the
    MLX side loads the written folder. Raises UserError above the dtype's tolerance.
    """
    try:
        import torch
        import transformers
    except ImportError:
        raise UserError("--verify needs torch and transformers (the torch extra)") from None
    from mlx_caption.bridge import hf_vision_config
    from mlx_caption.zoo import load_converted

    cfg = ckpt.config
    hf_cfg = hf_vision_config(cfg)
    cls = (
        transformers.CLIPVisionModelWithProjection
        if cfg.projection_dim
        else transformers.CLIPVisionModel
    )
    torch_model = cls(hf_cfg).eval()
    state = {}
    for hf_key in torch_model.state_dict():
        key = hf_key.removeprefix("vision_model.")
        if key.endswith("position_ids"):
            continue
        value = np.array(ckpt.weights[key].astype(mx.float32))
        if key == PATCH_KEY:
            value = value.transpose(0, 3, 1, 2)  # back to OIHW
        state[hf_key] = torch.from_numpy(np.ascontiguousarray(value))
    torch_model.load_state_dict(state, strict=False)

    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((2, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(
            pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
        )
    vit = load_converted(converted)
    out = vit(mx.array(pixels).astype(DTYPES[dtype]))
    diffs = [_max_diff(out.last_hidden_state, ref.last_hidden_state.numpy())]
    if cfg.projection_dim:
        diffs.append(_max_diff(out.image_embeds, ref.image_embeds.numpy()))
    else:
        diffs.append(_max_diff(out.pooler_output, ref.pooler_output.numpy()))
    diff = max(diffs)
    if not diff <= VERIFY_TOLERANCE[dtype]:
        raise UserError(
            f"verification failed: max abs difference {diff:.3g} against transformers "
            f"exceeds {VERIFY_TOLERANCE[dtype]:g} for {dtype}"
        )
    return diff


def _max_diff(a: mx.array, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.array(a.astype(mx.float32)) - b)))
