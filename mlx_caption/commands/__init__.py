"""Subcommands of ``mlx-caption``; see :mod:`mlx_caption.cli`."""

import json
import sys
from typing import Any


def print_json(obj: Any) -> None:
    """Print one JSON object on one line (the last line of a ``--json`` run)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
