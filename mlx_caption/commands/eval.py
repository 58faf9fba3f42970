"""``mlx-caption eval``: caption a data split, score it, write predictions, metrics and a gallery."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlx_caption.commands._decoding import add_decoding_arguments, decoding_from_args
from mlx_caption.commands.caption import add_model_argument

HELP = "Caption a split with a captioner; write COCO predictions, metrics and an HTML gallery."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument(
        "--data", required=True, help="annotation file (or image folder for --format folder)"
    )
    parser.add_argument(
        "--format", default=None, help="annotation format (default: guessed from --data)"
    )
    parser.add_argument("--images", default=None, help="image root (default: beside --data)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--out", default=None, help="folder for predictions.json, metrics.json, gallery.html"
    )
    parser.add_argument(
        "--gallery", type=int, default=48, metavar="N", help="images in the gallery (0: none)"
    )
    parser.add_argument(
        "--metrics-tokenizer",
        default="auto",
        choices=["auto", "java", "python"],
        help="PTB tokenizer to use",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON last")
    add_decoding_arguments(parser, default_beam=3)


def guess_format(data: str | Path) -> str:
    """Annotation format from a path: folder, token file, csv, jsonl, or a JSON's structure."""
    from mlx_caption.errors import UserError

    path = Path(data)
    if path.is_dir():
        return "folder"
    if not path.is_file():
        raise UserError(f"data not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".token", ".txt"):
        return "flickr"
    if suffix in (".csv", ".jsonl"):
        return suffix[1:]
    if suffix == ".json":
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{path} is not valid JSON: {err}") from None
        if isinstance(head, dict) and "annotations" in head:
            return "coco"
        if isinstance(head, dict) and "images" in head:
            return "karpathy"
    raise UserError(f"cannot tell the format of {path}; pass --format")


def _print_table(metrics: dict) -> None:
    rows = metrics["all_references"]
    print(
        f"images: {metrics['images']}  dropped: {metrics['dropped_images']}  tokenizer: {rows.get('tokenizer')}"
    )
    for key, value in rows.items():
        if isinstance(value, float):
            print(f"  {key:<10} {value:.4f}")
    if "leave_one_out" in metrics:
        print("  leave-one-out (model / reference agreement):")
        loo, agree = metrics["leave_one_out"], metrics["reference_agreement"]
        for key in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
            if isinstance(loo.get(key), float) and isinstance(agree.get(key), float):
                print(f"  {key:<10} {loo[key]:.4f} / {agree[key]:.4f}")


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.data.sources import load_records
    from mlx_caption.errors import UserError
    from mlx_caption.evaluate import evaluate
    from mlx_caption.generate import DecodingConfig
    from mlx_caption.loading import load_captioner

    fmt = args.format or guess_format(args.data)
    records = [
        r
        for r in load_records(
            fmt, args.data, args.images, split=None if fmt in ("karpathy", "flickr") else args.split
        )
        if r.split == args.split
    ]
    if not records:
        raise UserError(f"no images in split {args.split!r} of {args.data}")
    if args.limit:
        records = records[: args.limit]
    decoding = DecodingConfig().replace(**decoding_from_args(args))
    model, tokenizer = load_captioner(args.model)
    result = evaluate(
        model,
        tokenizer,
        records,
        args.out,
        decoding=decoding,
        batch_size=args.batch_size,
        gallery_images=args.gallery if args.out else 0,
        metrics_tokenizer=args.metrics_tokenizer,
        progress=not args.json,
    )
    if args.json:
        print_json(result.metrics)
    else:
        _print_table(result.metrics)
        if args.out:
            print(f"wrote {Path(args.out) / 'predictions.json'}, metrics.json, gallery.html")
    return 0
