"""``mlx-caption demo``: from nothing to trained, scored captions, offline."""

from __future__ import annotations

import argparse

HELP = "Offline demo: synthetic data, train a captioner end to end, evaluate, write a gallery."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--quick", action="store_true", help="about 3 minutes instead of 10")
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object last"
    )


def _report(summary: dict) -> None:
    test, agree, ratio = summary["test"], summary["reference_agreement"], summary["of_agreement"]
    objects, blind = summary["objects"], summary["baseline"]
    print(
        f"trained {summary['training']['steps']} steps in {summary['training']['minutes']} min; total {summary['minutes']} min"
    )
    print(
        f"test images: {summary['images']['test']}   (model / reference agreement / image-blind baseline)"
    )
    for key in ("Bleu_4", "ROUGE_L", "CIDEr"):
        share = f"  ({ratio[key]:.0%} of agreement)" if ratio.get(key) is not None else ""
        print(
            f"  {key:<8} {test.get(key, float('nan')):.3f} / {agree.get(key, float('nan')):.3f} / {blind['test'].get(key, float('nan')):.3f}{share}"
        )
    for key in (
        "pair_recall",
        "pair_precision",
        "count_accuracy",
        "size_accuracy",
        "position_accuracy",
        "exact",
    ):
        print(f"  {key:<18} {objects[key]:.3f}   (blind {blind['objects'][key]:.3f})")
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"gallery:    {summary['gallery']}")
    print(f"next: mlx-caption serve --checkpoint {summary['checkpoint']}")


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.demo import run_demo

    summary = run_demo(args.out, quick=args.quick, progress=not args.json)
    if args.json:
        print_json(summary)
    else:
        _report(summary)
    return 0
