"""Data loading: the mlx-data training stream against a Pillow loop.

Runs the data engineer's benchmark (``benchmarks/bench_data.py``, a synthetic JPEG set
written to a temporary folder) in this process (see :mod:`.scripts`).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from mlx_caption.bench import scripts


def bench_data(
    images: int = 256,
    size: int = 320,
    crop: int = 224,
    batch: int = 32,
    threads: int = 2,
    repeats: int = 2,
) -> dict[str, Any]:
    """Images/s of the stream and of the Pillow loop (exact bicubic and bilinear)."""
    module = scripts.load_script("bench_data")
    if module is None:
        return {
            "skipped": f"{scripts.script_path('bench_data')} not found (run from a source checkout)"
        }
    argv = [
        f"--{k}={v}"
        for k, v in dict(
            images=images, size=size, crop=crop, batch=batch, threads=threads, repeats=repeats
        ).items()
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its own JSON line
        result = dict(module.main(argv))
    result.pop("benchmark", None)
    return result
