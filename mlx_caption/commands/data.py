"""``mlx-caption data check``: what a caption data source holds, and what is wrong with it."""

from __future__ import annotations

import argparse
import re
from typing import Any

HELP = "Inspect a caption data set (data check): images, captions, missing/corrupt files."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    check = sub.add_parser("check", help="count images and captions per split, find bad files")
    check.add_argument(
        "--format",
        required=True,
        choices=["karpathy", "flickr", "coco", "csv", "jsonl", "folder"],
        help="annotation format",
    )
    check.add_argument("--annotations", help="annotation file (folder format: not needed)")
    check.add_argument("--images", help="image root folder (default: the annotation's folder)")
    check.add_argument("--split", help="split for sources that have none (coco, csv, folder)")
    check.add_argument("--image-column", default="image", help="csv/jsonl image column")
    check.add_argument("--caption-column", default="caption", help="csv/jsonl caption column")
    check.add_argument("--cache", help="JSON file that remembers image verdicts between runs")
    check.add_argument("--json", action="store_true", help="print the report as JSON last")


_WORD = re.compile(r"\w+")


def _percentiles(lengths: list[int]) -> dict[str, int]:
    import numpy as np

    if not lengths:
        return {"p5": 0, "p50": 0, "p95": 0, "max": 0}
    a = np.asarray(lengths)
    return {
        "p5": int(round(float(np.percentile(a, 5)))),
        "p50": int(round(float(np.percentile(a, 50)))),
        "p95": int(round(float(np.percentile(a, 95)))),
        "max": int(a.max()),
    }


def check_source(
    format: str,
    annotations: str | None,
    images: str | None,
    split: str | None = None,
    cache: str | None = None,
    progress: bool = False,
    **columns: str,
) -> dict[str, Any]:
    """Load and validate a source; return the report ``data check`` prints."""
    from mlx_caption.data.sources import (
        ImageValidator,
        LoadReport,
        load_records,
        splits_of,
        validate_records,
    )

    load = LoadReport()
    records = load_records(format, annotations, images, split=split, report=load, **columns)
    validator = ImageValidator(cache_file=cache) if cache else None
    valid = validate_records(records, validator=validator, progress=progress)
    ok, missing, corrupt = set(valid.ok), set(valid.missing), set(valid.corrupt)
    split_names = splits_of(records)
    split_names += sorted({s for s, _ in load.refused + load.no_captions} - set(split_names))
    per_split: dict[str, Any] = {}
    for s in split_names:
        idx = [i for i, r in enumerate(records) if r.split == s]
        usable = [i for i in idx if i in ok]
        # Words, not whitespace chunks: Flickr's trailing " ." is not a word.
        lengths = [len(_WORD.findall(c)) for i in usable for c in records[i].captions]
        per_split[s] = {
            "images": len(usable),
            "captions": len(lengths),
            "missing": sum(1 for i in idx if i in missing),
            "corrupt": sum(1 for i in idx if i in corrupt),
            "refused": sum(1 for sp, _ in load.refused if sp == s),
            "no_captions": sum(1 for sp, _ in load.no_captions if sp == s),
            "converted": sum(1 for i in usable if not valid.verdicts[i].native),
            "caption_words": _percentiles(lengths),
        }
    totals = {
        k: sum(v[k] for v in per_split.values())
        for k in ("images", "captions", "missing", "corrupt", "refused", "no_captions")
    }
    examples = {
        "missing": [records[i].image for i in valid.missing[:5]],
        "corrupt": [f"{records[i].image}: {valid.verdicts[i].reason}" for i in valid.corrupt[:5]],
        "refused": [p for _, p in load.refused[:5]],
    }
    return {
        "format": format,
        "annotations": annotations,
        "images_root": images,
        "splits": per_split,
        "total": totals,
        "unlisted": load.unlisted,
        "bad_rows": load.bad_rows,
        "examples": examples,
        "usable": totals["images"] > 0,
    }


def _print_table(report: dict[str, Any]) -> None:
    cols = ["images", "captions", "missing", "corrupt", "refused", "no_captions"]
    header = f"{'split':<8}" + "".join(f"{c:>12}" for c in cols) + "   words p5/p50/p95/max"
    print(header)
    for name, row in report["splits"].items():
        w = row["caption_words"]
        words = f"{w['p5']}/{w['p50']}/{w['p95']}/{w['max']}"
        print(f"{name:<8}" + "".join(f"{row[c]:>12}" for c in cols) + f"   {words}")
    print(f"{'total':<8}" + "".join(f"{report['total'][c]:>12}" for c in cols))
    if report["unlisted"]:
        print(f"{report['unlisted']} images were in no split file (counted as train)")
    if report["bad_rows"]:
        print(f"{report['bad_rows']} annotation lines/rows could not be parsed")
    for kind, items in report["examples"].items():
        for item in items:
            print(f"  {kind}: {item}")


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.errors import UserError

    if args.data_command != "check":
        raise UserError(
            "usage: mlx-caption data check --format FMT --annotations FILE --images DIR"
        )
    if args.format != "folder" and not args.annotations:
        raise UserError(f"--annotations is required for format {args.format!r}")
    report = check_source(
        args.format,
        args.annotations,
        args.images,
        split=args.split,
        cache=args.cache,
        progress=not args.json,
        image_column=args.image_column,
        caption_column=args.caption_column,
    )
    if args.json:
        print_json(report)
    else:
        _print_table(report)
    if not report["usable"]:
        if not args.json:
            print("error: no usable images with captions found")
        return 2
    return 0
