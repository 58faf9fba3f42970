"""What every family's ``reference`` module shares: building, loading and running its
transformers model on NHWC pixels, mapping weights back, comparing with the MLX model.

An encoder family's ``reference.py`` describes only what differs, as a :class:`TorchSide`, and
takes the functions the bridge, ``convert --verify`` and the parity tests call from it; a
captioner family's writes its own and builds them from the helpers here (``pixel_values``,
``random_inputs``, ``generated_ids``, ``max_abs_diff``). Imports torch (the ``torch`` extra);
only the families' ``reference`` modules import this.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import torch
from mlx.utils import tree_flatten

from mlx_caption.models.base import hf_state

OUTPUTS = ("last_hidden_state", "pooler_output", "image_embeds")


def _nothing(cfg: Any) -> dict:
    return {}


@dataclass(frozen=True)
class TorchSide:
    """A family's transformers classes and weight names, for its MLX config ``cfg``.

    Attributes:
        config_class: ``cfg`` -> the transformers config class, built from ``cfg``'s
            ``HF_FIELDS`` and ``config_extra(cfg)``.
        model_class: ``cfg`` -> the transformers model class, built (or loaded) with
            ``model_kwargs(cfg)``.
        key_map: a transformers state-dict key -> the MLX name (None: not an MLX tensor).
        patch_key: the patch kernel's MLX name (OHWI in MLX, OIHW in torch).
    """

    config_class: Callable[[Any], type]
    model_class: Callable[[Any], type]
    key_map: Callable[[str], str | None]
    patch_key: str
    config_extra: Callable[[Any], dict] = _nothing
    model_kwargs: Callable[[Any], dict] = _nothing

    def hf_config(self, cfg: Any) -> Any:
        """The transformers config of an MLX encoder config (same field names)."""
        fields = {name: getattr(cfg, name) for name in cfg.HF_FIELDS}
        return self.config_class(cfg)(**fields, **self.config_extra(cfg))

    def random_model(self, cfg: Any, seed: int = 0) -> Any:
        """A randomly initialised transformers model of this shape, in eval mode."""
        return random_hf_model(
            self.model_class(cfg), self.hf_config(cfg), seed, **self.model_kwargs(cfg)
        )

    def load_model(self, folder: str | Path, cfg: Any) -> Any:
        """The source checkpoint as transformers loads it (the vision tower of a two-tower
        one), in eval mode, float32."""
        return load_hf_model(self.model_class(cfg), folder, **self.model_kwargs(cfg))

    def to_hf_state(self, weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict:
        """Inverse of the family's ``sanitize`` for the keys of a transformers state dict
        (the torch model's own names, whichever transformers version built it)."""
        return hf_state(weights, hf_keys, self.key_map, self.patch_key)

    def functions(self) -> tuple[Callable, ...]:
        """``hf_config, random_model, load_model, to_hf_state, last_hidden_state, compare``:
        what a family's ``reference`` module defines."""
        return (
            self.hf_config,
            self.random_model,
            self.load_model,
            self.to_hf_state,
            last_hidden_state,
            compare,
        )


def random_hf_model(model_class: type, config: Any, seed: int = 0, **kwargs: Any) -> Any:
    """A transformers ``model_class`` initialised from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return model_class(config, **kwargs).eval()


def load_hf_model(model_class: type, folder: str | Path, **kwargs: Any) -> Any:
    """A checkpoint folder as transformers' ``model_class`` loads it, in eval mode, float32."""
    return model_class.from_pretrained(str(folder), dtype=torch.float32, **kwargs).eval()


def pixel_values(pixels: np.ndarray) -> torch.Tensor:
    """NHWC float pixels as transformers' NCHW ``pixel_values``."""
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(0, 3, 1, 2)


def max_abs_diff(ours: mx.array, theirs: np.ndarray) -> float:
    """The largest absolute difference of an MLX array (any dtype) and a NumPy one."""
    return float(np.max(np.abs(np.array(ours.astype(mx.float32)) - theirs)))


def forward(model: Any, pixels: np.ndarray, **kwargs: Any) -> Any:
    """The torch model's output for NHWC float pixels (an NCHW view of the same buffer).

    Positions are resized to the input's grid where the model asks to be told
    (``interpolate_pos_encoding``; DINOv2 always resizes), as the MLX encoders do. The pixels
    move to the model's device and dtype (CUDA, half precision).
    """
    x = pixel_values(pixels).to(model.device, model.dtype)
    if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
        kwargs.setdefault("interpolate_pos_encoding", True)
    with torch.inference_mode():
        return model(pixel_values=x, **kwargs)


def last_hidden_state(model: Any, pixels: np.ndarray) -> Any:
    """The torch model's token grid for NHWC pixels."""
    return forward(model, pixels).last_hidden_state


def compare(mlx_model: Any, hf_model: Any, seed: int = 0) -> dict[str, float]:
    """Largest absolute differences between the two models' outputs (those both have) on
    random pixels at the MLX encoder's input size."""
    size = mlx_model.config.input_size
    pixels = np.random.default_rng(seed).standard_normal((2, size, size, 3)).astype(np.float32)
    ref = forward(hf_model, pixels)
    dtype = tree_flatten(mlx_model.parameters())[0][1].dtype
    out = mlx_model(mx.array(pixels).astype(dtype))
    diffs = {}
    for name in OUTPUTS:
        mine, theirs = getattr(out, name, None), getattr(ref, name, None)
        if mine is not None and theirs is not None:
            diffs[name] = max_abs_diff(mine, theirs.numpy())
    return diffs


def sequences_after_prompt(
    out: Any, prefix_length: int, end: int, return_scores: bool
) -> list[list[int]] | tuple[list[list[int]], list[float] | None]:
    """A captioner's ``generate(..., return_dict_in_generate=True)`` output as the generated
    ids of each returned sequence (the first ``prefix_length`` ids, start tokens and prompt,
    left out; up to and with the ``end`` token) and, with ``return_scores``, the sequence
    scores (None but for beam search)."""
    rows = []
    for row in out.sequences.numpy().tolist():
        generated = row[prefix_length:]
        rows.append(generated[: generated.index(end) + 1] if end in generated else generated)
    if return_scores:
        scores = getattr(out, "sequences_scores", None)  # beam search only
        return rows, None if scores is None else scores.numpy().tolist()
    return rows


def random_inputs(
    size: int, start: int, vocab_size: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two random NHWC images ``size`` square and two rows of ids (``start``, then 7 random
    ids below ``vocab_size``): what a captioner family's ``compare`` feeds both sides."""
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((2, size, size, 3)).astype(np.float32)
    ids = np.array([[start, *rng.integers(0, vocab_size, 7)]] * 2)
    return pixels, ids


def generated_ids(
    model: Any,
    pixels: np.ndarray,
    input_ids: list[int],
    prompt_length: int,
    end: int,
    return_scores: bool,
    ids_name: str = "input_ids",
    **options: Any,
) -> list[list[int]] | tuple[list[list[int]], list[float] | None]:
    """transformers' ``generate`` on ``pixels`` from ``input_ids`` (the same for every image,
    passed as ``ids_name``: ViT-GPT2's are ``decoder_input_ids``): each returned sequence's
    ids after its first ``prompt_length``, cut after the first ``end``; with
    ``return_scores`` also the sequence scores (None but for beams)."""
    ids = torch.tensor([input_ids] * len(pixels), dtype=torch.long)
    with torch.inference_mode():
        out = model.generate(
            pixel_values=pixel_values(pixels),
            return_dict_in_generate=True,
            output_scores=return_scores,
            **{ids_name: ids},
            **options,
        )
    return sequences_after_prompt(out, prompt_length, end, return_scores)
