"""``mlx-caption caption``: caption image files with a pretrained or trained captioner."""

from __future__ import annotations

import argparse

from mlx_caption.commands._decoding import add_decoding_arguments, decoding_from_args

HELP = "Caption images with a pretrained or trained captioner (greedy, beam search, sampling)."


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model`` (a zoo name, a folder or a hub id), or ``--checkpoint``, its older name."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model",
        help="zoo captioner (blip-base, git-base-coco, ...), converted or training-checkpoint folder, "
        "or Hugging Face hub id",
    )
    which.add_argument("--checkpoint", dest="model", help="the same as --model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument(
        "--json", action="store_true", help='print [{"image","caption","score"}] last'
    )
    add_decoding_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.errors import UserError
    from mlx_caption.generate import caption
    from mlx_caption.loading import load_captioner

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    decoding = decoding_from_args(args)
    model, tokenizer = load_captioner(args.model)
    captions = caption(
        args.images, model=model, tokenizer=tokenizer, batch_size=args.batch_size, **decoding
    )
    rows = [
        {"image": path, "caption": c.text, "score": round(c.score, 6)}
        for path, c in zip(args.images, captions, strict=True)
    ]
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            print(f"{row['image']}\t{row['caption']}")
    return 0
