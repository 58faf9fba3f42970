"""`mlx-caption zoo`: the registered encoders and which are converted locally."""

from __future__ import annotations

import argparse

HELP = (
    "List the encoder zoo (hub ids, shapes, preprocessing) and which models are converted locally."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.loading import list_models
    from mlx_caption.models.decoder import DECODER_PRESETS

    rows = list_models()
    if args.json:
        print_json(rows)
        return 0
    print(
        f"{'name':28s} {'family':7s} {'hub id':40s} {'img':>4s} {'patch':>5s} {'tokens':>6s} "
        f"{'params':>7s}  {'preprocessing':45s} local"
    )
    for r in rows:
        local = r["path"] if r["converted"] else "-"
        print(
            f"{r['name']:28s} {r['family']:7s} {r['hub_id']:40s} {r['image_size']:>4d} "
            f"{r['patch_size']:>5d} {r['tokens']:>6d} {r['parameters'] / 1e6:>6.1f}M  "
            f"{r['preprocess']:45s} {local}"
        )
    sizes = ", ".join(f"{k} ({c.hidden_size}x{c.num_layers})" for k, c in DECODER_PRESETS.items())
    print(f"decoder presets: {sizes}")
    return 0
