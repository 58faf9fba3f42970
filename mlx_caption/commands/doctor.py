"""`mlx-caption doctor`: what this machine gives MLX, and what to install when something is missing."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

HELP = "Report platform, MLX device, BLAS in use, matmul speed and optional dependencies."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--matmul-size", type=int, default=1024, help="size of the timed float32 matmul"
    )


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _java() -> dict[str, Any]:
    java = shutil.which("java")
    if not java:
        return {"available": False, "path": None, "version": None}
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20)
        version = (out.stderr or out.stdout).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        version = None
    return {"available": True, "path": java, "version": version}


def collect(matmul_size: int = 1024) -> dict[str, Any]:
    """Everything `doctor` reports, as a dict."""
    from mlx_caption import backend

    blas = backend.status()
    import mlx.core as mx

    report: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "mlx": mx.__version__,
        "device": str(mx.default_device()),
        "blas": {
            "loaded_by_mlx_caption": blas.loaded,
            "reason": blas.reason,
            "libraries_mapped": backend.blas_in_use(),
            "torch_keeps_own_blas": blas.torch_blas_kept,
            "override": os.environ.get(backend.ENV_VAR),
        },
        "malloc": backend.malloc_status(),
        "matmul_float32_gflops": round(backend.matmul_gflops(matmul_size), 1),
        "matmul_size": matmul_size,
        "mlx_data": _version("mlx-data"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "pycocoevalcap": _version("pycocoevalcap"),
        "streamlit": _version("streamlit"),
        "java": _java(),
    }
    report["advice"] = advice(report)
    return report


def advice(report: dict[str, Any]) -> list[str]:
    """What to install or change, from a report."""
    tips = []
    on_linux_cpu = sys.platform == "linux" and "cpu" in report["device"]
    if on_linux_cpu and not report["blas"]["loaded_by_mlx_caption"]:
        tips.append(
            "No optimized BLAS loaded: matmuls run on the reference BLAS (~30x slower). "
            "Install OpenBLAS (Debian/Ubuntu: apt install libopenblas0-pthread) or set "
            "MLX_CAPTION_BLAS=/path/to/libopenblas.so."
        )
    if not report["mlx_data"]:
        tips.append("mlx-data is missing: pip install mlx-data (needed for training streams).")
    if not report["torch"] or not report["transformers"]:
        tips.append(
            "torch/transformers missing: only needed for the PT bridge, parity tests and "
            "benchmarks (pip install torch, then pip install 'mlx-caption[torch]')."
        )
    if not report["java"]["available"]:
        tips.append(
            "Java not found: metrics use the pure-Python PTB tokenizer and METEOR is unavailable "
            "(apt install default-jre-headless)."
        )
    if not report["streamlit"]:
        tips.append("Streamlit missing: pip install 'mlx-caption[app]' for `mlx-caption serve`.")
    return tips


def run(args: argparse.Namespace) -> int:
    report = collect(args.matmul_size)
    if args.json:
        from mlx_caption.commands import print_json

        print_json(report)
        return 0
    blas = report["blas"]
    rows = [
        ("platform", report["platform"]),
        ("python", report["python"]),
        ("cpu cores", report["cpu_count"]),
        ("mlx", f"{report['mlx']} on {report['device']}"),
        ("blas", blas["loaded_by_mlx_caption"] or blas["reason"]),
        ("malloc", report["malloc"]),
        ("matmul", f"{report['matmul_float32_gflops']} GFLOP/s (float32 {args.matmul_size}^3)"),
        ("mlx-data", report["mlx_data"] or "missing"),
        ("torch", report["torch"] or "missing"),
        ("transformers", report["transformers"] or "missing"),
        ("pycocoevalcap", report["pycocoevalcap"] or "missing"),
        ("streamlit", report["streamlit"] or "missing"),
        ("java", report["java"]["version"] or "missing"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for tip in report["advice"]:
        print(f"- {tip}")
    return 0
