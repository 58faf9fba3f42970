"""What every model family shares: its registry entry, the encoder output, and the rules for
which encoder parameters train.

A family is a folder under ``models/`` (``models/clip/`` is the example to copy). It holds:

- ``config.py``: a dataclass with Hugging Face's field names, ``from_hf(config.json dict,
  preprocessor_config.json dict)``, ``from_dict``/``to_dict`` (``to_dict`` writes the family's
  ``model_type`` so a converted folder's ``config.json`` says what it is);
- the MLX modules with Hugging Face parameter names, and ``sanitize``, a static method of the
  model that maps a Hugging Face state dict to the module's names and layouts (idempotent);
- ``reference.py``: the transformers side (its model class and config, the inverse of
  ``sanitize``), used by the parity tests, ``convert --verify`` and the PT bridge; it is the
  only module of a family that imports torch;
- ``__init__.py``: ``FAMILY``, the :class:`Family` entry that ``models/registry.py`` lists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlx_caption.data.preprocess import PreprocessConfig


@dataclass(frozen=True)
class Family:
    """A model family: how to recognise its checkpoints and build its MLX model.

    Attributes:
        name: short name (``"clip"``), the folder under ``models/``.
        kind: ``"encoder"`` (image -> token grid) or ``"captioner"`` (image -> text).
        model_types: the ``model_type`` values of Hugging Face ``config.json`` files it reads.
        config_class: its config dataclass (``from_hf``, ``from_dict``, ``to_dict``).
        model_class: its MLX model (``model_class(config)``, ``model_class.sanitize(weights)``).
        reference: dotted path of its ``reference`` module (imported only when needed: it
            imports torch and transformers).
        drop_prefixes: state-dict keys of other towers a checkpoint may carry (CLIP's text
            model), dropped before ``sanitize`` so a ``.bin`` is not read into memory whole.
    """

    name: str
    kind: str
    model_types: tuple[str, ...]
    config_class: type
    model_class: type
    reference: str
    drop_prefixes: tuple[str, ...] = ()

    def reference_module(self) -> ModuleType:
        """The family's transformers side (needs the ``torch`` extra)."""
        return importlib.import_module(self.reference)


@dataclass
class TransformerDims:
    """A transformer's width, depth, heads, activation and LayerNorm epsilon (Hugging Face
    names; BERT-base's and ViT-B's defaults)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5


@dataclass
class ViTConfig(TransformerDims):
    """What every ViT family's config holds (Hugging Face names, ViT-B/16's defaults; a
    family's subclass changes defaults and adds fields): the transformer, the image and its
    patches, the token grid (a class token plus one per patch), and the preprocessing (the
    family's processor, :meth:`default_preprocess`, when not given). ``to_dict``/``from_dict``
    nest the preprocessing; unknown keys (``model_type``) are ignored."""

    # The image, its patches, and how a picture becomes pixels.
    image_size: int = 224
    patch_size: int = 16
    preprocess: PreprocessConfig | None = None

    def default_preprocess(self) -> PreprocessConfig:
        raise NotImplementedError

    def __post_init__(self) -> None:
        if self.preprocess is None:
            self.preprocess = self.default_preprocess()

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Tokens in the grid: the class token plus one per patch."""
        return self.num_patches + 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)} - {"preprocess"}
        cfg = cls(**{k: v for k, v in data.items() if k in names})
        if data.get("preprocess"):
            cfg.preprocess = PreprocessConfig.from_dict(data["preprocess"])
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "preprocess": self.preprocess.to_dict()}


def check_image_size(pixels: mx.array, size: int) -> None:
    """A ``ValueError`` unless NHWC ``pixels`` are ``size x size``."""
    _, h, w, _ = pixels.shape
    if h != size or w != size:
        raise ValueError(f"input is {h}x{w} but the model expects {size}x{size}")


def run_blocks(model: nn.Module, x: mx.array, output_hidden_states: bool = False):
    """``x`` through ``model.layers`` (under :func:`checkpointed` while training with
    ``model.grad_checkpoint``); returns the output and, if asked, the input and every
    block's output."""
    hidden = [x] if output_hidden_states else None
    checkpoint = model.grad_checkpoint and model.training
    for layer in model.layers:
        x = checkpointed(layer, x) if checkpoint else layer(x)
        if hidden is not None:
            hidden.append(x)
    return x, None if hidden is None else tuple(hidden)


def unsanitize(
    weights: dict[str, np.ndarray],
    hf_keys: list[str],
    name_of: Callable[[str], str],
    patch_key: str,
) -> dict[str, np.ndarray]:
    """A family's ``sanitize`` undone, for the keys of a transformers state dict (a
    ``reference.to_hf_state``): ``name_of(hf_key)`` is the MLX name of each, the patch
    kernel (``patch_key``) goes back from OHWI to OIHW, position-id buffers are skipped."""
    out = {}
    for hf_key in hf_keys:
        if hf_key.endswith("position_ids"):
            continue
        name = name_of(hf_key)
        if name not in weights:
            raise ValueError(f"the MLX model has no weight for {hf_key!r}")
        value = weights[name]
        if name == patch_key:
            value = value.transpose(0, 3, 1, 2)
        out[hf_key] = np.ascontiguousarray(value)
    return out


@dataclass
class VisionOutput:
    """What an encoder returns (the fields of Hugging Face's vision model output)."""

    last_hidden_state: mx.array  # (B, T, D): the token grid a captioner reads
    pooler_output: mx.array  # (B, D)
    image_embeds: mx.array | None = None  # (B, P) when the model has a projection head
    hidden_states: tuple[mx.array, ...] | None = None  # embeddings + every layer's output


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block (no dropout), back in training mode after if it
    was, also on an exception."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def checkpointed(layer: nn.Module, x: mx.array) -> mx.array:
    """Run ``layer(x)`` under ``mx.checkpoint``: its activations are recomputed in the
    backward pass. The parameters go in as explicit inputs so gradients still reach them."""

    def inner(params: Any, y: mx.array) -> mx.array:
        layer.update(params)
        return type(layer).__call__(layer, y)

    return mx.checkpoint(inner)(layer.trainable_parameters(), x)


def freeze_path(module: nn.Module, path: str) -> None:
    """Freeze the parameter (or submodule) at a dotted ``path`` such as ``a.layers.0.k.bias``."""
    *parents, leaf = path.split(".")
    for part in parents:
        module = module[int(part)] if isinstance(module, list) else getattr(module, part)
    child = getattr(module, leaf, None)
    if isinstance(child, nn.Module):
        child.freeze()
    else:
        module.freeze(keys=[leaf], recurse=False)


def set_encoder_trainable(encoder: nn.Module, last_n: int | None) -> None:
    """Train the whole encoder (``last_n=None``), nothing of it (0), or its last N blocks.

    An encoder names, besides its blocks (``encoder.layers``), the modules that follow them
    (``encoder.after_blocks``: unfrozen with any block) and the parameters that never train
    (``encoder.never_trained``: heads off the captioning path, key biases whose gradient is
    zero because softmax ignores a shift of every score, which Adam would turn into lr-sized
    random steps).
    """
    layers = encoder.layers
    if last_n is not None and not 0 <= last_n <= len(layers):
        raise ValueError(f"last_n must be between 0 and {len(layers)} (encoder blocks)")
    if last_n is None:
        encoder.unfreeze()
    else:
        encoder.freeze()
        if last_n == 0:
            return
        for layer in layers[len(layers) - last_n :]:
            layer.unfreeze()
        for name in encoder.after_blocks:
            if name in encoder:
                getattr(encoder, name).unfreeze()
    for path in encoder.never_trained:
        freeze_path(encoder, path)


class CaptionerParts(nn.Module):
    """What every captioner (ours and the pretrained families) offers training: its
    ``encoder`` frozen, fine-tuned whole or in its last blocks, and parameter counts.

    A subclass has an ``encoder`` (an encoder-family-like model: ``layers``,
    ``after_blocks``, ``never_trained``, ``grad_checkpoint``), a ``decoder`` that speaks the
    generation engine's protocol, and ``encoder_prefix``, the path its encoder's parameters
    start with (they train in the optimizer's encoder groups).
    """

    encoder_prefix = "encoder."

    def freeze_encoder(self) -> None:
        """No gradients for any encoder parameter (decoder-only training)."""
        self.encoder.freeze()

    def unfreeze_encoder(self, last_n: int | None = None) -> None:
        """Train the whole encoder (``last_n=None``) or only its last ``last_n`` blocks (and
        what follows them); the encoder's heads off the captioning path stay frozen."""
        set_encoder_trainable(self.encoder, last_n)

    @property
    def encoder_frozen(self) -> bool:
        """True when no encoder parameter is trainable."""
        return not tree_flatten(self.encoder.trainable_parameters())

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count (all, or only the trainable ones)."""
        tree = self.trainable_parameters() if trainable_only else self.parameters()
        return sum(v.size for _, v in tree_flatten(tree))
