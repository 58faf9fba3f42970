"""`mlx-caption encode`: images -> encoder token grids in a safetensors file."""

from __future__ import annotations

import argparse

HELP = "Encode images with a CLIP encoder; write last_hidden_state and pooler_output."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", required=True, help="converted folder, zoo name, HF folder or hub id"
    )
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print a summary as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    import mlx.core as mx
    import numpy as np

    from mlx_caption import backend
    from mlx_caption.commands import print_json
    from mlx_caption.data.preprocess import load_image, preprocess_image
    from mlx_caption.errors import UserError
    from mlx_caption.loading import load_encoder

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out must end in .safetensors: {out}")
    # Decode every image once before the (slow) model load so a bad file fails at once;
    # they are decoded again batch by batch to keep memory flat.
    for path in args.images:
        load_image(path)
    model = load_encoder(args.weights)
    cfg = model.config.preprocess
    hidden, pooled = [], []
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        batch = np.stack([preprocess_image(load_image(p), cfg) for p in paths])
        grid, pool = backend.split_eval(_outputs(model), mx.array(batch))
        hidden.append(grid.astype(mx.float32))
        pooled.append(pool.astype(mx.float32))
        mx.eval(hidden[-1], pooled[-1])
    arrays = {
        "last_hidden_state": mx.concatenate(hidden),
        "pooler_output": mx.concatenate(pooled),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.safetensors")
    mx.save_safetensors(str(tmp), arrays, metadata={"images": json.dumps(list(args.images))})
    os.replace(tmp, out)
    summary = {
        "out": str(out),
        "images": len(args.images),
        "last_hidden_state": list(arrays["last_hidden_state"].shape),
        "pooler_output": list(arrays["pooler_output"].shape),
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"wrote {out}: last_hidden_state {summary['last_hidden_state']}, "
            f"pooler_output {summary['pooler_output']}"
        )
    return 0


def _outputs(model):
    def both(pixels):
        out = model(pixels)
        return out.last_hidden_state, out.pooler_output

    return both
