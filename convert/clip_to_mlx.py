"""Convert a CLIP checkpoint to an MLX encoder folder (same as `mlx-caption convert`).

    python convert/clip_to_mlx.py --model openai/clip-vit-base-patch32 \
        --out weights/clip-vit-base-patch32 [--dtype float32|float16|bfloat16] [--verify]
"""

import sys

import mlx_caption  # noqa: F401  (loads the optimized BLAS before mlx.core)
from mlx_caption.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
