"""The GIT captioning family: ``GitForCausalLM`` checkpoints (microsoft/git-base,
git-base-coco, git-large-coco, git-base-textcaps)."""

from mlx_caption.models.base import Family
from mlx_caption.models.git.config import GitConfig, GitTextConfig, GitVisionConfig
from mlx_caption.models.git.model import GitForCausalLM

FAMILY = Family(
    name="git",
    kind="captioner",
    model_types=("git",),
    config_class=GitConfig,
    model_class=GitForCausalLM,
    reference="mlx_caption.models.git.reference",
)

__all__ = ["FAMILY", "GitConfig", "GitForCausalLM", "GitTextConfig", "GitVisionConfig"]
