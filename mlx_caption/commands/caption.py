"""``mlx-caption caption``: caption image files with a trained captioner."""

from __future__ import annotations

import argparse

HELP = "Caption images with a captioner checkpoint (greedy, beam search or sampling)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="captioner folder or Hugging Face hub repo id"
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--beam", type=int, default=1, metavar="N", help="beam size (1 = greedy)")
    parser.add_argument(
        "--max-length", type=int, default=None, metavar="L", help="most tokens per caption"
    )
    parser.add_argument("--min-length", type=int, default=0, metavar="L")
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--sample", action="store_true", help="sample instead of searching")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument(
        "--json", action="store_true", help='print [{"image","caption","score"}] last'
    )


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.errors import UserError
    from mlx_caption.generate import caption
    from mlx_caption.models.captioner import load_captioner

    if args.sample and args.beam > 1:
        raise UserError("choose --sample or --beam N, not both")
    if args.beam < 1:
        raise UserError("--beam must be at least 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    strategy = "sample" if args.sample else ("beam" if args.beam > 1 else "greedy")
    decoding = {
        "strategy": strategy,
        "max_length": args.max_length,
        "min_length": args.min_length,
        "num_beams": args.beam,
        "length_penalty": args.length_penalty,
        "num_return_sequences": 1,
        "no_repeat_ngram_size": args.no_repeat_ngram,
        "repetition_penalty": args.repetition_penalty,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    model, tokenizer = load_captioner(args.checkpoint)
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
