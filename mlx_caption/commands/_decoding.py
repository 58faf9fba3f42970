"""Decoding flags shared by the commands that generate captions (caption, eval, demo)."""

from __future__ import annotations

import argparse
from typing import Any

from mlx_caption.errors import UserError


def add_decoding_arguments(parser: argparse.ArgumentParser, default_beam: int = 1) -> None:
    """``--beam``, ``--max-length``, sampling and repetition controls."""
    group = parser.add_argument_group("decoding")
    group.add_argument(
        "--beam",
        type=int,
        default=None,
        metavar="N",
        help=f"beam size (1 = greedy; default {default_beam}, or sampling with --sample)",
    )
    parser.set_defaults(default_beam=default_beam)
    group.add_argument(
        "--max-length", type=int, default=None, metavar="L", help="most tokens per caption"
    )
    group.add_argument("--min-length", type=int, default=0, metavar="L")
    group.add_argument("--length-penalty", type=float, default=1.0)
    group.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N")
    group.add_argument("--repetition-penalty", type=float, default=1.0)
    group.add_argument("--sample", action="store_true", help="sample instead of searching")
    group.add_argument("--temperature", type=float, default=1.0)
    group.add_argument("--top-k", type=int, default=0)
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--seed", type=int, default=None, help="sampling seed")
    group.add_argument(
        "--prompt",
        default=None,
        metavar="TEXT",
        help='text every caption starts with ("a picture of"); part of the caption',
    )


def decoding_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~mlx_caption.generate.DecodingConfig` fields the flags ask for."""
    if args.sample and args.beam is not None and args.beam > 1:
        raise UserError("choose --sample or --beam N, not both")
    beam = args.default_beam if args.beam is None else args.beam
    if beam < 1:
        raise UserError("--beam must be at least 1")
    strategy = "sample" if args.sample else ("beam" if beam > 1 else "greedy")
    return {
        "strategy": strategy,
        "max_length": args.max_length,
        "min_length": args.min_length,
        "num_beams": beam,
        "length_penalty": args.length_penalty,
        "num_return_sequences": 1,
        "no_repeat_ngram_size": args.no_repeat_ngram,
        "repetition_penalty": args.repetition_penalty,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "prompt": args.prompt or None,
    }
