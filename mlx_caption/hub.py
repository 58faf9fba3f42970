"""The Hugging Face hub: telling a repo id from a path, and downloading what a loader needs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from mlx_caption.errors import UserError

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` with no path syntax (``..``, a leading ``/`` or ``~``, more slashes).

    Callers check for a local path first: a folder that exists always wins.
    """
    return bool(_REPO_ID.fullmatch(name)) and ".." not in name


def download(repo_id: str, allow_patterns: Sequence[str]) -> Path:
    """A local snapshot of the files of ``repo_id`` that match ``allow_patterns``.

    Anything that goes wrong (offline, no such repo, no access) is the user's to fix, so it
    is a :class:`UserError` naming the repo.
    """
    from huggingface_hub import snapshot_download  # imports requests: only when downloading

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(allow_patterns)))
    except Exception as err:
        raise UserError(
            f"cannot download {repo_id!r}: it is not a local folder and could not be fetched "
            f"from the Hugging Face hub: {err}"
        ) from None
