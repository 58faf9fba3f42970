"""``VisionEncoderDecoderModel`` (ViT encoder, GPT-2 decoder) in MLX, with Hugging Face's
parameter names (``encoder.*``, ``enc_to_dec_proj``, ``decoder.transformer.*``), so a converted
checkpoint loads with no renaming. The encoder is the ViT family's model."""

from __future__ import annotations

import re
from typing import Any

import mlx.core as mx

from mlx_caption.models.base import CaptionerParts
from mlx_caption.models.layers.linear import Linear
from mlx_caption.models.vit import ViTModel
from mlx_caption.models.vit_gpt2.config import VitGpt2Config
from mlx_caption.models.vit_gpt2.gpt2 import GPT2LMHeadModel

# GPT-2's Conv1D weights, stored (in, out): nn.Linear holds (out, in).
CONV1D = re.compile(
    r"^decoder\.transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|crossattention\.q_attn|"
    r"crossattention\.c_attn|crossattention\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$"
)
# The causal-mask buffers older GPT-2 checkpoints carry, and the LM head's tied copy.
_DROPPED = re.compile(
    r"^decoder\.(transformer\.h\.\d+\.(attn|crossattention)\.(masked_)?bias|lm_head\.weight)$"
)
# The first block's self-attention c_attn: (d, 3d) in torch's layout, (3d, d) in ours. Its
# shape says which layout a state dict is in (the square projections cannot).
_LAYOUT_KEY = "decoder.transformer.h.0.attn.c_attn.weight"


class VisionEncoderDecoderModel(CaptionerParts):
    """ViT-GPT2: ``encoder`` (the ViT family's model), ``enc_to_dec_proj`` when the widths
    differ, and ``decoder`` (GPT-2 with cross-attention).

    ``encode(pixels)`` gives the image tokens at the decoder's width, ``model(image_tokens,
    tokens)`` teacher-forced logits, and ``model.decoder`` speaks the generation engine's
    protocol.
    """

    encoder_prefix = "encoder."

    def __init__(self, cfg: VitGpt2Config):
        super().__init__()
        self.config = cfg
        self.encoder = ViTModel(cfg.vision)
        if cfg.projects:
            self.enc_to_dec_proj = Linear(cfg.vision.hidden_size, cfg.text.n_embd)
        self.decoder = GPT2LMHeadModel(cfg.text, cfg)

    def encode_features(self, pixels: mx.array) -> mx.array:
        """The ViT's normalised token grid ``(B, T, D)`` (what a feature cache holds)."""
        return self.encoder(pixels).last_hidden_state

    def project(self, features: mx.array) -> mx.array:
        """The grid at the decoder's width (``enc_to_dec_proj``, when the widths differ). It
        trains with the decoder, so decoder-only fine-tuning from cached grids trains it."""
        return self.enc_to_dec_proj(features) if "enc_to_dec_proj" in self else features

    def encode(self, pixels: mx.array) -> mx.array:
        """Preprocessed NHWC pixels -> image tokens ``(B, T, d)``."""
        return self.project(self.encode_features(pixels))

    def __call__(self, image_tokens: mx.array, tokens: mx.array) -> mx.array:
        """Teacher-forced logits ``(B, L, vocab)`` of ``tokens`` (B, L)."""
        return self.decoder(tokens, image_tokens)[0]

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Map a Hugging Face ViT-GPT2 state dict to this module's names; idempotent.

        The encoder's tensors go through the ViT family's ``sanitize``; the decoder's drop the
        causal-mask buffers and the LM head (tied to ``wte``), and GPT-2's Conv1D weights are
        transposed when the state dict holds them in torch's (in, out) layout, which the first
        block's ``c_attn`` shape tells.
        """
        vit = {
            k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")
        }
        out = {f"encoder.{k}": v for k, v in ViTModel.sanitize(vit).items()}
        layout = weights.get(_LAYOUT_KEY)
        transpose = layout is not None and layout.shape[1] == 3 * layout.shape[0]
        for key, value in weights.items():
            if key.startswith("encoder.") or _DROPPED.match(key):
                continue
            if transpose and CONV1D.match(key):
                value = value.T
            out[key] = value
        return out
