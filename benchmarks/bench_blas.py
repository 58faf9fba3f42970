"""Float32 matmul throughput with and without the optimized BLAS loader, as JSON.

Each measurement runs in a fresh subprocess because the BLAS has to be chosen before
``mlx.core`` is first imported. Prints one JSON object:
``{"size", "off": {...}, "default": {...}, "ratio"}`` where ratio = default / off GFLOP/s.

    python benchmarks/bench_blas.py [--size 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = """
import json, sys
import mlx_caption
from mlx_caption import backend
size, repeats = int(sys.argv[1]), int(sys.argv[2])
status = backend.status()
print(json.dumps({
    "gflops": backend.matmul_gflops(size, repeats),
    "loaded": status.loaded,
    "reason": status.reason,
    "mapped": backend.blas_in_use(),
}))
"""


def measure(blas: str | None, size: int, repeats: int) -> dict:
    """GFLOP/s of an ``size``-square float32 matmul with MLX_CAPTION_BLAS set to ``blas``."""
    env = dict(os.environ)
    env.pop("MLX_CAPTION_BLAS", None)
    if blas is not None:
        env["MLX_CAPTION_BLAS"] = blas
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(size), str(repeats)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    off = measure("off", args.size, args.repeats)
    default = measure(None, args.size, args.repeats)
    result = {
        "size": args.size,
        "off": off,
        "default": default,
        "ratio": default["gflops"] / off["gflops"] if off["gflops"] else None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
