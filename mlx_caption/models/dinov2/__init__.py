"""The DINOv2 family: ``Dinov2Model`` (facebook/dinov2-small/base/large) and
``Dinov2WithRegistersModel`` (facebook/dinov2-with-registers-*) checkpoints."""

from mlx_caption.models.base import Family
from mlx_caption.models.dinov2.config import Dinov2Config, dinov2_preprocess
from mlx_caption.models.dinov2.vision import Dinov2Model

FAMILY = Family(
    name="dinov2",
    kind="encoder",
    model_types=("dinov2", "dinov2_with_registers"),
    config_class=Dinov2Config,
    model_class=Dinov2Model,
    reference="mlx_caption.models.dinov2.reference",
)

__all__ = ["FAMILY", "Dinov2Config", "Dinov2Model", "dinov2_preprocess"]
