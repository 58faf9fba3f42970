"""The CLIP vision family: OpenAI and OpenCLIP vision towers (``CLIPModel``,
``CLIPVisionModel``, ``CLIPVisionModelWithProjection`` checkpoints)."""

from mlx_caption.models.base import Family
from mlx_caption.models.clip.config import CLIPVisionConfig, clip_preprocess
from mlx_caption.models.clip.vision import DROP_PREFIXES, CLIPVisionModel

FAMILY = Family(
    name="clip",
    kind="encoder",
    model_types=("clip", "clip_vision_model"),
    config_class=CLIPVisionConfig,
    model_class=CLIPVisionModel,
    reference="mlx_caption.models.clip.reference",
    drop_prefixes=DROP_PREFIXES,
)

__all__ = ["FAMILY", "CLIPVisionConfig", "CLIPVisionModel", "clip_preprocess"]
