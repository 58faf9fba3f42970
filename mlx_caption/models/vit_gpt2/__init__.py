"""The ViT-GPT2 captioning family: ``VisionEncoderDecoderModel`` checkpoints with a ViT
encoder and a GPT-2 decoder (nlpconnect/vit-gpt2-image-captioning).

The folder is named for the pair it reads, not for transformers' class: a vision-encoder-
decoder checkpoint with another encoder or decoder is refused, naming both.
"""

from mlx_caption.models.base import Family
from mlx_caption.models.vit_gpt2.config import GPT2Config, VitGpt2Config
from mlx_caption.models.vit_gpt2.gpt2 import GPT2LMHeadModel
from mlx_caption.models.vit_gpt2.model import VisionEncoderDecoderModel

FAMILY = Family(
    name="vit_gpt2",
    kind="captioner",
    model_types=("vision-encoder-decoder",),
    config_class=VitGpt2Config,
    model_class=VisionEncoderDecoderModel,
    reference="mlx_caption.models.vit_gpt2.reference",
)

__all__ = ["FAMILY", "GPT2Config", "GPT2LMHeadModel", "VisionEncoderDecoderModel", "VitGpt2Config"]
