"""`mlx-caption convert`: a Hugging Face checkpoint into an MLX folder (the CLI over
:func:`mlx_caption.loading.convert`)."""

from __future__ import annotations

import argparse

HELP = (
    "Convert a Hugging Face checkpoint (hub id or folder: a CLIP encoder, a BLIP or GIT "
    "captioner) to an MLX folder (safetensors; a captioner's tokenizer too)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="hub id (openai/clip-vit-base-patch32, Salesforce/blip-image-captioning-base), "
        "Hugging Face or MLX folder",
    )
    parser.add_argument("--out", required=True, help="output folder, e.g. weights/clip-vit-b32")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="stored weight dtype (float32 for CPUs; half precision for GPUs)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare with the source checkpoint as transformers loads it, on a random input "
        "(needs torch); fail above tolerance and keep nothing",
    )
    parser.add_argument("--json", action="store_true", help="print the record as JSON")


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.loading import convert

    check = None
    if args.verify:
        from mlx_caption.bridge import verify_conversion

        check = verify_conversion
    record = convert(args.model, args.out, dtype=args.dtype, check=check)
    if args.json:
        print_json({"out": str(args.out), **record})
        return 0
    print(f"converted {args.model} -> {args.out} ({args.dtype})")
    print(f"  model.safetensors sha256 {record['output']['model.safetensors']}")
    if "verify_max_abs_diff" in record:
        print(f"  verify: max abs difference vs transformers {record['verify_max_abs_diff']:.3g}")
    return 0
