"""The SigLIP vision family: ``SiglipModel`` and ``SiglipVisionModel`` checkpoints, SigLIP and
SigLIP 2's fixed-resolution ones alike (both are ``model_type: siglip``)."""

from mlx_caption.models.base import Family
from mlx_caption.models.siglip.config import SiglipVisionConfig, siglip_preprocess
from mlx_caption.models.siglip.vision import DROP_PREFIXES, SiglipVisionModel

FAMILY = Family(
    name="siglip",
    kind="encoder",
    model_types=("siglip", "siglip_vision_model"),
    config_class=SiglipVisionConfig,
    model_class=SiglipVisionModel,
    reference="mlx_caption.models.siglip.reference",
    drop_prefixes=DROP_PREFIXES,
)

__all__ = ["FAMILY", "SiglipVisionConfig", "SiglipVisionModel", "siglip_preprocess"]
