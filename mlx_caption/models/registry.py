"""Every model family, and finding the one a checkpoint belongs to.

Adding a family is one line here (see ``models/base.py`` for what a family folder holds).
"""

from __future__ import annotations

from typing import Any

from mlx_caption.models import blip, clip, dinov2, git, siglip, vit, vit_gpt2
from mlx_caption.models.base import Family
from mlx_caption.models.clip.config import MODEL_TYPE as CLIP_MODEL_TYPE

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        clip.FAMILY, siglip.FAMILY, dinov2.FAMILY, vit.FAMILY, blip.FAMILY, git.FAMILY,
        vit_gpt2.FAMILY,
    )
}  # fmt: skip


def supported_model_types(kind: str | None = None) -> list[str]:
    """Every ``model_type`` some family reads (of one ``kind`` if given)."""
    return [t for f in FAMILIES.values() if kind in (None, f.kind) for t in f.model_types]


def family_for(config: dict[str, Any], kind: str | None = None) -> Family:
    """The family of a ``config.json`` dict, by its ``model_type``.

    ``kind`` (``"encoder"`` or ``"captioner"``) narrows the search; a checkpoint of another
    kind or an unknown architecture is a ``ValueError`` listing what is supported.
    """
    model_type = config.get("model_type")
    for family in FAMILIES.values():
        if model_type in family.model_types and kind in (None, family.kind):
            return family
    what = f"{kind} " if kind else ""
    raise ValueError(
        f"unsupported {what}architecture: config.json has model_type={model_type!r} "
        f"(architectures {config.get('architectures')}); supported: "
        f"{', '.join(supported_model_types(kind))}"
    )


def family_of(config: Any) -> Family:
    """The family whose config class ``config`` is."""
    for family in FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    raise TypeError(f"no model family has config class {type(config).__name__}")


def encoder_config_from_dict(data: dict[str, Any]) -> Any:
    """An encoder config from its ``to_dict()`` (a converted folder's or a checkpoint's
    ``vision`` section); one without ``model_type`` predates it and is CLIP's."""
    data = {"model_type": CLIP_MODEL_TYPE, **data}
    return family_for(data, "encoder").config_class.from_dict(data)


def build_encoder(config: Any) -> Any:
    """A freshly initialised encoder for an encoder config of any family."""
    return family_of(config).model_class(config)
