"""Shared test set-up. Importing mlx_caption first loads the optimized BLAS before mlx.core."""

import os

from prerequisites import pytest_configure, pytest_runtest_setup  # noqa: F401  (the hooks)

import mlx_caption  # noqa: F401

# Tests never reach a hub: everything they load they make themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
