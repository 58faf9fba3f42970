"""The ``mlx-caption`` command line: one subcommand per module in ``mlx_caption/commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and keeps heavy imports inside ``run`` so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import mlx_caption  # noqa: F401  (loads the optimized BLAS before anything imports mlx.core)
from mlx_caption.errors import UserError

# Order is the order shown in --help.
COMMANDS = [
    "doctor",
    "zoo",
    "convert",
    "encode",
    "synth",
    "data",
    "train",
    "caption",
    "eval",
    "score",
    "demo",
    "bench",
    "serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlx-caption", description="Pure-MLX image captioning.")
    parser.add_argument(
        "--version", action="version", version=f"mlx-caption {mlx_caption.__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mlx_caption.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"mlx_caption.commands.{name}":
                raise
            continue
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
