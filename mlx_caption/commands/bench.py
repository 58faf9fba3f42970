"""``mlx-caption bench``: pure MLX against the PT bridge, every figure from one run."""

from __future__ import annotations

import argparse

HELP = (
    "Benchmark pure MLX against PyTorch (encoders, captioning, decoding, training, memory, "
    "data, the demo) and against transformers' generate (pretrained captioners)."
)

# bench.suite.SECTIONS (repeated so that parsing the command line imports nothing heavy).
SECTION_NAMES = (
    "encoder", "e2e", "decode", "train", "torch", "memory", "data", "captioners", "demo"
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the goals' shapes only, fewer repeats, no demo (a few minutes on 2 cores)",
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
        "--encoders",
        nargs="+",
        metavar="NAME",
        help="the encoder section's zoo encoders (at batch 1, 8 and 32) instead of one per "
        "family and architecture",
    )
    parser.add_argument(
        "--merge-with",
        metavar="JSON",
        help="an earlier results file: the sections not run now are taken from it (the report "
        "says from which run, when, at which load), e.g. --only encoder on top of a full run",
    )
    parser.add_argument(
        "--no-bridge", action="store_true", help="measure MLX only (no torch needed)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny random models: checks the harness in seconds"
    )
    parser.add_argument(
        "--ops",
        action="store_true",
        help="instead of the suite, the op-level experiments behind the CPU fast paths "
        "(softmax, activation, patch embedding, layer norm, BLAS threads, checkpoint memory)",
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from mlx_caption.bench.report import markdown
    from mlx_caption.bench.suite import SuiteConfig, run_and_write
    from mlx_caption.commands import print_json
    from mlx_caption.errors import UserError

    if args.ops:
        return _run_ops(args)
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
        changes["timing"] = dataclasses.replace(cfg.timing, repeats=args.repeats)
        changes["train_timing"] = dataclasses.replace(cfg.train_timing, repeats=args.repeats)
        changes["captioner_timing"] = dataclasses.replace(
            cfg.captioner_timing, repeats=args.repeats
        )
        changes["large_repeats"] = args.repeats
    if args.encoders:
        from mlx_caption.bench.encoder import encoder_config
        from mlx_caption.bench.suite import ENCODER_BATCHES

        for name in args.encoders:
            try:
                encoder_config(name)
            except ValueError as e:
                raise UserError(f"--encoders: {e}") from None
        changes["encoder"] = {name: list(ENCODER_BATCHES) for name in args.encoders}
    cfg = dataclasses.replace(cfg, **changes)
    earlier = _read_results(args.merge_with) if args.merge_with else None
    results = run_and_write(cfg, args.out, bridge=not args.no_bridge, earlier=earlier)
    report = markdown(results)
    if args.json:
        print(report, file=sys.stderr)
        print_json(results)
    else:
        print(report)
        print(f"written: {', '.join(results['files'].values())}")
    return 0


def _read_results(path: str) -> dict:
    """An earlier ``bench`` JSON, or a UserError saying why it cannot be used."""
    import json
    from pathlib import Path

    from mlx_caption.errors import UserError

    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"--merge-with: cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise UserError(f"--merge-with: {path} is not JSON: {e}") from None
    if not isinstance(data, dict) or "system" not in data:
        raise UserError(f"--merge-with: {path} is not a bench results file")
    return data


def _run_ops(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from mlx_caption.bench.ops import ops_markdown, run_ops
    from mlx_caption.bench.system import system_info
    from mlx_caption.commands import print_json

    result = {"system": system_info(), **run_ops(quick=args.quick, tiny=args.tiny)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ops_tiny" if args.tiny else "ops"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    report = ops_markdown(result)
    (out / f"{stem}.md").write_text(report)
    result["files"] = {"json": str(out / f"{stem}.json"), "markdown": str(out / f"{stem}.md")}
    if args.json:
        print(report, file=sys.stderr)
        print_json(result)
    else:
        print(report)
    return 0
