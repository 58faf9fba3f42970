"""``mlx-caption bench``: pure MLX against the PT bridge, every figure from one run."""

from __future__ import annotations

import argparse

HELP = (
    "Benchmark pure MLX against the PyTorch bridge (encoder, captioning, decoding, training, data)."
)

SECTION_NAMES = ("encoder", "e2e", "decode", "train", "data")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and shapes (about 3 min on 2 cores)"
    )
    parser.add_argument(
        "--out", default="benchmarks/results", help="folder for the JSON, markdown and PNG"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON last")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also a per-stage time breakdown (and a Metal GPU trace on a Mac, with "
        "MTL_CAPTURE_ENABLED=1; open the .gputrace in Xcode)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTION_NAMES,
        metavar="SECTION",
        help=f"run only these sections ({', '.join(SECTION_NAMES)})",
    )
    parser.add_argument("--repeats", type=int, help="timed repeats per figure (median is kept)")
    parser.add_argument(
        "--no-bridge", action="store_true", help="measure MLX only (no torch needed)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny random models: checks the harness in seconds"
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from mlx_caption.bench.report import markdown
    from mlx_caption.bench.suite import SuiteConfig, run_and_write
    from mlx_caption.commands import print_json
    from mlx_caption.errors import UserError

    if args.tiny:
        cfg = SuiteConfig.tiny()
    elif args.quick:
        cfg = SuiteConfig.quick_run()
    else:
        cfg = SuiteConfig.full()
    changes = {"profile": args.profile}
    if args.only:
        changes["sections"] = tuple(args.only)
    if args.repeats is not None:
        if args.repeats < 1:
            raise UserError("--repeats must be at least 1")
        changes["repeats"] = args.repeats
        changes["train_repeats"] = args.repeats
    cfg = dataclasses.replace(cfg, **changes)
    results = run_and_write(cfg, args.out, bridge=not args.no_bridge)
    report = markdown(results)
    if args.json:
        print(report, file=sys.stderr)
        print_json(results)
    else:
        print(report)
        print(f"written: {', '.join(results['files'].values())}")
    return 0
