"""The ViT family: ``ViTModel`` checkpoints (google/vit-*-in21k), and the encoder half of
``VisionEncoderDecoderModel`` ones such as ViT-GPT2 (``ViTModel.sanitize`` and
``ViTConfig.from_hf`` read those too)."""

from mlx_caption.models.base import Family
from mlx_caption.models.vit.config import ViTConfig, vit_preprocess
from mlx_caption.models.vit.vision import ViTModel

FAMILY = Family(
    name="vit",
    kind="encoder",
    model_types=("vit",),
    config_class=ViTConfig,
    model_class=ViTModel,
    reference="mlx_caption.models.vit.reference",
)

__all__ = ["FAMILY", "ViTConfig", "ViTModel", "vit_preprocess"]
