"""What every model family shares: its registry entry, the encoder config and model bases, the
encoder output, weight mapping, and the rules for which encoder parameters train.

A family is a folder under ``models/`` (``models/clip/`` is the example to copy). It holds:

- ``config.py``: an :class:`EncoderConfig` dataclass with Hugging Face's field names (its
  ``from_hf`` reads ``config.json`` and ``preprocessor_config.json`` dicts; ``to_dict`` writes
  the family's ``model_type`` so a converted folder's ``config.json`` says what it is);
- the MLX modules with Hugging Face parameter names (the model a :class:`VisionEncoder`), and
  ``sanitize``, a static method of the model that maps a Hugging Face state dict to the
  module's names and layouts (idempotent, through :func:`sanitize_state`);
- ``reference.py``: the transformers side (its model class and config, the inverse of
  ``sanitize``), used by the parity tests, ``convert --verify`` and the PT bridge; it is the
  only module of a family that imports torch;
- ``__init__.py``: ``FAMILY``, the :class:`Family` entry that ``models/registry.py`` lists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlx_caption import backend
from mlx_caption.data.preprocess import PreprocessConfig, preprocess_config_from_hf
from mlx_caption.models.layers.blocks import blocks_over_token_streams, worth_splitting_tokens


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
class VisionOutput:
    """What an encoder returns (the fields of Hugging Face's vision model output)."""

    last_hidden_state: mx.array  # (B, T, D): the token grid a captioner reads
    pooler_output: mx.array | None  # (B, D); None when the checkpoint has no pooling head
    image_embeds: mx.array | None = None  # (B, P) when the model has a projection head
    hidden_states: tuple[mx.array, ...] | None = None  # embeddings + every layer's output


@dataclass
class EncoderConfig:
    """What every encoder family's config dataclass shares (each is a subclass).

    Field names and defaults are Hugging Face's (these: a ViT-B's, every family's); a family
    adds its own fields, sets ``MODEL_TYPE`` (written by :meth:`to_dict`), ``HF_FIELDS`` (the
    fields ``config.json`` holds under the same name), :meth:`read_hf` and
    :meth:`default_preprocess`, and ``prefix_tokens`` if it has no single class token.

    ``image_size`` is the checkpoint's resolution, which sizes its position table; images
    come in at ``preprocess.crop_size`` (:attr:`input_size`), which may differ: the model
    then resizes its positions to the input's patch grid, the family's way.
    """

    MODEL_TYPE: ClassVar[str] = ""
    HF_FIELDS: ClassVar[tuple[str, ...]] = ()

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    preprocess: PreprocessConfig | None = None  # None: the family's processor

    def default_preprocess(self) -> PreprocessConfig:
        """The family's processor at ``image_size`` (when the checkpoint ships none)."""
        raise NotImplementedError

    def __post_init__(self) -> None:
        if self.preprocess is None:
            self.preprocess = self.default_preprocess()

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the patch grid (a class token, registers)."""
        return 1

    @property
    def input_size(self) -> int:
        """The side of the images the encoder is fed (the processor's output)."""
        return self.preprocess.crop_size

    @property
    def num_positions(self) -> int:
        """Rows of the checkpoint's position table (its grid and the prefix tokens)."""
        return (self.image_size // self.patch_size) ** 2 + self.prefix_tokens

    @property
    def num_patches(self) -> int:
        """Patches of an input image."""
        return (self.input_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Tokens per input image: the prefix tokens and one per patch."""
        return self.num_patches + self.prefix_tokens

    def at_image_size(self, size: int) -> Any:
        """A copy fed ``size``-pixel images (the processor scaled to match; the weights are
        the same: positions are resized to the new grid when the model runs)."""
        if size < self.patch_size:
            raise ValueError(f"image size {size} is smaller than one {self.patch_size}-px patch")
        return dataclasses.replace(self, preprocess=self.preprocess.at_size(size))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """From :meth:`to_dict`'s output (unknown keys, such as ``model_type``, ignored)."""
        data = dict(data)
        pre = data.pop("preprocess", None)
        names = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in data.items() if k in names})
        if pre:
            cfg.preprocess = PreprocessConfig.from_dict(pre)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = {"model_type": self.MODEL_TYPE, **dataclasses.asdict(self)}
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def read_hf(cls, config: dict, weight_names: Collection[str]) -> tuple[dict, dict]:
        """The ``config.json`` dict holding the ``HF_FIELDS`` (a ValueError if ``config`` is
        another family's), and the fields it does not hold under their names (what the
        tensors or the model type decide)."""
        raise NotImplementedError

    @classmethod
    def from_hf(
        cls, config: dict, preprocessor: dict | None = None, weight_names: Collection[str] = ()
    ) -> Any:
        """From a Hugging Face ``config.json`` dict, its ``preprocessor_config.json`` dict if
        the checkpoint has one (else the family's processor), and the sanitized tensor names
        (for optional parts such as a projection head). What the config leaves out takes
        transformers' defaults."""
        section, derived = cls.read_hf(config, weight_names)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        cfg = cls(**{n: section.get(n, defaults[n]) for n in cls.HF_FIELDS}, **derived)
        cfg.preprocess = preprocess_config_from_hf(preprocessor or {}, cfg.preprocess)
        return cfg


def vision_section(config: dict, model_type: str, tower_type: str, family: str) -> dict:
    """The vision tower's ``config.json`` dict: ``vision_config`` of a two-tower
    ``model_type`` checkpoint, or the whole dict of a ``tower_type`` one."""
    found = config.get("model_type")
    if found == model_type:
        return dict(config.get("vision_config") or {})
    if found == tower_type:
        return config
    raise ValueError(
        f"not a {family} checkpoint: config.json has model_type={found!r} "
        f"(expected {model_type!r} or {tower_type!r})"
    )


class VisionEncoder(nn.Module):
    """What every encoder model shares: ``config`` (its family's :class:`EncoderConfig`), the
    blocks as ``layers`` (``self.encoder.layers``), and ``grad_checkpoint``: when set, the
    blocks' activations are recomputed in the backward pass (only while ``self.training``),
    trading compute for memory when fine-tuning.

    A subclass names the modules after the blocks that train with any of them
    (``after_blocks``) and the parameters fine-tuning leaves alone (``never_trained``; see
    :func:`set_encoder_trainable`).
    """

    after_blocks: tuple[str, ...] = ()

    def __init__(self, cfg: Any):
        super().__init__()
        self.config = cfg
        self.grad_checkpoint = False

    @property
    def layers(self) -> list[nn.Module]:
        """The encoder blocks, first to last (for freezing the first N)."""
        return self.encoder.layers

    def run_blocks(
        self, x: mx.array, output_hidden_states: bool = False
    ) -> tuple[mx.array, tuple[mx.array, ...] | None]:
        """``x`` through the blocks (checkpointed if asked, see above); also the input and
        every block's output when ``output_hidden_states``."""
        hidden = [x] if output_hidden_states else None
        checkpoint = self.grad_checkpoint and self.training
        streams = backend.token_streams()  # one image in split_eval: split its tokens?
        if (
            streams
            and not self.training
            and worth_splitting_tokens(x)
            and all(hasattr(block, "finish") for block in self.layers)
        ):
            x = blocks_over_token_streams(self.layers, x, streams, hidden)
            return x, tuple(hidden) if hidden is not None else None
        for layer in self.layers:
            x = checkpointed(layer, x) if checkpoint else layer(x)
            backend.mark_stage(x)
            if hidden is not None:
                hidden.append(x)
        return x, tuple(hidden) if hidden is not None else None


def tokens_per_image(model: nn.Module) -> int:
    """Tokens per image out of ``model``'s vision encoder (``model`` an encoder, or a captioner
    holding one as ``encoder`` or ``vision_model``); 1 when there is none. Sets how many
    images ``backend.split_eval`` hands each CPU stream at a time."""
    for encoder in (model, getattr(model, "encoder", None), getattr(model, "vision_model", None)):
        if isinstance(encoder, VisionEncoder):
            return encoder.config.num_tokens
    return 1


# How long transformers' generate runs, as a checkpoint's generation settings decide it
# (generation/utils.py, _prepare_generated_length): `max_new_tokens` counts generated tokens;
# `max_length` counts the whole sequence, the start token and any prompt included; with
# neither, 20 new tokens whatever the prompt. Ours count generated tokens.
DEFAULT_MAX_NEW_TOKENS = 20


def hf_generation_settings(
    config: dict, generation: dict | None, text_section: str | None = None
) -> dict[str, Any]:
    """The generation settings transformers reads from a checkpoint: its
    ``generation_config.json`` when it has one; otherwise ``config.json``, whose
    ``text_section`` (a composite's decoder config) fills what the top level leaves unset
    (``GenerationConfig.from_model_config``)."""
    if generation is not None:
        return {k: v for k, v in generation.items() if v is not None}
    text = (config.get(text_section) or {}) if text_section else {}
    top = {k: v for k, v in config.items() if v is not None}
    return {**{k: v for k, v in text.items() if v is not None}, **top}


def generation_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """``max_new_tokens``, ``length_counts_prompt`` and ``early_stopping`` of a
    :class:`PretrainedCaptionerConfig` from the generation settings transformers' generate
    runs with (:func:`hf_generation_settings`): what it generates by default, token for
    token. A ``max_length`` there counts the start token, and a prompt's tokens too
    (``length_counts_prompt``); transformers' ``early_stopping="never"`` (a heuristic on the
    longest possible caption) reads as False."""
    counts_prompt = False
    max_new = DEFAULT_MAX_NEW_TOKENS
    if settings.get("max_new_tokens"):
        max_new = int(settings["max_new_tokens"])
    elif settings.get("max_length"):
        max_new, counts_prompt = int(settings["max_length"]) - 1, True
    return {
        "max_new_tokens": max_new,
        "length_counts_prompt": counts_prompt,
        "early_stopping": settings.get("early_stopping", False) is True,
    }


@dataclass
class PretrainedCaptionerConfig:
    """What every pretrained captioner's config shares (BLIP's and GIT's are subclasses):
    ``vision`` (its image side, an :class:`EncoderConfig`), ``text`` (its decoder's config,
    Hugging Face field names) and the defaults of ``generate``, those transformers' own
    ``generate`` runs with (:func:`generation_defaults`): ``max_new_tokens`` (tokens a caption
    may generate after its start token), ``length_counts_prompt`` (a prompt's tokens come out
    of them) and ``early_stopping``.

    A subclass sets ``MODEL_TYPE`` and ``ARCHITECTURE`` (the one class of that model type it
    reads), ``VISION`` and ``TEXT`` (the two config classes, each with ``from_dict`` and
    ``to_dict``), redeclares ``vision`` and ``text`` with their defaults, and writes
    ``read_hf`` (or ``from_hf``); ``READS_GENERATION_SETTINGS`` False when transformers'
    ``generate`` for the architecture ignores the checkpoint's generation settings.
    """

    MODEL_TYPE: ClassVar[str] = ""
    ARCHITECTURE: ClassVar[str] = ""
    VISION: ClassVar[type] = EncoderConfig
    TEXT: ClassVar[type] = dict
    READS_GENERATION_SETTINGS: ClassVar[bool] = True
    ABOUT: ClassVar[dict[str, Any]] = {}  # anything else config.json should say

    vision: Any = None
    text: Any = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    length_counts_prompt: bool = False
    early_stopping: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """From :meth:`to_dict`'s output (a converted folder's ``config.json``)."""
        return cls(
            vision=cls.VISION.from_dict(data.get("vision", {})),
            text=cls.TEXT.from_dict(data.get("text", {})),
            max_new_tokens=int(data.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
            length_counts_prompt=bool(data.get("length_counts_prompt", False)),
            early_stopping=bool(data.get("early_stopping", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.MODEL_TYPE,
            "architecture": self.ARCHITECTURE,
            **self.ABOUT,
            "vision": self.vision.to_dict(),
            "text": self.text.to_dict(),
            "max_new_tokens": self.max_new_tokens,
            "length_counts_prompt": self.length_counts_prompt,
            "early_stopping": self.early_stopping,
        }

    @classmethod
    def from_hf(
        cls,
        config: dict,
        preprocessor: dict | None = None,
        generation: dict | None = None,
        weight_names: Collection[str] = (),
    ) -> Any:
        """From a Hugging Face ``config.json``, ``preprocessor_config.json`` and
        ``generation_config.json`` dicts; what they leave out takes transformers' defaults.

        Only ``ARCHITECTURE`` is read: other heads of the same ``model_type`` (question
        answering, retrieval, a bare model) are refused, naming them.
        """
        if config.get("model_type") != cls.MODEL_TYPE:
            raise ValueError(
                f"not a {cls.MODEL_TYPE} checkpoint: model_type={config.get('model_type')!r}"
            )
        architectures = config.get("architectures") or [cls.ARCHITECTURE]
        if cls.ARCHITECTURE not in architectures:
            raise ValueError(
                f"{cls.MODEL_TYPE} checkpoint of architecture {architectures}: only "
                f"{cls.ARCHITECTURE} (image captioning) is supported"
            )
        settings = {}
        if cls.READS_GENERATION_SETTINGS:
            settings = hf_generation_settings(config, generation)
        generation = generation or {}
        vision, text = cls.read_hf(config, preprocessor or {}, generation, weight_names)
        return cls(vision=vision, text=text, **generation_defaults(settings))

    @classmethod
    def read_hf(
        cls, config: dict, preprocessor: dict, generation: dict, weight_names: Collection[str]
    ) -> tuple[Any, Any]:
        """The ``vision`` and ``text`` configs of a checkpoint of ``ARCHITECTURE`` (a
        ``ValueError`` for what the family cannot run)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- weights


def sanitize_state(
    weights: dict[str, Any], key_map: Callable[[str], str | None], patch_key: str
) -> dict[str, Any]:
    """A Hugging Face state dict in a family's names and layouts.

    ``key_map`` renames each key (None drops it: other towers, buffers); the patch kernel
    ``patch_key`` goes from OIHW (torch) to OHWI (MLX). A kernel already OHWI is left as is:
    the two are told apart by which axes are equal (the square patch's), so only a 3-pixel
    patch over 3 channels would be ambiguous. Idempotent when ``key_map`` is; works on numpy
    and MLX arrays.
    """
    out = {}
    for key, value in weights.items():
        key = key_map(key)
        if key is None:
            continue
        if key == patch_key and value.ndim == 4 and _is_oihw(tuple(value.shape)):
            value = value.transpose(0, 2, 3, 1)
            if isinstance(value, np.ndarray):
                value = np.ascontiguousarray(value)
        out[key] = value
    return out


def tower_keys(drop_prefixes: tuple[str, ...]) -> Callable[[str], str | None]:
    """The key map of a vision tower saved alone or inside a two-tower checkpoint: keys of
    ``drop_prefixes`` (the other tower) and ``position_ids`` buffers dropped,
    ``vision_model.`` stripped."""

    def key_map(key: str) -> str | None:
        if key.startswith(drop_prefixes) or key.endswith("position_ids"):
            return None
        return key.removeprefix("vision_model.")

    return key_map


def hf_state(
    weights: dict[str, np.ndarray],
    hf_keys: Collection[str],
    key_map: Callable[[str], str | None],
    patch_key: str,
) -> dict[str, np.ndarray]:
    """The inverse of :func:`sanitize_state` for the keys of a transformers model's state dict:
    each key's tensor from ``weights`` (our names, found through ``key_map``), kernels OIHW.
    Keys ``key_map`` drops (buffers, unused tensors) are left out."""
    out = {}
    for hf_key in hf_keys:
        key = key_map(hf_key)
        if key is None:
            continue
        if key not in weights:
            raise ValueError(f"the MLX encoder has no weight for {hf_key!r}")
        value = weights[key]
        if key == patch_key:
            value = value.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        out[hf_key] = np.ascontiguousarray(value)
    return out


def _is_oihw(shape: tuple[int, ...]) -> bool:
    # OIHW: (D, C, p, p); OHWI: (D, p, p, C). Square patches mean H == W in both layouts.
    _, a, b, c = shape
    return b == c and a != b


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
