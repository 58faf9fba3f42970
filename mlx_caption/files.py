"""Small file helpers every writer and reader shares: atomic folders and files, JSON, hashes.

A folder that something else may read (a converted model, a checkpoint, the demo's copy) is
written into a hidden temporary sibling and renamed into place, so a reader sees the old
folder or the complete new one, never half of either; :func:`atomic_dir` is that pattern.
Temporary siblings are named ``.tmp-*``: readers skip them, and a crash's leftovers are
recognisable (:func:`mlx_caption.train.checkpoint.prune` removes them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlx_caption.errors import UserError

TMP_PREFIX = ".tmp-"


def read_json(path: str | os.PathLike, *, want: type | None = dict) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a :class:`UserError`.

    ``want`` (default ``dict``) is the type the top-level value must have; ``None`` accepts
    any value.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if want is not None and not isinstance(data, want):
        raise UserError(f"{path} is not a JSON {'object' if want is dict else want.__name__}")
    return data


def write_json(
    path: str | os.PathLike, data: Any, default: Callable[[Any], Any] | None = None
) -> None:
    """Write ``data`` as indented JSON (a trailing newline, as editors leave it); ``default``
    turns what JSON does not know into what it does (as in ``json.dumps``)."""
    Path(path).write_text(json.dumps(data, indent=2, default=default) + "\n", encoding="utf-8")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_files(folder: Path) -> None:
    # File data must be on disk before the rename makes the folder visible (crash safety).
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def replace_dir(new: Path, final: Path) -> None:
    """Rename the folder ``new`` to ``final``; an old ``final`` is moved aside, then removed."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{final.name}-", dir=final.parent))
        old = old / "x"
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; on success it replaces ``final``.

    On any exception (Ctrl-C included) the temporary folder is removed and ``final`` is left
    as it was. ``fsync`` flushes the files before the rename (training checkpoints).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent))
    try:
        yield tmp
        if fsync:
            _fsync_files(tmp)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (same suffix); on success it replaces ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{final.stem}-", suffix=final.suffix, dir=final.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
