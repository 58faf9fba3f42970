"""The benchmark scripts that live beside the package in a source checkout (``benchmarks/``).

``bench`` runs some of its sections from there (the data engineer's ``bench_data.py``, the
PyTorch twin of the captioner ``torch_twin.py``); an installed package without them reports
those sections as skipped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

FOLDER = Path(__file__).resolve().parents[2] / "benchmarks"


def script_path(name: str) -> Path:
    """Where ``benchmarks/<name>.py`` would be."""
    return FOLDER / f"{name}.py"


def load_script(name: str) -> ModuleType | None:
    """``benchmarks/<name>.py`` imported as a module, or None when it is not there."""
    path = script_path(name)
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"_mlx_caption_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module
