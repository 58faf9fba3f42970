"""The BLIP captioning family: ``BlipForConditionalGeneration`` checkpoints
(Salesforce/blip-image-captioning-base and -large)."""

from mlx_caption.models.base import Family
from mlx_caption.models.blip.config import BlipConfig, BlipTextConfig, BlipVisionConfig
from mlx_caption.models.blip.model import BlipForConditionalGeneration

FAMILY = Family(
    name="blip",
    kind="captioner",
    model_types=("blip",),
    config_class=BlipConfig,
    model_class=BlipForConditionalGeneration,
    reference="mlx_caption.models.blip.reference",
)

__all__ = [
    "FAMILY",
    "BlipConfig",
    "BlipForConditionalGeneration",
    "BlipTextConfig",
    "BlipVisionConfig",
]
