"""Our captioner: any zoo encoder -> projector -> the hand-written text decoder.

The decoder cross-attends to the encoder's whole ``last_hidden_state`` token grid, mapped to
the decoder width by the projector. The projector starts with a LayerNorm: CLIP's last hidden
state is the residual stream before any final norm, with a few very large channels, and
normalising it keeps the cross-attention keys well scaled whatever encoder is plugged in.

The three stages are explicit: :meth:`Captioner.encode_features` (pixels -> the encoder's raw
grid, what a feature cache stores), :meth:`Captioner.project` (raw grid -> image tokens) and
``model(image_tokens, tokens)`` (teacher-forced logits). For generation, ``encode`` gives the
image tokens and ``model.decoder`` speaks the engine's protocol (see
:mod:`mlx_caption.generate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_caption.data.look import ImageLook
from mlx_caption.models.base import CaptionerParts
from mlx_caption.models.clip import CLIPVisionConfig
from mlx_caption.models.decoder import DecoderConfig, TextDecoder
from mlx_caption.models.layers import gelu_tanh
from mlx_caption.models.layers.linear import Linear
from mlx_caption.models.layers.norm import LayerNorm
from mlx_caption.models.registry import build_encoder, encoder_config_from_dict

MODEL_TYPE = "mlx_caption"
PROJECTORS = ("linear", "mlp")


@dataclass
class CaptionerConfig:
    """Encoder + projector + decoder: everything needed to rebuild a captioner."""

    vision: Any = field(default_factory=CLIPVisionConfig)  # any encoder family's config
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    encoder_name: str | None = None  # zoo name or source of the encoder weights, for provenance
    projector: str = "linear"  # "linear" | "mlp"
    # What the training images looked like (background, noise, object sizes), measured when
    # the model was trained here; None for older checkpoints and models trained elsewhere.
    image_look: ImageLook | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionerConfig:
        return cls(
            vision=encoder_config_from_dict(data.get("vision", {})),
            decoder=DecoderConfig.from_dict(data.get("decoder", {})),
            encoder_name=data.get("encoder_name"),
            projector=data.get("projector", "linear"),
            image_look=ImageLook.from_dict(data["image_look"]) if data.get("image_look") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": MODEL_TYPE,
            "vision": self.vision.to_dict(),
            "decoder": self.decoder.to_dict(),
            "encoder_name": self.encoder_name,
            "projector": self.projector,
            "image_look": self.image_look.to_dict() if self.image_look else None,
        }


class Projector(nn.Module):
    """LayerNorm, then Linear (``"linear"``) or Linear-GELU-Linear (``"mlp"``): image width
    -> decoder width."""

    def __init__(self, in_dims: int, out_dims: int, kind: str = "linear"):
        super().__init__()
        if kind not in PROJECTORS:
            raise ValueError(f"unknown projector {kind!r}; choose one of {', '.join(PROJECTORS)}")
        self.kind = kind
        self.norm = LayerNorm(in_dims)
        self.fc1 = Linear(in_dims, out_dims)
        if kind == "mlp":
            self.fc2 = Linear(out_dims, out_dims)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.fc1(self.norm(x))
        return self.fc2(gelu_tanh(x)) if self.kind == "mlp" else x


class Captioner(CaptionerParts):
    """Encoder (``.encoder``, any zoo family), ``.projector`` and ``.decoder``.

    ``model(image_tokens, tokens)`` gives next-token logits for teacher forcing, with
    ``image_tokens = model.encode(pixels)``, or ``model.project(grid)`` for a frozen
    encoder's grid from a feature cache.
    """

    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        self.config = cfg
        self.encoder = build_encoder(cfg.vision)
        self.projector = Projector(cfg.vision.hidden_size, cfg.decoder.hidden_size, cfg.projector)
        self.decoder = TextDecoder(cfg.decoder)

    # ----------------------------------------------------------------- forward

    def encode_features(self, pixels: mx.array) -> mx.array:
        """The encoder's raw token grid ``(B, T, D_vision)`` (what a feature cache stores)."""
        return self.encoder(pixels).last_hidden_state

    def project(self, features: mx.array) -> mx.array:
        """Raw encoder grid ``(B, T, D_vision)`` -> image tokens ``(B, T, d)``."""
        return self.projector(features)

    def encode(self, pixels: mx.array) -> mx.array:
        """Preprocessed NHWC pixels -> image tokens ``(B, T, d)`` for the decoder."""
        return self.project(self.encode_features(pixels))

    def __call__(
        self, image_tokens: mx.array, tokens: mx.array, padding_mask: mx.array | None = None
    ) -> mx.array:
        """Logits ``(B, L, vocab)`` of ``tokens`` (B, L) given image tokens ``(B, T, d)``;
        ``padding_mask`` (B, L) is True for real tokens."""
        return self.decoder(tokens, image_tokens, padding_mask=padding_mask)

    def load_encoder_weights(self, encoder: nn.Module) -> None:
        """Copy a (pretrained) encoder's weights into ``self.encoder``; every name and shape
        must match (a ``ValueError`` otherwise)."""
        self.encoder.load_weights(list(tree_flatten(encoder.parameters())), strict=True)
