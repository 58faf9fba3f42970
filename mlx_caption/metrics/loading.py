"""Reading references and predictions for ``mlx-caption score``.

References: COCO captions, Karpathy split JSON or Flickr ``*.token`` files. Predictions: a COCO
results file.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlx_caption.errors import UserError
from mlx_caption.files import read_json
from mlx_caption.metrics.ids import ImageId, canonical_id, describe_ids


def _flickr_token_refs(path: Path) -> dict[ImageId, list[str]]:
    refs: dict[ImageId, list[str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        if not sep:
            raise UserError(f"{path}:{n}: expected 'IMAGE#K<TAB>caption'")
        name = key.rsplit("#", 1)[0].strip()
        refs.setdefault(canonical_id(Path(name).stem), []).append(caption.strip())
    return refs


def load_refs(path: str | os.PathLike, split: str | None = None) -> dict[ImageId, list[str]]:
    """References from a COCO captions JSON, a Karpathy split JSON or a Flickr ``*.token`` file.

    Image ids (the keys) follow the project's loaders (:mod:`mlx_caption.data.sources`), so
    ``mlx-caption eval`` predictions match them:

    * COCO (``{"images", "annotations"}``): the annotations' ``image_id``.
    * Karpathy (``{"images": [{"sentences", "split", ...}]}``): ``cocoid`` when present
      (COCO), else ``imgid`` (Flickr8k/30k), else the image's position in the file.
      ``split`` keeps only that split ("train" also takes "restval"; "dev"/"validation"
      mean "val").
    * Flickr ``IMAGE.jpg#K<TAB>caption`` lines: the file name without extension.

    Digit-string ids become ints (:func:`canonical_id`), as the COCO results format allows
    either. Images without captions are left out.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"references not found: {path}")
    if path.suffix.lower() != ".json":
        if split is not None:
            raise UserError(f"{path}: --split applies to Karpathy JSON files only")
        try:
            return _flickr_token_refs(path)
        except UnicodeDecodeError as err:
            raise UserError(f"cannot read {path}: {err}") from None
    data = read_json(path, want=None)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{path}: neither COCO captions nor Karpathy JSON (no 'images' list)")
    refs: dict[ImageId, list[str]] = {}
    if "annotations" in data:
        if split is not None:
            raise UserError(f"{path}: COCO captions files have no splits; drop --split")
        for a in data["annotations"]:
            if (
                not isinstance(a, dict)
                or "image_id" not in a
                or not isinstance(a.get("caption"), str)
            ):
                raise UserError(f"{path}: bad annotation {str(a)[:80]}")
            refs.setdefault(canonical_id(a["image_id"]), []).append(a["caption"].strip())
        return refs
    wanted = _split_names(split)
    seen_splits: set[str] = set()
    for pos, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise UserError(f"{path}: bad image entry {str(img)[:80]}")
        img_split = str(img.get("split", ""))
        seen_splits.add(img_split)
        if wanted is not None and img_split.lower() not in wanted:
            continue
        caps = [
            (s.get("raw") or " ".join(s.get("tokens", []))).strip()
            for s in img.get("sentences", [])
            if isinstance(s, dict)
        ]
        caps = [c for c in caps if c]
        if caps:
            raw_id = img.get("cocoid", img.get("imgid", pos))
            refs.setdefault(canonical_id(raw_id), []).extend(caps)
    if wanted is not None and not refs:
        known = ", ".join(sorted(s for s in seen_splits if s)) or "none"
        raise UserError(f"{path}: no images in split {split!r} (splits: {known})")
    return refs


def _split_names(split: str | None) -> set[str] | None:
    if split is None:
        return None
    name = split.strip().lower()
    if name in ("dev", "validation", "valid"):
        return {"val", "dev", "validation"}
    if name == "train":
        return {"train", "restval"}
    return {name}


def load_preds(path: str | os.PathLike) -> dict[ImageId, str]:
    """Predictions from a COCO results JSON: ``[{"image_id": .., "caption": ".."}, ...]``.

    An image predicted twice is refused (COCO's own loader would silently score both).
    """
    path = Path(path)
    data = read_json(path, want=None)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of {{'image_id', 'caption'}} (COCO results)")
    preds: dict[ImageId, str] = {}
    dupes: list[ImageId] = []
    for n, item in enumerate(data):
        if not isinstance(item, dict) or "image_id" not in item or "caption" not in item:
            raise UserError(f"{path}: entry {n} lacks 'image_id' or 'caption': {str(item)[:80]}")
        if not isinstance(item["caption"], str):
            raise UserError(f"{path}: entry {n}: caption must be a string")
        key = canonical_id(item["image_id"])
        if key in preds:
            dupes.append(key)
        preds[key] = item["caption"]
    if dupes:
        raise UserError(
            f"{path}: {len(dupes)} image(s) have more than one caption "
            f"(e.g. {describe_ids(dupes)}); keep one prediction per image"
        )
    return preds
