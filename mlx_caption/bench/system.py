"""What the numbers were measured on: device, versions, BLAS, threads, CPU model, load."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import sys
from typing import Any

import mlx.core as mx

from mlx_caption import backend


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, sysctl on macOS)."""
    if sys.platform == "linux":
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.lower().startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except OSError:
            pass
    return platform.processor() or platform.machine()


def torch_threads() -> int | None:
    """torch's intra-op thread count, if torch is importable."""
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def system_info() -> dict[str, Any]:
    """A JSON-able description of this machine and software for a results file."""
    device = mx.default_device()
    status = backend.status()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "on_gpu": backend.on_gpu(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "versions": {
            "mlx": _version("mlx"),
            "mlx-data": _version("mlx-data"),
            "torch": _version("torch"),
            "transformers": _version("transformers"),
            "numpy": _version("numpy"),
            "mlx-caption": _version("mlx-caption"),
        },
        "blas": {
            "loaded": status.loaded,
            "reason": status.reason,
            "in_use": backend.blas_in_use(),
            "torch_own": status.torch_blas_kept,
        },
        "malloc": backend.malloc_status(),
        "threads": {
            "cpu_count": os.cpu_count(),
            "torch": torch_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
    }
