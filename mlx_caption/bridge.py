"""The "PT bridge" (a PyTorch encoder whose output is copied into ``mx.array``), and checking a
conversion against transformers.

The bridge is the design mlx-caption replaces, kept (optional extra ``torch``) as the baseline
the benchmarks measure against, and done as well as that design allows: the family's
transformers model in eval mode under ``torch.inference_mode``, its SDPA attention, every
core for torch's thread pool, and one copy per batch (torch tensor -> numpy -> ``mx.array``).
The image tokens then feed the *same* MLX projector and decoder as the pure-MLX path, so a
benchmark differs in the encoder only.

Three ways to build one, all with the same weights as an MLX encoder:

- :meth:`BridgeEncoder.from_pretrained`: a hub id or a local Hugging Face folder;
- :meth:`BridgeEncoder.from_config`: random weights for an encoder config
  (then :meth:`BridgeEncoder.to_mlx` gives the MLX encoder with the same weights);
- :meth:`BridgeEncoder.from_mlx`: the weights of an existing MLX encoder.

Everything torch-specific about a family lives in its ``reference`` module; this module
depends only on the loader and the family registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_caption import backend, loading
from mlx_caption.errors import UserError
from mlx_caption.models.base import Family
from mlx_caption.models.registry import family_of

_INSTALL = "pip install 'mlx-caption[torch]' (torch and transformers)"
# Largest absolute difference from transformers that --verify accepts, per stored dtype.
VERIFY_TOLERANCE = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 2.5e-1}


def torch_available() -> bool:
    """True when the bridge can run (torch and transformers import)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def reference(family: Family) -> ModuleType:
    """A family's transformers side, or a :class:`UserError` saying how to install it."""
    try:
        return family.reference_module()
    except ImportError as err:
        raise UserError(
            f"this needs PyTorch and transformers ({err.name} is missing): {_INSTALL}"
        ) from err


class BridgeEncoder:
    """A torch encoder behind the MLX encoder's interface for image tokens.

    ``bridge(pixels)`` takes NHWC float32 pixels (``np.ndarray`` or ``mx.array``, the output
    of :mod:`mlx_caption.data.preprocess`) and returns the last hidden state ``(B, T, D)``
    as an ``mx.array``, the same tensor as the MLX encoder's ``last_hidden_state``.

    Args:
        model: the family's transformers model (put in eval mode here).
        config: its MLX encoder config (the family is found from it).
        threads: torch intra-op threads; default ``os.cpu_count()``. Note that this sets
            torch's process-wide thread count.
        device: where torch runs; default CUDA when MLX runs on a GPU and torch has CUDA,
            else the CPU (the bridge runs on the device MLX is measured on).
    """

    def __init__(
        self, model: Any, config: Any, threads: int | None = None, device: str | None = None
    ):
        import torch

        self.torch = torch
        self.device = device or default_device()
        self.model = model.eval().to(self.device)
        self.config = config
        self.reference = reference(family_of(config))
        self.threads = threads or os.cpu_count() or 1
        torch.set_num_threads(self.threads)

    @classmethod
    def from_pretrained(cls, name_or_path: str, threads: int | None = None) -> BridgeEncoder:
        """The encoder of a Hugging Face checkpoint (hub id or local folder)."""
        folder, _ = loading.resolve_source(name_or_path)
        config = loading.encoder_config(str(folder))
        model = reference(family_of(config)).load_model(folder, config)
        return cls(model, config, threads)

    @classmethod
    def from_config(cls, config: Any, seed: int = 0, threads: int | None = None) -> BridgeEncoder:
        """A randomly initialised encoder of this shape (for benchmarks and tests)."""
        return cls(reference(family_of(config)).random_model(config, seed), config, threads)

    @classmethod
    def from_mlx(cls, encoder: Any, threads: int | None = None) -> BridgeEncoder:
        """A torch copy of an MLX encoder (same weights)."""
        bridge = cls.from_config(encoder.config, threads=threads)
        weights = {k: np.array(v) for k, v in tree_flatten(encoder.parameters())}
        hf = bridge.reference.to_hf_state(weights, list(bridge.model.state_dict()))
        state = {k: bridge.torch.from_numpy(v).to(bridge.device) for k, v in hf.items()}
        bridge.model.load_state_dict(state, strict=False)  # only non-weight buffers are left
        return bridge

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """The torch weights as numpy arrays (Hugging Face names)."""
        return {k: v.detach().float().cpu().numpy() for k, v in self.model.state_dict().items()}

    def to_mlx(self) -> Any:
        """The MLX encoder with this model's weights, through the family's ``sanitize``."""
        model = family_of(self.config).model_class(self.config)
        weights = type(model).sanitize(self.state_dict_numpy())
        model.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=True)
        model.eval()
        mx.eval(model.parameters())
        return model

    def torch_forward(self, pixels: np.ndarray) -> Any:
        """The torch last hidden state of NHWC numpy pixels (no copy into MLX).

        The OpenBLAS that ``mlx_caption`` loads for MLX also answers the small matmuls of
        torch's CPU attention kernel, from inside torch's own threads: left at several
        threads it oversubscribes the cores (at some lengths, DINOv2's 257 tokens among them,
        the attention then crawls), so it runs on one thread here, torch's pool doing the
        parallel part.
        """
        with backend.blas_threads(1):
            return self.reference.last_hidden_state(self.model, pixels)

    def __call__(self, pixels: np.ndarray | mx.array) -> mx.array:
        """Image tokens ``(B, T, D)`` as an ``mx.array`` (torch -> numpy -> MLX copy)."""
        if isinstance(pixels, mx.array):
            pixels = np.asarray(pixels)
        return mx.array(self.torch_forward(pixels).float().cpu().numpy())


def default_device() -> str:
    """``"cuda"`` when MLX runs on a GPU and torch sees CUDA, else ``"cpu"``."""
    import torch

    return "cuda" if backend.on_gpu() and torch.cuda.is_available() else "cpu"


class BridgeCaptioner:
    """A captioner whose encoder runs in PyTorch.

    Everything but :meth:`encode` is the wrapped MLX captioner's, so
    ``generate(BridgeCaptioner(model), pixels, tokenizer)`` decodes with the same MLX
    decoder. ``bridge`` defaults to a torch copy of ``model.encoder``.
    """

    def __init__(self, captioner: Any, bridge: BridgeEncoder | None = None):
        self.captioner = captioner
        self.bridge = bridge or BridgeEncoder.from_mlx(captioner.encoder)

    def encode(self, pixels: Any) -> mx.array:
        """Projected image tokens from the torch encoder."""
        return self.captioner.project(self.bridge(pixels))

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found here: decoder, projector, config, decode_step...
        return getattr(self.captioner, name)


def verify_conversion(source: Path, converted: Path, dtype: str = "float32") -> dict:
    """Compare a converted folder with its source checkpoint as transformers loads it.

    Both run on the same random input; the largest absolute difference over the family's
    outputs must stay within the dtype's tolerance, else a :class:`UserError`. Returns
    ``{"verify_max_abs_diff": ..., "verify_outputs": {...}}``.
    """
    mlx_model = loading.load_model(converted)
    ref = reference(family_of(mlx_model.config))
    try:
        hf_model = ref.load_model(source, mlx_model.config)
    except (OSError, ValueError) as err:
        raise UserError(f"--verify: transformers cannot load {source}: {err}") from None
    diffs = ref.compare(mlx_model, hf_model)
    worst = max(diffs.values())
    if not worst <= VERIFY_TOLERANCE[dtype]:
        detail = ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())
        raise UserError(
            f"verification failed: max abs difference {worst:.3g} against transformers "
            f"exceeds {VERIFY_TOLERANCE[dtype]:g} for {dtype} ({detail})"
        )
    return {"verify_max_abs_diff": worst, "verify_outputs": diffs}
