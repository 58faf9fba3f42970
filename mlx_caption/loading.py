"""One loader for every model: read a checkpoint, validate it, convert it, load it back.

A checkpoint comes as a hub id or a folder: Hugging Face format (``config.json`` with a
``model_type``; ``model.safetensors``, sharded safetensors with an index, or
``pytorch_model.bin`` read with ``torch.load(weights_only=True)``), a folder converted by
:func:`convert` (``convert.json`` beside the weights), or one of our captioner checkpoints.
The ``model_type`` picks the family (``models/registry.py``), whose config reads the rest and
whose ``sanitize`` maps the tensors; every tensor is then checked against the model's own
names, shapes and dtypes before anything is built.

Zoo names resolve to folders in, in order: ``$MLX_CAPTION_WEIGHTS/<name>``,
``./weights/<name>``, then the cache ``$HF_HOME/mlx-caption/<name>`` (default
``~/.cache/huggingface/mlx-caption``), where a zoo model is converted the first time it is
asked for.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_caption import hub, zoo
from mlx_caption.errors import UserError
from mlx_caption.files import atomic_dir, read_json, sha256_file, write_json
from mlx_caption.models.base import Family
from mlx_caption.models.captioner import MODEL_TYPE as CAPTIONER_MODEL_TYPE
from mlx_caption.models.captioner import Captioner, CaptionerConfig
from mlx_caption.models.registry import encoder_config_from_dict, family_for, family_of
from mlx_caption.pretrained_tokenizer import TOKENIZER_FILES, PretrainedTokenizer
from mlx_caption.tokenizer import TOKENIZER_FILE, CaptionTokenizer

WEIGHTS_ENV = "MLX_CAPTION_WEIGHTS"
CONVERTED_MARKER = "convert.json"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE)
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
GENERATION_FILE = "generation_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
_HUB_FILES = [CONFIG_FILE, PREPROCESSOR_FILE, GENERATION_FILE, *TOKENIZER_FILES]
_HUB_SAFETENSORS = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
_SAFETENSORS_DTYPES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U8": 1, "BOOL": 1,
}  # fmt: skip


# ----------------------------------------------------------------------------- sources


def resolve_source(model: str | os.PathLike) -> tuple[Path, str]:
    """A local folder for ``model`` (downloading a hub id); returns (folder, "local"|"hub")."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{path} is a file; give the checkpoint folder")
        return path, "local"
    if not hub.looks_like_hub_id(str(model)):
        raise UserError(f"checkpoint folder not found: {model}")
    # Only what conversion reads: configs and safetensors, else the PyTorch pickle.
    folder = hub.download(str(model), _HUB_FILES + _HUB_SAFETENSORS)
    if not any(folder.glob("model*.safetensors")):
        folder = hub.download(str(model), [*_HUB_FILES, "pytorch_model.bin"])
    return folder, "hub"


# ----------------------------------------------------------------------------- tensors


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
            header = read_header(f.read(n))
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
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise UserError(f"corrupt or truncated safetensors file {path}: {err}") from None
    return header


def read_header(raw: bytes) -> dict:
    """A safetensors header's JSON table."""
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def read_safetensors(path: Path) -> dict[str, mx.array]:
    """Every tensor of a validated safetensors file."""
    check_safetensors(path)
    try:
        return mx.load(str(path), format="safetensors")
    except (RuntimeError, ValueError, OSError) as err:
        raise UserError(f"cannot read safetensors file {path}: {err}") from None


def read_torch_bin(path: Path, drop_prefixes: tuple[str, ...] = ()) -> dict[str, mx.array]:
    """A ``pytorch_model.bin`` through ``torch.load(weights_only=True)``: no code runs."""
    try:
        import torch  # the torch extra: only for .bin checkpoints
    except ImportError:
        raise UserError(
            f"{path.name} is a PyTorch pickle and torch is not installed: install the torch "
            "extra (pip install 'mlx-caption[torch]') or use a checkpoint with safetensors"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files
        raise UserError(f"cannot read {path}: {err}") from None
    dtypes = {torch.float32: mx.float32, torch.float16: mx.float16, torch.bfloat16: mx.bfloat16}
    out = {}
    for key, value in state.items():
        if not key.startswith(drop_prefixes):
            # numpy has no bfloat16: go through float32, which is exact for bf16 and fp16.
            array = mx.array(value.detach().float().numpy())
            out[key] = array.astype(dtypes.get(value.dtype, mx.float32))
    return out


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a Hugging Face folder: the shards of an index, or the one file."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index} has no weight_map")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise UserError(f"{folder}: shard(s) listed in the index are missing: {missing}")
        return [folder / s for s in shards]
    for name in (MODEL_FILE, "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise UserError(
        f"{folder} has no weights: expected model.safetensors, a sharded "
        "model.safetensors.index.json, or pytorch_model.bin"
    )


def read_weights(files: list[Path], drop_prefixes: tuple[str, ...] = ()) -> dict[str, mx.array]:
    """All tensors of ``files`` (safetensors or ``.bin``) in one dict."""
    weights: dict[str, mx.array] = {}
    for path in files:
        if path.suffix == ".bin":
            weights.update(read_torch_bin(path, drop_prefixes))
        else:
            weights.update(read_safetensors(path))
    return weights


def check_weights(model: nn.Module, weights: dict[str, mx.array], where: str) -> None:
    """Refuse missing, unexpected, wrongly shaped or non-float tensors, all named at once."""
    expected = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    mismatched = [
        f"{k}: file {tuple(weights[k].shape)} vs model {shape}"
        for k, shape in expected.items()
        if k in weights and tuple(weights[k].shape) != shape
    ]
    not_float = [k for k in expected if k in weights and not _is_float(weights[k])]
    problems = []
    for what, names, sep in (
        ("missing tensor(s)", missing, ", "),
        ("unexpected tensor(s)", unexpected, ", "),
        ("shape mismatches", mismatched, "; "),
        ("tensor(s) not floating point", not_float, ", "),
    ):
        if names:
            more = f"{sep}and {len(names) - 5} more" if len(names) > 5 else ""
            problems.append(f"{len(names)} {what} ({sep.join(names[:5])}{more})")
    if problems:
        raise UserError(f"{where}: weights do not fit the model: " + "; ".join(problems))


def _is_float(array: Any) -> bool:
    return mx.issubdtype(array.dtype, mx.floating)


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """A checkpoint read from disk: its family, config and sanitized, validated weights."""

    folder: Path
    family: Family
    config: Any
    weights: dict[str, mx.array]
    inputs: list[Path]  # the files read, for checksums
    converted: bool  # a folder written by :func:`convert` (``convert.json`` present)
    source_info: dict = field(default_factory=dict)  # a converted folder's convert.json


def is_converted(folder: str | os.PathLike) -> bool:
    """True for a folder written by :func:`convert` (it has ``convert.json``)."""
    return (Path(folder) / CONVERTED_MARKER).is_file()


def _config_json(folder: Path) -> dict:
    if not folder.is_dir():
        raise UserError(f"checkpoint folder not found: {folder}")
    if not (folder / CONFIG_FILE).is_file():
        raise UserError(f"{folder} has no config.json: not a Hugging Face or converted model")
    return read_json(folder / CONFIG_FILE)


def read_checkpoint(folder: str | os.PathLike, kind: str | None = None) -> Checkpoint:
    """Read a local checkpoint (Hugging Face or converted) and validate every tensor.

    ``kind`` (``"encoder"`` or ``"captioner"``) refuses checkpoints of the other kind.
    """
    folder = Path(folder)
    raw_config = _config_json(folder)
    if is_converted(folder):
        family = _family(_with_legacy_model_type(raw_config), kind)
        config = family.config_class.from_dict(raw_config)
        inputs = [folder / MODEL_FILE]
        if not inputs[0].is_file():
            raise UserError(f"{folder} has convert.json but no {MODEL_FILE}")
        weights = read_safetensors(inputs[0])
        info = read_json(folder / CONVERTED_MARKER)
    else:
        family = _family(raw_config, kind)
        inputs = weight_files(folder)
        weights = family.model_class.sanitize(read_weights(inputs, family.drop_prefixes))
        config = _config_from_hf(family, raw_config, folder, weights)
        extra = [folder / n for n in (PREPROCESSOR_FILE, GENERATION_FILE) if (folder / n).is_file()]
        inputs = [folder / CONFIG_FILE, *inputs, *extra]
        info = {}
    check_weights(family.model_class(config), weights, str(folder))
    return Checkpoint(folder, family, config, weights, inputs, is_converted(folder), info)


def _family(config: dict, kind: str | None) -> Family:
    try:
        return family_for(config, kind)
    except ValueError as err:  # an architecture no family reads: the user's to know
        raise UserError(str(err)) from None


def _with_legacy_model_type(config: dict) -> dict:
    # Encoder folders converted before config.json carried a model_type are CLIP's.
    return config if "model_type" in config else {**config, "model_type": "clip_vision_model"}


def _optional_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def _config_from_hf(family: Family, config: dict, folder: Path, weights: Any = ()) -> Any:
    """The family's config from a Hugging Face folder's config.json, its
    preprocessor_config.json and, for captioners, its generation_config.json."""
    extra = {}
    if family.kind == "captioner":
        extra["generation"] = _optional_json(folder / GENERATION_FILE)
    pre = _optional_json(folder / PREPROCESSOR_FILE)
    try:
        return family.config_class.from_hf(config, pre, weight_names=set(weights), **extra)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"cannot read the {family.name} config.json: {err}") from None


def build_model(checkpoint: Checkpoint, dtype: mx.Dtype | None = None) -> nn.Module:
    """The family's MLX model with the checkpoint's weights (strict), in eval mode."""
    model = checkpoint.family.model_class(checkpoint.config)
    weights = checkpoint.weights.items()
    if dtype is not None:
        weights = [(k, v.astype(dtype)) for k, v in weights]
    model.load_weights(list(weights), strict=True)
    model.eval()
    mx.eval(model.parameters())
    return model


def load_model(folder: str | os.PathLike, kind: str | None = None) -> nn.Module:
    """A model from a converted or Hugging Face folder (converted in memory, float32 unless
    the converted folder stores another dtype); ``model.config`` is its config."""
    checkpoint = read_checkpoint(folder, kind)
    return build_model(checkpoint, None if checkpoint.converted else mx.float32)


# ----------------------------------------------------------------------------- converting


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("mlx-caption", "mlx", "numpy", "safetensors", "transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def convert(
    model: str | os.PathLike,
    out: str | os.PathLike,
    dtype: str = "float32",
    check: Callable[[Path, Path, str], dict] | None = None,
) -> dict:
    """Convert ``model`` (hub id, Hugging Face folder or converted folder) into ``out``.

    Everything is written into a temporary folder beside ``out`` and renamed into place,
    so ``out`` is either the old folder or the complete new one. ``check(source, tmp, dtype)``,
    if given, runs on the written folder before the rename (``convert --verify`` passes the
    bridge's comparison with transformers) and may add to the record or raise to refuse it.
    Returns the ``convert.json`` record.
    """
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not is_converted(out):
        raise UserError(f"--out {out} exists and is not a converted model folder; not touching it")
    folder, kind = resolve_source(model)
    ckpt = read_checkpoint(folder)
    tokenizer, inputs = None, list(ckpt.inputs)
    if ckpt.family.kind == "captioner":
        special = ckpt.family.model_class(ckpt.config).decoder.special_tokens
        tokenizer = PretrainedTokenizer.from_folder(folder, special)
        inputs += [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]
    weights = {k: ckpt.weights[k].astype(DTYPES[dtype]) for k in sorted(ckpt.weights)}
    mx.eval(weights)
    original = ckpt.source_info.get("original_source", str(model))
    with atomic_dir(out) as tmp:
        mx.save_safetensors(str(tmp / MODEL_FILE), weights, metadata={"format": "mlx"})
        write_json(tmp / CONFIG_FILE, ckpt.config.to_dict())
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_FILE)
        record = {
            "family": ckpt.family.name,
            "source": str(model),
            "source_kind": "converted" if ckpt.converted else kind,
            "original_source": original,
            "dtype": dtype,
            "inputs": {p.name: sha256_file(p) for p in inputs},
            "output": {MODEL_FILE: sha256_file(tmp / MODEL_FILE)},
            "versions": _versions(),
        }
        write_json(tmp / CONVERTED_MARKER, record)
        if check is not None:
            source = folder if not ckpt.converted else Path(original)
            record.update(check(source, tmp, dtype))
    return record


# ----------------------------------------------------------------------------- names


def cache_dir() -> Path:
    """Where on-the-fly conversions go: ``$HF_HOME/mlx-caption`` (``~/.cache/huggingface``)."""
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(hf_home) / "mlx-caption"


def search_dirs() -> list[Path]:
    """Folders holding converted models by name, in lookup order."""
    dirs = []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    return [*dirs, Path("weights"), cache_dir()]


def find_converted(name: str) -> Path | None:
    """The first converted folder for a zoo name (or hub id) in :func:`search_dirs`."""
    for base in search_dirs():
        folder = base / name.replace("/", "--")
        if is_converted(folder):
            return folder
    return None


def converted_folder(name_or_hub_id: str) -> Path:
    """The converted folder of a zoo name or hub id, converting it into the cache first if
    no search folder has it."""
    entry = zoo.lookup(name_or_hub_id)
    name = entry.name if entry else name_or_hub_id
    folder = find_converted(name)
    if folder is None:
        folder = cache_dir() / name.replace("/", "--")
        convert(entry.hub_id if entry else name, folder)
    return folder


def _resolve(name_or_path: str | os.PathLike, kind: str) -> Path:
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if zoo.lookup(text) or hub.looks_like_hub_id(text):
        return converted_folder(text)
    names = ", ".join(e.name for e in zoo.entries(kind))
    raise UserError(f"unknown {kind} {text!r}: not a folder, a hub id or a zoo name ({names})")


def load_encoder(name_or_path: str | os.PathLike, image_size: int | None = None) -> nn.Module:
    """A ready encoder (``model.config`` set), of any family.

    ``name_or_path`` is a zoo name (its converted folder if there is one, otherwise it is
    downloaded and converted into :func:`cache_dir` once), a converted folder, a Hugging
    Face folder (converted in memory), or a hub id (converted into the cache).
    ``image_size`` feeds it images of that side instead of its checkpoint's: the config's
    processor is scaled to it and the position embeddings are resized to the new patch grid
    the family's way (e.g. a 224-px CLIP at 336 px).
    """
    model = load_model(_resolve(name_or_path, "encoder"), "encoder")
    if image_size is not None:
        model.config = at_image_size(model.config, image_size)
    return model


def at_image_size(config: Any, image_size: int) -> Any:
    """``config.at_image_size(image_size)``, a bad size a :class:`UserError`."""
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise UserError(f"image_size must be a whole number of pixels, not {image_size!r}")
    try:
        return config.at_image_size(image_size)
    except ValueError as err:
        raise UserError(f"image_size: {err}") from None


def encoder_config(name_or_path: str, image_size: int | None = None) -> Any:
    """The config of a zoo encoder or a converted/Hugging Face folder, without its weights
    (at ``image_size`` if given, as :func:`load_encoder`)."""
    config = _encoder_config(name_or_path)
    return config if image_size is None else at_image_size(config, image_size)


def _encoder_config(name_or_path: str) -> Any:
    entry = zoo.lookup(name_or_path)
    if entry is not None and entry.kind == "encoder":
        return entry.make_config()
    folder = Path(name_or_path).expanduser()
    if (folder / CONFIG_FILE).is_file():
        raw = read_json(folder / CONFIG_FILE)
        if is_converted(folder):
            try:
                return encoder_config_from_dict(raw)
            except ValueError as err:
                raise UserError(f"{folder / CONFIG_FILE}: {err}") from None
        return _config_from_hf(_family(raw, "encoder"), raw, folder)
    names = ", ".join(e.name for e in zoo.entries("encoder"))
    raise UserError(f"unknown encoder {name_or_path!r}; zoo names: {names}")


def count_parameters(config: Any) -> int:
    """Parameters of a family's model for ``config``."""
    model = family_of(config).model_class(config)
    return sum(v.size for _, v in tree_flatten(model.parameters()))


def list_models() -> list[dict]:
    """Every zoo model with its shape, parameters, size on disk (the converted weights, or
    float32's 4 bytes a parameter before conversion) and where it is converted locally."""
    rows = []
    for entry in zoo.entries():
        cfg = entry.make_config()
        folder = find_converted(entry.name)
        parameters = count_parameters(cfg)
        size = (folder / MODEL_FILE).stat().st_size if folder else 4 * parameters
        rows.append(
            {
                **entry.describe(),
                "parameters": parameters,
                "size_mb": round(size / 1e6, 1),
                "converted": folder is not None,
                "path": str(folder) if folder else None,
            }
        )
    return rows


# ----------------------------------------------------------------------------- our captioner


def write_model_files(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write model.safetensors, config.json and tokenizer.json into an existing ``folder``.

    A pretrained family's model (being fine-tuned) also gets ``convert.json``: its folder is
    then read as a converted one, whose config.json is ours, not Hugging Face's.
    Not atomic by itself: :func:`save_captioner` and the training checkpointer call it on a
    temporary folder and rename that into place.
    """
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / MODEL_FILE), weights, metadata={"format": "mlx"})
    write_json(folder / CONFIG_FILE, model.config.to_dict())
    tokenizer.save(folder / TOKENIZER_FILE)
    if not isinstance(model, Captioner):
        record = {
            "family": family_of(model.config).name,
            "source_kind": "fine-tuned",
            "dtype": str(next(iter(weights.values())).dtype).removeprefix("mlx.core."),
            "output": {MODEL_FILE: sha256_file(folder / MODEL_FILE)},
            "versions": _versions(),
        }
        write_json(folder / CONVERTED_MARKER, record)


def save_captioner(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Save a checkpoint folder atomically (an existing folder is replaced only once the new
    one is complete)."""
    with atomic_dir(path) as tmp:
        write_model_files(model, tokenizer, tmp)
    return Path(path)


def _captioner_folder(name_or_path: str | Path) -> Path:
    """A local folder for a captioner: the folder itself, a zoo name's converted folder
    (converted into the cache on first use), or a hub repo's snapshot."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"checkpoint {p} is a file; expected a folder holding {MODEL_FILE}")
        return p
    text = str(name_or_path)
    entry = zoo.lookup(text)
    if entry is not None and entry.kind == "captioner":
        return converted_folder(entry.name)
    if not hub.looks_like_hub_id(text):
        names = ", ".join(e.name for e in zoo.entries("captioner"))
        raise UserError(
            f"checkpoint not found: {text} (not a folder, a hub id or a zoo name: {names})"
        )
    # Our captioners on the hub are these three files; a Hugging Face captioner has them too.
    folder = hub.download(text, CHECKPOINT_FILES)
    return folder if _is_our_captioner(folder) else converted_folder(text)


def _is_our_captioner(folder: Path) -> bool:
    """A folder of ours (model_type mlx_caption), not a pretrained family's."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        return True  # our loader says what is missing
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return True  # our loader reports the bad config.json
    return model_type in (None, CAPTIONER_MODEL_TYPE)


def load_captioner(name_or_path: str | Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of any captioner, in eval mode.

    ``name_or_path`` is a zoo name (``blip-base``: converted into the cache on first use), a
    folder (one of our checkpoints; a converted, Hugging Face or fine-tuned pretrained
    captioner) or a hub repo id. Ours come back as ``(Captioner, CaptionTokenizer)``,
    pretrained families as their model and a
    :class:`~mlx_caption.pretrained_tokenizer.PretrainedTokenizer`. A folder with missing
    files, an unreadable config, corrupt weights, weights that do not fit the config, or a
    tokenizer larger than the decoder's vocabulary is refused with a :class:`UserError`.
    """
    folder = _captioner_folder(name_or_path)
    if _is_our_captioner(folder):
        return _load_our_captioner(folder)
    checkpoint = read_checkpoint(folder, "captioner")
    model = build_model(checkpoint, None if checkpoint.converted else mx.float32)
    tokenizer = PretrainedTokenizer.from_folder(folder, model.decoder.special_tokens)
    _check_vocabulary(tokenizer.vocab_size, model.decoder.vocab_size)
    return model, tokenizer


def _check_vocabulary(tokenizer_size: int, decoder_size: int) -> None:
    if tokenizer_size > decoder_size:
        raise UserError(
            f"tokenizer has {tokenizer_size} ids but the decoder only {decoder_size}: they do "
            "not belong together"
        )


def _load_our_captioner(folder: Path) -> tuple[Captioner, CaptionTokenizer]:
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        hint = ""
        if any(folder.glob("ckpt-*")) or (folder / "best").is_dir():
            hint = " (this looks like a training run: pass one of its ckpt-*/ or best/ folders)"
        raise UserError(
            f"{folder} is not a captioner checkpoint: missing {', '.join(missing)}{hint}"
        )
    cfg = _read_captioner_config(folder)
    weights = read_safetensors(folder / MODEL_FILE)
    try:
        model = Captioner(cfg)
    except ValueError as err:
        raise UserError(f"cannot build the model of {folder / CONFIG_FILE}: {err}") from None
    check_weights(model, weights, str(folder / MODEL_FILE))
    ref = dict(tree_flatten(model.parameters()))
    model.load_weights([(k, v.astype(ref[k].dtype)) for k, v in weights.items()], strict=True)
    mx.eval(model.parameters())
    model.eval()
    tokenizer = CaptionTokenizer.from_file(folder / TOKENIZER_FILE)
    _check_vocabulary(tokenizer.vocab_size, cfg.decoder.vocab_size)
    return model, tokenizer


def _read_captioner_config(folder: Path) -> CaptionerConfig:
    try:
        data = read_json(folder / CONFIG_FILE)
    except UserError as err:
        raise UserError(f"bad {CONFIG_FILE} in {folder}: {err}") from None
    if data.get("model_type", CAPTIONER_MODEL_TYPE) != CAPTIONER_MODEL_TYPE or not (
        "decoder" in data and "vision" in data
    ):
        raise UserError(f"bad {CONFIG_FILE} in {folder}: not a captioner config")
    try:
        return CaptionerConfig.from_dict(data)
    except (UserError, ValueError, TypeError) as err:
        raise UserError(f"bad {CONFIG_FILE} in {folder}: {err}") from None
