"""Image ids as the COCO results format allows them, and telling which ones do not match."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlx_caption.errors import UserError

ImageId = int | str


def canonical_id(value: Any) -> ImageId:
    """Image ids as the COCO results format allows them: ints stay ints, digit strings
    ("391895") become ints, any other string (a Flickr file stem) stays a string."""
    if isinstance(value, bool):
        raise UserError(f"bad image id {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s.isdigit() and s.isascii() and str(int(s)) == s:
            return int(s)
        if s:
            return s
    raise UserError(f"bad image id {value!r}")


def describe_ids(ids: Sequence[Any]) -> str:
    """The first few ids, for an error message."""
    shown = ", ".join(repr(i) for i in ids[:5])
    return f"{shown}{', ...' if len(ids) > 5 else ''}"


def check_same_images(refs: Mapping[Any, Any], preds: Mapping[Any, Any]) -> None:
    """Refuse (UserError) predictions and references that cover different images.

    The message names the count and the first few ids missing on each side.
    """
    no_refs = [k for k in preds if k not in refs]
    no_pred = [k for k in refs if k not in preds]
    if not no_refs and not no_pred:
        return
    parts = []
    if no_refs:
        parts.append(
            f"{len(no_refs)} predicted image(s) have no references: {describe_ids(no_refs)}"
        )
    if no_pred:
        parts.append(
            f"{len(no_pred)} referenced image(s) have no prediction: {describe_ids(no_pred)}"
        )
    raise UserError("predictions and references cover different images; " + "; ".join(parts))
