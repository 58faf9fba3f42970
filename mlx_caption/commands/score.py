"""``mlx-caption score``: BLEU, METEOR, ROUGE-L and CIDEr-D of saved predictions.

References: a COCO captions JSON, a Karpathy split JSON (``--split`` picks the split) or a
Flickr ``*.token`` file. Predictions: a COCO results JSON (``[{"image_id", "caption"}]``),
one caption per image, covering exactly the referenced images.
"""

from __future__ import annotations

import argparse

HELP = "Score predicted captions (COCO results JSON) against references with pycocoevalcap."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refs", required=True, help="references: COCO captions JSON, Karpathy JSON or *.token"
    )
    parser.add_argument(
        "--preds", required=True, help='predictions: COCO results JSON [{"image_id", "caption"}]'
    )
    parser.add_argument(
        "--split", default=None, help="Karpathy split to score against (e.g. test, val)"
    )
    parser.add_argument(
        "--tokenizer",
        default="auto",
        choices=["auto", "java", "python"],
        help="PTB tokenizer: java (as pycocoevalcap; also enables METEOR), python (no Java "
        "needed, no METEOR), auto (java when available; default)",
    )
    parser.add_argument("--json", action="store_true", help="print the scores as JSON last")


def _print_table(scores: dict, refs_path: str, preds_path: str) -> None:
    from mlx_caption.metrics import METRIC_KEYS

    print(f"references:  {refs_path}")
    print(f"predictions: {preds_path}")
    print(f"images: {scores['images']}  tokenizer: {scores['tokenizer']}")
    for key in METRIC_KEYS:
        if key not in scores:
            continue
        value = scores[key]
        shown = (
            f"{value:.4f}"
            if value is not None
            else "n/a (METEOR runs only with the Java tokenizer)"
        )
        print(f"  {key:<8} {shown}")


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.metrics import check_same_images, load_preds, load_refs, score_captions

    refs = load_refs(args.refs, split=args.split)
    preds = load_preds(args.preds)
    # Checked before any tokenizing, so a wrong file fails fast with the ids at fault.
    check_same_images(refs, preds)
    scores = score_captions(refs, preds, tokenizer=args.tokenizer)
    if args.json:
        print_json(scores)
    else:
        _print_table(scores, args.refs, args.preds)
    return 0
