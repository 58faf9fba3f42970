"""Models for the benchmarks: random weights, the same in MLX and in the PT bridge."""

from __future__ import annotations

import dataclasses
from typing import Any

import mlx.core as mx

from mlx_caption.models.blip import BlipConfig, BlipTextConfig, BlipVisionConfig
from mlx_caption.models.captioner import CaptionerConfig
from mlx_caption.models.decoder import DecoderConfig
from mlx_caption.models.git import GitConfig, GitTextConfig, GitVisionConfig
from mlx_caption.models.vit import ViTConfig
from mlx_caption.models.vit_gpt2 import GPT2Config, VitGpt2Config

# Same shapes as zoo.DECODER_PRESETS (kept here so the benchmark does not depend on the zoo).
DECODERS: dict[str, DecoderConfig] = {
    "tiny": DecoderConfig(hidden_size=256, num_layers=3, num_heads=4, intermediate_size=1024),
    "small": DecoderConfig(hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048),
    "base": DecoderConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}

# A BLIP of BLIP's layout, tiny: checks the captioner section's harness in seconds.
TINY_BLIP = BlipConfig(
    vision=BlipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=16,
    ),
    text=BlipTextConfig(
        vocab_size=200, hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32, bos_token_id=198,
    ),
)  # fmt: skip

# A GIT of GIT's layout, tiny, likewise.
TINY_GIT = GitConfig(
    vision=GitVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=16,
    ),
    text=GitTextConfig(
        vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=32, hidden_dropout_prob=0.0,
    ),
)  # fmt: skip

# A ViT-GPT2 of its layout (an encoder wider than the decoder: enc_to_dec_proj), tiny.
TINY_VIT_GPT2 = VitGpt2Config(
    vision=ViTConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=16,
    ),
    text=GPT2Config(
        vocab_size=200, n_positions=32, n_embd=32, n_layer=1, n_head=2,
        decoder_start_token_id=199, eos_token_id=199, pad_token_id=199,
    ),
)  # fmt: skip

TINY_DECODER = DecoderConfig(
    vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=24
)


def decoder_config(name_or_cfg: str | DecoderConfig, vocab_size: int = 8192) -> DecoderConfig:
    """A preset by name (with ``vocab_size``), or the config itself; dropout off."""
    if isinstance(name_or_cfg, DecoderConfig):
        return dataclasses.replace(name_or_cfg, dropout=0.0)
    return dataclasses.replace(DECODERS[name_or_cfg], vocab_size=vocab_size, dropout=0.0)


def build_captioner(
    vision: Any,
    decoder: str | DecoderConfig = "small",
    *,
    vocab_size: int = 8192,
    seed: int = 0,
    bridge: bool = True,
) -> tuple[Any, Any]:
    """``(captioner, bridge_captioner | None)``: one MLX decoder, two encoders, same weights.

    ``vision`` is an encoder config of any family. With ``bridge`` the encoder weights are a
    random Hugging Face initialisation converted by the family's ``sanitize``; without, MLX's
    own random init (no torch needed).
    """
    from mlx_caption.bench.encoder import build_pair, without_head
    from mlx_caption.models.captioner import Captioner

    vision = without_head(vision)
    mx.random.seed(seed)
    cfg = CaptionerConfig(vision=vision, decoder=decoder_config(decoder, vocab_size))
    model = Captioner(cfg)
    twin = None
    if bridge:
        from mlx_caption.bridge import BridgeCaptioner

        vit, enc = build_pair(vision, seed)
        model.load_encoder_weights(vit)
        twin = BridgeCaptioner(model, enc)
    model.eval()
    mx.eval(model.parameters())
    return model, twin


class IdsTokenizer:
    """Stands in for a trained tokenizer: ``decode`` writes the ids (benchmarks need no text)."""

    def decode(self, ids: list[int]) -> str:
        return " ".join(str(i) for i in ids)
