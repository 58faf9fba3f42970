"""What the page says about the loaded captioner: its encoder, decoder, data and scores.

Read from the model's config and, when the checkpoint folder has one, the training
``state.json`` (the recipe and the validation history a training checkpoint carries). Only
names are shown, never a server path: the page may be on the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_caption import hub, zoo
from mlx_caption.errors import UserError
from mlx_caption.files import read_json
from mlx_caption.loading import CONVERTED_MARKER
from mlx_caption.models.captioner import CaptionerConfig
from mlx_caption.train.checkpoint import STATE_FILE

# Validation figures shown, in this order, with the page's names for them.
SCORES = {
    "CIDEr": "CIDEr",
    "Bleu_4": "BLEU-4",
    "pair_f1": "shape F1",
    "exact": "exact scenes",
    "val_loss": "loss",
}


@dataclass(frozen=True)
class ModelCard:
    """Lines the page shows about a captioner; ``data`` and ``validation`` are None when its
    folder does not say."""

    encoder: str
    decoder: str
    data: str | None = None
    validation: str | None = None


def describe_model(folder: str | Path | None, config: CaptionerConfig) -> ModelCard:
    """The card of a captioner loaded from ``folder`` (None or a hub id: config only)."""
    state = _training_state(folder)
    recipe = state.get("config", {}) if state else {}
    return ModelCard(
        encoder=describe_encoder(config, recipe.get("model", {})),
        decoder=describe_decoder(config),
        data=describe_data(recipe.get("data")),
        validation=describe_validation(state.get("history", []) if state else []),
    )


def _training_state(folder: str | Path | None) -> dict[str, Any] | None:
    path = Path(folder) / STATE_FILE if folder else None
    if path is None or not path.is_file():
        return None
    try:
        return read_json(path)
    except UserError:  # only shown on the page: a damaged state.json hides the lines
        return None


def describe_encoder(config: CaptionerConfig, recipe_model: dict[str, Any]) -> str:
    """``"ViT 192 x 4, trained from scratch"``, a zoo name, or a converted folder's source;
    with how it trained when the recipe says."""
    vision = config.vision
    name = config.encoder_name
    shape = f"ViT {vision.hidden_size} x {vision.num_hidden_layers}"
    grid = f"{vision.patch_size}-px patches of {vision.image_size}-px images"
    if not name:
        return f"{shape}, trained from scratch ({grid})"
    entry = zoo.lookup(name)
    if entry is not None:
        text = f"{entry.name} ({entry.description})"
    else:
        text = f"{_source_of(Path(name))} ({shape}, {grid})"
    mode = recipe_model.get("encoder_mode")
    if mode == "frozen":
        text += ", frozen"
    elif mode == "finetune":
        last = recipe_model.get("finetune_last_n")
        text += f", last {last} blocks fine-tuned" if last else ", fine-tuned"
    return text


def _source_of(folder: Path) -> str:
    """A converted folder's original source (a hub id), else the folder's own name."""
    marker = folder / CONVERTED_MARKER
    if marker.is_file():
        try:
            source = read_json(marker).get("original_source")
        except UserError:
            source = None
        if source:
            return (
                f"converted from {source if hub.looks_like_hub_id(source) else Path(source).name}"
            )
    return folder.name or str(folder)


def describe_decoder(config: CaptionerConfig) -> str:
    d = config.decoder
    layers = "layer" if d.num_layers == 1 else "layers"
    return (
        f"Transformer decoder {d.hidden_size} x {d.num_layers} {layers}, {d.num_heads} heads, "
        f"{d.vocab_size}-token vocabulary, {config.projector} projector"
    )


def describe_data(data: dict[str, Any] | None) -> str | None:
    """The training data named by a recipe's ``data`` section (file names only)."""
    if not data:
        return None
    synthetic = data.get("synthetic")
    if synthetic:
        return (
            f"synthetic shapes: {int(synthetic.get('images', 0)):,} images of "
            f"{synthetic.get('size', 64)} px (seed {synthetic.get('seed', 0)})"
        )
    source = data.get("annotations") or data.get("images")
    if not source:
        return None
    return f"{data.get('format', 'karpathy')}: {Path(source).name}"


def describe_validation(history: list[dict[str, Any]]) -> str | None:
    """The checkpoint's last validation: its step, images and scores."""
    if not history:
        return None
    last = history[-1]
    figures = [
        f"{label} {last[key]:.3g}"
        for key, label in SCORES.items()
        if isinstance(last.get(key), (int, float))
    ]
    if not figures:
        return None
    images = last.get("val_images")
    where = f"step {last.get('step', '?')}" + (f", {images} images" if images else "")
    return f"validation ({where}): " + " · ".join(figures)
