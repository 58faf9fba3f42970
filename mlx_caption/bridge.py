"""The "PT bridge": a PyTorch CLIP encoder whose output is copied into ``mx.array``.

This is the design mlx-caption replaces, kept (optional extra ``torch``) as the baseline the
benchmarks measure against, and done as well as that design allows: transformers'
``CLIPVisionModel`` in eval mode under ``torch.inference_mode``, its SDPA attention, every
core for torch's thread pool, and one copy per batch (torch tensor -> numpy -> ``mx.array``).
The image tokens then feed the *same* MLX projector and decoder as the pure-MLX path, so a
benchmark differs in the encoder only.

Three ways to build one, all with the same weights as an MLX :class:`VisionTransformer`:

- :meth:`BridgeEncoder.from_pretrained`: a hub id or a local Hugging Face folder;
- :meth:`BridgeEncoder.from_config`: random weights for a :class:`VisionConfig`
  (then :meth:`BridgeEncoder.to_mlx` gives the MLX encoder with the same weights);
- :meth:`BridgeEncoder.from_mlx`: the weights of an existing MLX encoder.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_caption.config import VisionConfig
from mlx_caption.errors import UserError

_INSTALL = "pip install 'mlx-caption[torch]' (torch and transformers)"


def _require_torch() -> tuple[Any, Any]:
    """``(torch, transformers)``, or a :class:`UserError` saying how to install them."""
    try:
        import torch
        import transformers
    except ImportError as err:
        raise UserError(
            f"the PT bridge needs PyTorch and transformers ({err.name} is missing): {_INSTALL}"
        ) from err
    return torch, transformers


def torch_available() -> bool:
    """True when the bridge can run (torch and transformers import)."""
    try:
        _require_torch()
    except UserError:
        return False
    return True


def hf_vision_config(cfg: VisionConfig) -> Any:
    """The ``transformers.CLIPVisionConfig`` of a :class:`VisionConfig` (same field names)."""
    _, transformers = _require_torch()
    return transformers.CLIPVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_channels=cfg.num_channels,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
        projection_dim=cfg.projection_dim or 512,
    )


def _mlx_to_hf_state(weights: dict[str, np.ndarray], hf_keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of :func:`mlx_caption.convert.sanitize` for the keys of a torch state dict.

    ``hf_keys`` are the torch model's own names (with or without ``vision_model.``, which
    differs between transformers versions); each is looked up without the prefix.
    """
    from mlx_caption.convert import PATCH_KEY

    out = {}
    for hf_key in hf_keys:
        key = hf_key.removeprefix("vision_model.")
        if key.endswith("position_ids"):
            continue
        if key not in weights:
            raise ValueError(f"the MLX encoder has no weight for {hf_key!r}")
        value = weights[key]
        if key == PATCH_KEY:
            value = value.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        out[hf_key] = np.ascontiguousarray(value)
    return out


class BridgeEncoder:
    """A torch ``CLIPVisionModel`` behind the MLX encoder's interface for image tokens.

    ``bridge(pixels)`` takes NHWC float32 pixels (``np.ndarray`` or ``mx.array``, the output
    of :mod:`mlx_caption.data.preprocess`) and returns the last hidden state ``(B, T, D)``
    as an ``mx.array``, the same tensor as ``VisionTransformer(pixels).last_hidden_state``.

    Args:
        model: a transformers ``CLIPVisionModel`` (put in eval mode here).
        config: its :class:`VisionConfig` (derived from ``model.config`` when omitted).
        threads: torch intra-op threads; default ``os.cpu_count()``. Note that this sets
            torch's process-wide thread count.
    """

    def __init__(self, model: Any, config: VisionConfig | None = None, threads: int | None = None):
        torch, _ = _require_torch()
        self.torch = torch
        self.model = model.eval()
        if config is None:
            from mlx_caption.convert import vision_config_from_hf

            config = vision_config_from_hf(model.config.to_dict(), None, has_projection=False)
        self.config = config
        self.threads = threads or os.cpu_count() or 1
        torch.set_num_threads(self.threads)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, name_or_path: str, threads: int | None = None) -> BridgeEncoder:
        """Load the vision tower of a Hugging Face CLIP checkpoint (hub id or local folder)."""
        _, transformers = _require_torch()
        from mlx_caption.convert import preprocess_config_from_hf, vision_config_from_hf

        try:
            model = transformers.CLIPVisionModel.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:
            raise UserError(
                f"cannot load a CLIP vision model from {name_or_path!r}: {err}"
            ) from err
        cfg = vision_config_from_hf(model.config.to_dict(), None, has_projection=False)
        pre = os.path.join(str(name_or_path), "preprocessor_config.json")
        if os.path.isfile(pre):
            import json

            with open(pre) as f:
                cfg.preprocess = preprocess_config_from_hf(json.load(f), cfg.image_size)
        return cls(model, cfg, threads)

    @classmethod
    def from_config(
        cls, cfg: VisionConfig, seed: int = 0, threads: int | None = None
    ) -> BridgeEncoder:
        """A randomly initialised encoder of this shape (for benchmarks and tests)."""
        torch, transformers = _require_torch()
        torch.manual_seed(seed)
        model = transformers.CLIPVisionModel(hf_vision_config(cfg))
        return cls(model, cfg, threads)

    @classmethod
    def from_mlx(cls, vit: Any, threads: int | None = None) -> BridgeEncoder:
        """A torch copy of an MLX :class:`~mlx_caption.models.vit.VisionTransformer`."""
        from mlx.utils import tree_flatten

        bridge = cls.from_config(vit.config, threads=threads)
        weights = {k: np.array(v) for k, v in tree_flatten(vit.parameters())}
        hf = _mlx_to_hf_state(weights, list(bridge.model.state_dict()))
        state = {k: bridge.torch.from_numpy(v) for k, v in hf.items()}
        bridge.model.load_state_dict(state, strict=False)  # only position_ids buffers are left
        return bridge

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """The torch weights as numpy arrays (HF names)."""
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def to_mlx(self) -> Any:
        """The MLX encoder with this model's weights, through the library's ``sanitize``."""
        from mlx_caption.convert import sanitize
        from mlx_caption.models.vit import VisionTransformer

        # CLIPVisionModel has no visual_projection, so neither has its MLX twin.
        vit = VisionTransformer(dataclasses.replace(self.config, projection_dim=None))
        weights = sanitize(self.state_dict_numpy())
        vit.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=True)
        vit.eval()
        mx.eval(vit.parameters())
        return vit

    # ------------------------------------------------------------------ running

    def torch_forward(self, pixels: np.ndarray) -> Any:
        """The torch last hidden state of NHWC numpy pixels (no copy into MLX)."""
        torch = self.torch
        # NCHW view of the NHWC buffer: the patch convolution reads it strided, no extra copy.
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            return self.model(pixel_values=x).last_hidden_state

    def __call__(self, pixels: np.ndarray | mx.array) -> mx.array:
        """Image tokens ``(B, T, D)`` as an ``mx.array`` (torch -> numpy -> MLX copy)."""
        if isinstance(pixels, mx.array):
            pixels = np.asarray(pixels)
        hidden = self.torch_forward(pixels)
        return mx.array(hidden.numpy())


def encode_images_bridge(bridge: BridgeEncoder, captioner: Any, pixels: Any) -> mx.array:
    """Projected image tokens ``(B, T, d)`` with the torch encoder and the MLX projector.

    The bridge's counterpart of ``Captioner.encode_images``.
    """
    return captioner.projector(bridge(pixels))


class BridgeCaptioner:
    """A :class:`~mlx_caption.models.captioner.Captioner` whose encoder runs in PyTorch.

    Everything but :meth:`encode_images` (and ``__call__`` given pixels) is the wrapped MLX
    captioner's, so ``generate(BridgeCaptioner(model, bridge), pixels, tokenizer)`` decodes
    with the same MLX decoder. ``bridge`` defaults to a torch copy of ``model.encoder``.
    """

    def __init__(self, captioner: Any, bridge: BridgeEncoder | None = None):
        self.captioner = captioner
        self.bridge = bridge or BridgeEncoder.from_mlx(captioner.encoder)

    def encode_images(self, pixels: Any) -> mx.array:
        """Projected image tokens from the torch encoder."""
        return encode_images_bridge(self.bridge, self.captioner, pixels)

    def __call__(self, pixels: Any, tokens: mx.array, image_tokens: mx.array | None = None):
        if image_tokens is None:
            image_tokens = self.encode_images(pixels)
        return self.captioner(None, tokens, image_tokens=image_tokens)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found here: decoder, projector, config, ...
        return getattr(self.captioner, name)
