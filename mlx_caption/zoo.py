"""Named CLIP encoders and decoder presets, and loading an encoder by name, folder or hub id.

Where a converted encoder is looked for, in order: ``$MLX_CAPTION_WEIGHTS/<name>``,
``./weights/<name>``, then the cache ``$HF_HOME/mlx-caption/<name>`` (default
``~/.cache/huggingface/mlx-caption``), where :func:`load_encoder` converts a zoo model
the first time it is asked for.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mlx_caption.config import CaptionerConfig, DecoderConfig, PreprocessConfig, VisionConfig
from mlx_caption.errors import UserError

WEIGHTS_ENV = "MLX_CAPTION_WEIGHTS"


@dataclass(frozen=True)
class ZooEntry:
    """A registered encoder: where it comes from and its full architecture + preprocessing."""

    hub_id: str
    config: VisionConfig
    description: str


def _clip(
    hidden: int,
    layers: int,
    heads: int,
    patch: int,
    image: int = 224,
    projection: int = 512,
    act: str = "quick_gelu",
) -> VisionConfig:
    return VisionConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image,
        patch_size=patch,
        hidden_act=act,
        projection_dim=projection,
        # Every checkpoint here ships the OpenAI CLIP processor: shortest side to the image
        # size with bicubic, center crop, OpenAI mean/std (OpenCLIP's LAION models too).
        preprocess=PreprocessConfig(resize_shortest_edge=image, crop_size=image),
    )


ENCODERS: dict[str, ZooEntry] = {
    "clip-vit-base-patch32": ZooEntry(
        "openai/clip-vit-base-patch32", _clip(768, 12, 12, 32), "OpenAI CLIP ViT-B/32, 50 tokens"
    ),
    "clip-vit-base-patch16": ZooEntry(
        "openai/clip-vit-base-patch16", _clip(768, 12, 12, 16), "OpenAI CLIP ViT-B/16, 197 tokens"
    ),
    "clip-vit-large-patch14": ZooEntry(
        "openai/clip-vit-large-patch14",
        _clip(1024, 24, 16, 14, projection=768),
        "OpenAI CLIP ViT-L/14, 257 tokens",
    ),
    "clip-vit-large-patch14-336": ZooEntry(
        "openai/clip-vit-large-patch14-336",
        _clip(1024, 24, 16, 14, image=336, projection=768),
        "OpenAI CLIP ViT-L/14 at 336 px, 577 tokens",
    ),
    "laion-clip-vit-b32": ZooEntry(
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        _clip(768, 12, 12, 32, act="gelu"),
        "OpenCLIP ViT-B/32 trained on LAION-2B (exact gelu), 50 tokens",
    ),
}

DECODER_PRESETS: dict[str, DecoderConfig] = {
    "tiny": DecoderConfig(hidden_size=256, num_layers=3, num_heads=4, intermediate_size=1024),
    "small": DecoderConfig(hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048),
    "base": DecoderConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}


def cache_dir() -> Path:
    """Where on-the-fly conversions go: ``$HF_HOME/mlx-caption`` (``~/.cache/huggingface``)."""
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(hf_home) / "mlx-caption"


def search_dirs() -> list[Path]:
    """Folders holding converted encoders by name, in lookup order."""
    dirs = []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    dirs += [Path("weights"), cache_dir()]
    return dirs


def find_converted(name: str) -> Path | None:
    """The first converted folder for a zoo name (or hub id) in :func:`search_dirs`."""
    from mlx_caption.convert import is_converted

    for base in search_dirs():
        folder = base / _folder_name(name)
        if is_converted(folder):
            return folder
    return None


def _folder_name(name: str) -> str:
    return name.replace("/", "--")


def count_parameters(cfg: VisionConfig) -> int:
    """Parameters of ``VisionTransformer(cfg)``, from shapes alone."""
    import math

    from mlx_caption.convert import expected_shapes

    return sum(math.prod(s) for s in expected_shapes(cfg).values())


def list_models() -> list[dict]:
    """Every zoo encoder with its shape and whether (and where) it is converted locally."""
    rows = []
    for name, entry in ENCODERS.items():
        cfg = entry.config
        folder = find_converted(name)
        rows.append(
            {
                "name": name,
                "hub_id": entry.hub_id,
                "description": entry.description,
                "image_size": cfg.image_size,
                "patch_size": cfg.patch_size,
                "hidden_size": cfg.hidden_size,
                "layers": cfg.num_hidden_layers,
                "tokens": cfg.num_tokens,
                "hidden_act": cfg.hidden_act,
                "parameters": count_parameters(cfg),
                "converted": folder is not None,
                "path": str(folder) if folder else None,
            }
        )
    return rows


def load_converted(folder: str | os.PathLike):
    """A :class:`VisionTransformer` from a converted folder (validated, strict, eval mode)."""
    import mlx.core as mx

    from mlx_caption.convert import read_checkpoint
    from mlx_caption.models.vit import VisionTransformer

    ckpt = read_checkpoint(folder)
    if not ckpt.converted:
        raise UserError(f"{folder} is not a converted encoder folder (no convert.json)")
    model = VisionTransformer(ckpt.config)
    model.load_weights(list(ckpt.weights.items()), strict=True)
    model.eval()
    mx.eval(model.parameters())
    return model


def _from_checkpoint(folder: Path):
    """Load an unconverted HF folder in memory (nothing written)."""
    import mlx.core as mx

    from mlx_caption.convert import read_checkpoint
    from mlx_caption.models.vit import VisionTransformer

    ckpt = read_checkpoint(folder)
    model = VisionTransformer(ckpt.config)
    model.load_weights([(k, v.astype(mx.float32)) for k, v in ckpt.weights.items()], strict=True)
    model.eval()
    mx.eval(model.parameters())
    return model


def load_encoder(name_or_path: str | os.PathLike):
    """A ready :class:`~mlx_caption.models.vit.VisionTransformer` (``model.config`` set).

    ``name_or_path`` is a zoo name (its converted folder if there is one, otherwise it is
    downloaded and converted into :func:`cache_dir` once), a converted folder, a Hugging
    Face CLIP folder (converted in memory), or a hub id (converted into the cache).
    """
    from mlx_caption.convert import convert, is_converted, looks_like_hub_id

    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_converted(path) if is_converted(path) else _from_checkpoint(path)
    hub_to_name = {e.hub_id: n for n, e in ENCODERS.items()}
    if text in ENCODERS or text in hub_to_name:
        name = hub_to_name.get(text, text)
        hub_id = ENCODERS[name].hub_id
    elif looks_like_hub_id(text):
        name, hub_id = text, text
    else:
        raise UserError(
            f"unknown encoder {text!r}: not a folder, a hub id or a zoo name "
            f"({', '.join(ENCODERS)})"
        )
    folder = find_converted(name)
    if folder is None:
        folder = cache_dir() / _folder_name(name)
        convert(hub_id, folder)
    return load_converted(folder)


def encoder_config(encoder: str) -> VisionConfig:
    """The VisionConfig of a zoo name or a converted/HF folder, without loading weights."""
    if encoder in ENCODERS:
        return dataclasses.replace(ENCODERS[encoder].config)
    path = Path(encoder).expanduser()
    config = path / "config.json"
    if config.is_file():
        from mlx_caption.convert import is_converted, vision_config_from_hf

        with open(config) as f:
            data = json.load(f)
        if is_converted(path):
            return VisionConfig.from_dict(data)
        pre = path / "preprocessor_config.json"
        pre_data = json.loads(pre.read_text()) if pre.is_file() else None
        return vision_config_from_hf(data, pre_data, has_projection=False)
    raise UserError(f"unknown encoder {encoder!r}; zoo names: {', '.join(ENCODERS)}")


def captioner_config(encoder: str, size: str, vocab_size: int) -> CaptionerConfig:
    """Encoder (zoo name or folder) + decoder preset ``size`` for a vocabulary."""
    if size not in DECODER_PRESETS:
        raise UserError(f"unknown decoder size {size!r}; choose from {', '.join(DECODER_PRESETS)}")
    decoder = dataclasses.replace(DECODER_PRESETS[size], vocab_size=vocab_size)
    return CaptionerConfig(
        vision=encoder_config(encoder), decoder=decoder, encoder_name=encoder, projector="linear"
    )
