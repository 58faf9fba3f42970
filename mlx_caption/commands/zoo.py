"""`mlx-caption zoo`: the registered encoders and captioners, and which are converted locally."""

from __future__ import annotations

import argparse

HELP = "List the model zoo (encoders and captioners: sizes, published scores, local copies)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def _local(row: dict) -> str:
    return row["path"] if row["converted"] else "-"


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.loading import list_models
    from mlx_caption.models.decoder import DECODER_PRESETS

    rows = list_models()
    if args.json:
        print_json(rows)
        return 0
    print("encoders")
    print(
        f"{'name':28s} {'family':7s} {'hub id':40s} {'img':>4s} {'patch':>5s} {'tokens':>6s} "
        f"{'params':>7s} {'MB':>6s}  {'preprocessing':45s} local"
    )
    for r in (r for r in rows if r["kind"] == "encoder"):
        print(
            f"{r['name']:28s} {r['family']:7s} {r['hub_id']:40s} {r['image_size']:>4d} "
            f"{r['patch_size']:>5d} {r['tokens']:>6d} {r['parameters'] / 1e6:>6.1f}M "
            f"{r['size_mb']:>6.0f}  {r['preprocess']:45s} {_local(r)}"
        )
    sizes = ", ".join(f"{k} ({c.hidden_size}x{c.num_layers})" for k, c in DECODER_PRESETS.items())
    print(f"decoder presets: {sizes}")
    captioners = [r for r in rows if r["kind"] == "captioner"]
    print("\ncaptioners (COCO Karpathy test, as published)")
    print(
        f"{'name':18s} {'hub id':40s} {'img':>4s} {'params':>7s} {'MB':>6s} {'B@4':>5s} "
        f"{'CIDEr':>6s}  local"
    )
    for r in captioners:
        pub = {k: v for k, v in (r.get("published") or {}).items() if v is not None}
        print(
            f"{r['name']:18s} {r['hub_id']:40s} {r['image_size']:>4d} "
            f"{r['parameters'] / 1e6:>6.1f}M {r['size_mb']:>6.0f} {pub.get('bleu4', '-'):>5} "
            f"{pub.get('cider', '-'):>6}  {_local(r)}"
        )
    for r in captioners:
        if r.get("published"):
            print(f"  {r['name']}: {r['published']['source']}")
    return 0
