"""Finding captioner checkpoints for the page's model picker."""

from __future__ import annotations

import os
from pathlib import Path

from mlx_caption.loading import CHECKPOINT_FILES

# Folders never worth descending into while looking for checkpoints.
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".pytest_cache"}


def is_checkpoint(path: str | Path) -> bool:
    """True for a folder holding a captioner: config.json, model.safetensors, tokenizer.json."""
    p = Path(path)
    return p.is_dir() and all((p / name).is_file() for name in CHECKPOINT_FILES)


def find_checkpoints(root: str | Path, max_depth: int = 4, limit: int = 200) -> list[Path]:
    """Checkpoint folders under ``root`` (itself included), newest first.

    The walk stops at ``max_depth`` levels and ``limit`` results so pointing the page at a
    home directory cannot stall it; it does not descend into a checkpoint (a training run's
    ``step_*`` folders sit beside each other, not inside).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found: list[Path] = []
    base_depth = len(root.resolve().parts)
    for dirpath, dirnames, _ in os.walk(root.resolve()):
        here = Path(dirpath)
        if is_checkpoint(here):
            found.append(here)
            dirnames[:] = []
            if len(found) >= limit:
                break
            continue
        if len(here.parts) - base_depth >= max_depth:
            dirnames[:] = []
        else:
            dirnames[:] = sorted(
                d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")
            )
    return sorted(found, key=checkpoint_mtime, reverse=True)


def checkpoint_mtime(path: str | Path) -> float:
    """Last change of a checkpoint's weights: part of the model cache key, so retraining
    into the same folder reloads the model instead of serving the stale one."""
    p = Path(path)
    try:
        return max((p / name).stat().st_mtime for name in CHECKPOINT_FILES)
    except OSError:
        return 0.0
