"""`mlx-caption encode`: images -> encoder token grids in a safetensors file."""

from __future__ import annotations

import argparse

HELP = "Encode images with a zoo encoder; write last_hidden_state and pooler_output."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", required=True, help="converted folder, zoo name, HF folder or hub id"
    )
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--image-size",
        type=int,
        help="feed the encoder images of this side (default: its checkpoint's); its position "
        "embeddings are resized to the new patch grid",
    )
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
    model = load_encoder(args.weights, image_size=args.image_size)
    cfg = model.config.preprocess
    outputs: dict[str, list] = {"last_hidden_state": [], "pooler_output": []}
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        batch = np.stack([preprocess_image(load_image(p), cfg) for p in paths])
        result = backend.split_eval(
            _outputs(model), mx.array(batch), tokens=model.config.num_tokens
        )
        for name, value in result.items():
            outputs[name].append(value.astype(mx.float32))
            mx.eval(outputs[name][-1])
    arrays = {name: mx.concatenate(values) for name, values in outputs.items() if values}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.safetensors")
    mx.save_safetensors(str(tmp), arrays, metadata={"images": json.dumps(list(args.images))})
    os.replace(tmp, out)
    summary = {
        "out": str(out),
        "images": len(args.images),
        **{name: list(value.shape) for name, value in arrays.items()},
    }
    if args.json:
        print_json(summary)
    else:
        shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in arrays.items())
        print(f"wrote {out}: {shapes}")
    return 0


def _outputs(model):
    """The encoder's outputs written to the file: the token grid, and the pooler output when
    the encoder has one (a DINOv2 or ViT without its pooler has none)."""

    def outputs(pixels):
        out = model(pixels)
        found = {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}
        return {name: value for name, value in found.items() if value is not None}

    return outputs
