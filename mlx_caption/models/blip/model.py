"""``BlipForConditionalGeneration`` in MLX: the vision tower and the text decoder, with
Hugging Face's parameter names, so a converted checkpoint loads with no renaming."""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from mlx_caption.models.base import CaptionerParts, sanitize_state
from mlx_caption.models.blip.config import BlipConfig
from mlx_caption.models.blip.text import BlipTextLMHeadModel
from mlx_caption.models.blip.vision import BlipVisionModel

PATCH_KEY = "vision_model.embeddings.patch_embedding.weight"
# Buffers and the LM head's copies of tied tensors (transformers ties the head's weight to
# the word embeddings and its bias to cls.predictions.bias when it loads).
_DROPPED = (
    "text_decoder.bert.embeddings.position_ids",
    "text_decoder.cls.predictions.decoder.weight",
    "text_decoder.cls.predictions.decoder.bias",
)


class BlipForConditionalGeneration(CaptionerParts):
    """BLIP's captioner: ``vision_model`` (the encoder) and ``text_decoder``.

    ``encode(pixels)`` gives the image tokens, ``model(image_tokens, tokens)`` teacher-forced
    logits, and ``model.decoder`` (the text decoder) speaks the generation engine's protocol.
    """

    encoder_prefix = "vision_model."

    def __init__(self, cfg: BlipConfig):
        super().__init__()
        self.config = cfg
        self.vision_model = BlipVisionModel(cfg.vision)
        self.text_decoder = BlipTextLMHeadModel(cfg.text, cfg)

    @property
    def encoder(self) -> BlipVisionModel:
        return self.vision_model

    @property
    def decoder(self) -> BlipTextLMHeadModel:
        return self.text_decoder

    def encode_features(self, pixels: mx.array) -> mx.array:
        """The vision tower's normalised token grid ``(B, T, D)`` (what a feature cache holds)."""
        return self.vision_model(pixels).last_hidden_state

    def project(self, features: mx.array) -> mx.array:
        """BLIP's decoder reads the vision grid as it is."""
        return features

    def encode(self, pixels: mx.array) -> mx.array:
        """Preprocessed NHWC pixels -> image tokens ``(B, T, D)``."""
        return self.encode_features(pixels)

    def __call__(self, image_tokens: mx.array, tokens: mx.array) -> mx.array:
        """Teacher-forced logits ``(B, L, vocab)`` of ``tokens`` (B, L)."""
        return self.text_decoder(tokens, image_tokens)[0]

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Map a Hugging Face BLIP state dict to this module's names; idempotent.

        Drops the position-id buffer and the LM head's tied copies, and turns the patch kernel
        from OIHW (torch) into OHWI (MLX); a kernel already OHWI is left as it is.
        """
        return sanitize_state(weights, _hf_key_to_ours, PATCH_KEY)


def _hf_key_to_ours(key: str) -> str | None:
    return None if key in _DROPPED or key.endswith("position_ids") else key
