"""``mlx-caption synth``: write the synthetic shapes captioning data set."""

from __future__ import annotations

import argparse

HELP = "Generate the synthetic shapes data set (JPEGs + Karpathy-format JSON)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (images/ and the JSON)")
    parser.add_argument("--images", type=int, default=2000, help="number of images (2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (64)")
    parser.add_argument(
        "--max-objects", type=int, default=3, help="shapes per image: 1 to this many (3)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary last")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from collections import Counter

    from mlx_caption.commands import print_json
    from mlx_caption.data.synthetic import write_synthetic_dataset

    start = time.perf_counter()
    path = write_synthetic_dataset(
        args.out, images=args.images, seed=args.seed, size=args.size, max_objects=args.max_objects
    )
    seconds = time.perf_counter() - start
    data = json.loads(path.read_text(encoding="utf-8"))
    splits = Counter(e["split"] for e in data["images"])
    summary = {
        "dataset": str(path),
        "images": args.images,
        "captions": sum(len(e["sentences"]) for e in data["images"]),
        "splits": dict(splits),
        "seed": args.seed,
        "size": args.size,
        "seconds": round(seconds, 3),
    }
    if args.json:
        print_json(summary)
    else:
        parts = ", ".join(f"{k} {v}" for k, v in splits.items())
        print(f"wrote {args.images} images ({parts}) in {seconds:.1f} s")
        print(f"dataset: {path}")
    return 0
