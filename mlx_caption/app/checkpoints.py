"""The page's model picker: the checkpoints it offers, and which ones a visitor may load.

Everything that decides what the picker lists and what it may load lives here (the page only
lays it out), so listing zoo captioners is a change to :func:`checkpoint_options` and
:meth:`CheckpointAccess.resolve`.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from mlx_caption import zoo
from mlx_caption.errors import UserError
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


def checkpoint_options(served: str | None, root: str | Path) -> list[str]:
    """What the picker offers: the served checkpoint first, then those found under ``root``,
    then the zoo's pretrained captioners."""
    options = [served] if served else []
    options += [p for p in map(str, find_checkpoints(root)) if p not in options]
    return options + [e.name for e in zoo.entries("captioner") if e.name not in options]


def option_label(option: str, root: str | Path) -> str:
    """A picker entry as a visitor sees it: relative to the root, else the folder's name (a
    server's paths are not the visitor's business)."""
    path = Path(option)
    try:
        return str(path.relative_to(Path(root).expanduser().resolve())) or "."
    except ValueError:
        return path.name if path.is_absolute() else option


def is_loopback(host: str | None) -> bool:
    """True for an address only this machine reaches (``localhost``, 127.0.0.0/8, ``::1``);
    an unset address means every interface."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass(frozen=True)
class CheckpointAccess:
    """Which checkpoints the page loads for a visitor.

    ``open_to_any`` (a loopback address, or the operator's ``--allow-any-checkpoint``): any
    folder or hub id. Otherwise only the served checkpoint, folders under ``root`` (a typed
    relative path is read from there) and zoo captioner names: a visitor on the network must
    not make the server read its disk or download from the hub.
    """

    root: Path
    served: str | None = None
    open_to_any: bool = True

    REFUSED = (
        "{text!r} is not a checkpoint this page may load: on a network address it loads only "
        "the served checkpoint, folders under its checkpoints root and zoo names."
    )

    def resolve(self, text: str) -> str:
        """The checkpoint to load for a picked or typed ``text``; a :class:`UserError` when
        refused, with the same words whether or not the path exists."""
        text = text.strip()
        if self.open_to_any or text == self.served:
            return text
        entry = zoo.lookup(text)
        if entry is not None and entry.kind == "captioner":
            return text
        root = self.root.resolve()
        try:
            path = (root / text).resolve()  # an absolute text replaces the root
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
            raise UserError(self.REFUSED.format(text=text)) from None
        if not path.is_relative_to(root):
            raise UserError(self.REFUSED.format(text=text))
        return str(path)

    @property
    def note(self) -> str | None:
        """What the page tells visitors when access is limited (None when it is not)."""
        if self.open_to_any:
            return None
        return (
            "Served on a network address: this page loads only the served checkpoint, "
            "folders under its checkpoints root and zoo names (the operator can allow any "
            "folder with `mlx-caption serve --allow-any-checkpoint`)."
        )
