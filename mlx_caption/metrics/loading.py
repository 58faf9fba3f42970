"""Reading references and predictions for ``mlx-caption score``.

References are parsed by :mod:`mlx_caption.data.sources` (the loaders training and
``mlx-caption eval`` use), captions only, so image ids and split names mean the same here as
there. Predictions are a COCO results file.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlx_caption.data.sources import LoadReport, load_records, normalize_split
from mlx_caption.errors import UserError
from mlx_caption.files import read_json
from mlx_caption.metrics.ids import ImageId, canonical_id, describe_ids

# What sources.py counts as a bad row in each reference format. A scorer refuses them rather
# than skipping them: a reference set with pieces missing would change the scores silently.
_BAD_ROWS = {
    "flickr": "line(s) (not 'IMAGE#K<TAB>caption')",
    "karpathy": "image entries (not objects with a 'filename')",
    "coco": "entries (annotations without an 'image_id' or images without a 'file_name')",
}


def load_refs(path: str | os.PathLike, split: str | None = None) -> dict[ImageId, list[str]]:
    """References from a COCO captions JSON, a Karpathy split JSON or a Flickr ``*.token`` file.

    Image ids (the keys) are those of :mod:`mlx_caption.data.sources`, so ``mlx-caption
    eval`` predictions match them:

    * COCO (``{"images", "annotations"}``): the images' ``id``.
    * Karpathy (``{"images": [{"sentences", "split", ...}]}``): ``cocoid`` when present
      (COCO), else ``imgid`` (Flickr8k/30k), else the image's position in the file.
      ``split`` keeps only that split, with the data loaders' aliases ("train" also takes
      "restval"; "dev"/"validation" mean "val").
    * Flickr ``IMAGE.jpg#K<TAB>caption`` lines: the file name without extension.

    Digit-string ids become ints (:func:`~mlx_caption.metrics.canonical_id`), as the COCO
    results format allows either. Images without captions are left out.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"references not found: {path}")
    report = LoadReport()
    if path.suffix.lower() != ".json":
        if split is not None:
            raise UserError(f"{path}: --split applies to Karpathy JSON files only")
        fmt = "flickr"
        records = load_records(fmt, path, captions_only=True, report=report)
    else:
        # Parsed here only to tell the two JSON formats apart; sources reuses the parse.
        data = read_json(path, want=None)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise UserError(f"{path}: neither COCO captions nor Karpathy JSON (no 'images' list)")
        fmt = "coco" if "annotations" in data else "karpathy"
        if fmt == "coco" and split is not None:
            raise UserError(f"{path}: COCO captions files have no splits; drop --split")
        records = load_records(fmt, path, captions_only=True, parsed_json=data, report=report)
    if report.bad_rows:
        raise UserError(f"{path}: {report.bad_rows} malformed {_BAD_ROWS[fmt]}")
    if split is not None:
        wanted = normalize_split(split)
        records = [r for r in records if r.split == wanted]
        if not records:
            known = ", ".join(sorted(report.split_names)) or "none"
            raise UserError(f"{path}: no images in split {split!r} (splits: {known})")
    refs: dict[ImageId, list[str]] = {}
    for record in records:
        refs.setdefault(canonical_id(record.id), []).extend(record.captions)
    return refs


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
