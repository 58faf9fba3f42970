"""DINOv2 configuration, with Hugging Face ``Dinov2Config`` field names (and
``Dinov2WithRegistersConfig``'s ``num_register_tokens``)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mlx_caption.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig
from mlx_caption.models.base import EncoderConfig

MODEL_TYPE = "dinov2"
REGISTERS_MODEL_TYPE = "dinov2_with_registers"


def dinov2_preprocess(crop_size: int = 224) -> PreprocessConfig:
    """DINOv2's processor (``BitImageProcessor``): shortest side 256 for a 224 crop, bicubic,
    center crop, ImageNet mean/std."""
    return PreprocessConfig(
        resize_shortest_edge=round(crop_size * 256 / 224),
        crop_size=crop_size,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


@dataclass
class Dinov2Config(EncoderConfig):
    """A DINOv2 ViT (with or without registers) and the preprocessing of its checkpoint
    (defaults: DINOv2-B/14's, as transformers' Dinov2Config).

    The hub checkpoints have ``image_size`` 518 (a 37x37 position table) while their
    processor feeds 224-px crops: the positions are resized to the input's grid.
    """

    MODEL_TYPE = MODEL_TYPE
    HF_FIELDS = (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "hidden_act",
        "layer_norm_eps", "qkv_bias", "layerscale_value", "image_size", "patch_size",
        "num_channels",
    )  # fmt: skip

    patch_size: int = 14
    mlp_ratio: int = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    layerscale_value: float = 1.0
    # The registers variant (Darcet et al., 2023): tokens after the class token, and
    # positions resized with antialiasing, as transformers' Dinov2WithRegistersModel does.
    with_registers: bool = False
    num_register_tokens: int = 0

    def default_preprocess(self) -> PreprocessConfig:
        return dinov2_preprocess()

    @property
    def intermediate_size(self) -> int:
        """The MLP's hidden width (``mlp_ratio`` times the model's)."""
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def prefix_tokens(self) -> int:
        """The class token and the registers."""
        return 1 + self.num_register_tokens

    @property
    def num_positions(self) -> int:
        """Rows of the position table: the grid and the class token (registers have none)."""
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def read_hf(cls, config: dict, weight_names: Collection[str]) -> tuple[dict, dict]:
        """A ``Dinov2Config`` or ``Dinov2WithRegistersConfig``; a SwiGLU MLP is refused."""
        model_type = config.get("model_type")
        if model_type not in (MODEL_TYPE, REGISTERS_MODEL_TYPE):
            raise ValueError(
                f"not a DINOv2 checkpoint: config.json has model_type={model_type!r} "
                f"(expected {MODEL_TYPE!r} or {REGISTERS_MODEL_TYPE!r})"
            )
        if config.get("use_swiglu_ffn"):
            raise ValueError("DINOv2 with a SwiGLU MLP (dinov2-giant) is not supported")
        if model_type == MODEL_TYPE:
            return config, {}
        # transformers' registers config defaults to 16-px patches and 4 registers.
        registers = {
            "with_registers": True,
            "num_register_tokens": config.get("num_register_tokens", 4),
        }
        return {"patch_size": 16, **config}, registers
