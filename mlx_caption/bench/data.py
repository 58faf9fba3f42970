"""Data loading: the mlx-data training stream against a Pillow loop.

Runs the data engineer's benchmark (``benchmarks/bench_data.py``, a synthetic JPEG set
written to a temporary folder) in this process. It lives next to the package in a source
checkout; an installed package without it reports the section as skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py"


def _load_script(path: Path = SCRIPT) -> Any:
    spec = importlib.util.spec_from_file_location("_mlx_caption_bench_data", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def bench_data(
    images: int = 256,
    size: int = 320,
    crop: int = 224,
    batch: int = 32,
    threads: int = 2,
    repeats: int = 2,
) -> dict[str, Any]:
    """Images/s of the stream and of the Pillow loop (exact bicubic and bilinear)."""
    if not SCRIPT.is_file():
        return {"skipped": f"{SCRIPT} not found (run from a source checkout)"}
    module = _load_script()
    argv = [
        f"--images={images}",
        f"--size={size}",
        f"--crop={crop}",
        f"--batch={batch}",
        f"--threads={threads}",
        f"--repeats={repeats}",
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its own JSON line
        result = dict(module.main(argv))
    result.pop("benchmark", None)
    return result
