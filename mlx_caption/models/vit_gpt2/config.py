"""ViT-GPT2 configuration (``VisionEncoderDecoderModel`` with a ViT encoder and a GPT-2
decoder), with Hugging Face's ``GPT2Config`` field names and defaults for the decoder; the
encoder is the ViT family's :class:`~mlx_caption.models.vit.ViTConfig`."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from mlx_caption.models.base import (
    PretrainedCaptionerConfig,
    generation_defaults,
    hf_generation_settings,
)
from mlx_caption.models.vit import ViTConfig

MODEL_TYPE = "vision-encoder-decoder"
ENCODER_TYPE = "vit"
DECODER_TYPE = "gpt2"
GPT2_END = 50256  # <|endoftext|>: GPT-2's bos, eos and (in ViT-GPT2) pad and decoder start


@dataclass
class GPT2Config:
    """GPT-2 with cross-attention in every block (defaults: transformers' ``GPT2Config``,
    GPT-2 small's), and the ids generation starts, ends and pads with."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    # Dropout while fine-tuning; attention-weight dropout (attn_pdrop) is not applied: the
    # shared attention core has none.
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    # Attention scaling: by 1/sqrt(head_dim), and by 1/(layer index + 1); the upcast runs the
    # attention in float32 whatever the weights' dtype.
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    # From the generation config (or config.json, as transformers reads them).
    decoder_start_token_id: int = GPT2_END
    eos_token_id: int = GPT2_END
    pad_token_id: int = GPT2_END

    HF_FIELDS = (
        "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
        "activation_function", "layer_norm_epsilon", "resid_pdrop", "embd_pdrop",
        "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
    )  # fmt: skip

    @property
    def inner_size(self) -> int:
        """The MLP's hidden width."""
        return self.n_inner or 4 * self.n_embd

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPT2Config:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VitGpt2Config(PretrainedCaptionerConfig):
    """A ViT-GPT2 captioner: the ViT encoder (its processor included), the GPT-2 decoder and
    generation defaults. The encoder's tokens go through ``enc_to_dec_proj`` when the widths
    differ (:attr:`projects`), as transformers does."""

    MODEL_TYPE = MODEL_TYPE
    ARCHITECTURE = "VisionEncoderDecoderModel"
    VISION = ViTConfig
    TEXT = GPT2Config
    ABOUT = {"encoder": ENCODER_TYPE, "decoder": DECODER_TYPE}

    vision: ViTConfig = field(default_factory=ViTConfig)
    text: GPT2Config = field(default_factory=GPT2Config)

    @property
    def projects(self) -> bool:
        """Whether the encoder's tokens are projected to the decoder's width."""
        return self.vision.hidden_size != self.text.n_embd

    @classmethod
    def from_hf(
        cls,
        config: dict,
        preprocessor: dict | None = None,
        weight_names: Collection[str] = (),
        generation: dict | None = None,
    ) -> VitGpt2Config:
        """From a Hugging Face ``config.json`` (``VisionEncoderDecoderConfig``),
        ``preprocessor_config.json`` and ``generation_config.json`` dicts; what they leave out
        takes transformers' defaults. ``weight_names`` are the sanitized tensor names (the
        encoder's pooler is kept when the checkpoint has one).

        Only a ViT encoder with a GPT-2 decoder is read; other pairs are refused, naming both.
        """
        if config.get("model_type") != MODEL_TYPE:
            raise ValueError(
                f"not a vision-encoder-decoder checkpoint: model_type={config.get('model_type')!r}"
            )
        encoder, decoder = config.get("encoder") or {}, config.get("decoder") or {}
        pair = (encoder.get("model_type"), decoder.get("model_type"))
        if pair != (ENCODER_TYPE, DECODER_TYPE):
            raise ValueError(
                f"vision-encoder-decoder with encoder {pair[0]!r} and decoder {pair[1]!r}: only "
                f"a {ENCODER_TYPE!r} encoder with a {DECODER_TYPE!r} decoder (ViT-GPT2) is "
                "supported"
            )
        _check_decoder(decoder)
        encoder_names = {n.removeprefix("encoder.") for n in weight_names}
        vision = ViTConfig.from_hf(config, preprocessor, encoder_names)
        defaults = GPT2Config()
        text = GPT2Config(**{n: decoder.get(n, getattr(defaults, n)) for n in GPT2Config.HF_FIELDS})
        width = decoder.get("cross_attention_hidden_size")
        if width is not None and vision.hidden_size != text.n_embd:
            raise ValueError(
                f"cross_attention_hidden_size {width} with a {vision.hidden_size}-wide encoder "
                f"and a {text.n_embd}-wide GPT-2: GPT-2's cross-attention reads tokens of its "
                "own width"
            )
        settings = hf_generation_settings(config, generation, "decoder")
        start = settings.get("decoder_start_token_id", settings.get("bos_token_id"))
        if start is None:
            raise ValueError("no decoder_start_token_id (nor bos_token_id) in the config")
        eos = _single_id(settings.get("eos_token_id", GPT2_END), "eos_token_id")
        pad = settings.get("pad_token_id")
        text.decoder_start_token_id = int(start)
        text.eos_token_id = eos
        text.pad_token_id = eos if pad is None else int(pad)  # transformers pads with eos
        return cls(vision=vision, text=text, **generation_defaults(settings))


def _check_decoder(decoder: dict) -> None:
    """Refuse the GPT-2 variants this port does not run, naming the setting."""
    if not decoder.get("add_cross_attention", False):
        raise ValueError("the GPT-2 decoder has no cross-attention (add_cross_attention false)")
    if not decoder.get("tie_word_embeddings", True):
        raise ValueError("a GPT-2 decoder with untied output embeddings is not supported")
    if decoder.get("n_embd", 768) % decoder.get("n_head", 12):
        raise ValueError(f"n_embd {decoder.get('n_embd')} is not divisible by n_head")


def _single_id(value: Any, name: str) -> int:
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise ValueError(f"{name} {value}: only one end token is supported")
        value = value[0]
    return int(value)
