"""Training checkpoints: atomic save, load, resume, keep-last-K and best.

A checkpoint is a folder (``<run>/ckpt-<step>``)::

    model.safetensors  config.json  tokenizer.json    written by models.captioner.save_captioner
    optimizer.safetensors                             tree_flatten(optimizer.state)
    state.json                                        step, epoch, batch offset, RNG, metrics, config
    training_weights.safetensors                      with optim.ema (train/ema.py): the weights
                                                      training continues from; model.safetensors
                                                      then holds their moving average

It is written into a hidden temporary folder next to its final place and renamed, so a crash
(or ``kill -9``) never leaves half a checkpoint where a resume would find it. A model with a
non-finite weight is refused: a diverged run must not overwrite the last good state.
The ``best`` folder is a hard-linked copy of the checkpoint with the best validation score
(hard links are safe because checkpoint files are never modified in place).
Nothing is pickled: arrays are safetensors, everything else is JSON.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlx_caption.errors import UserError
from mlx_caption.files import TMP_PREFIX, atomic_dir, read_json, write_json
from mlx_caption.loading import write_model_files

STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
BEST = "best"
BEST_FILE = "best.json"
_CKPT_RE = re.compile(r"^ckpt-(\d+)$")

ModelWriter = Callable[[nn.Module, Any, Path], None]


class NonFiniteWeights(RuntimeError):
    """Raised instead of writing a checkpoint whose model holds NaN or inf."""


@dataclass
class TrainState:
    """Where a run stands; saved as state.json and enough to resume exactly."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # epoch in progress
    batch_offset: int = 0  # batches of ``epoch`` already consumed
    total_steps: int = 0  # the schedule's length (fixed at the start of the run)
    rng: list[int] = field(default_factory=list)  # mx.random.state[0] as ints
    seed: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation
    best: dict[str, Any] | None = None  # {"metric", "value", "step"}
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_dict()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "mlx-caption-train-state/1",
            "step": self.step,
            "epoch": self.epoch,
            "batch_offset": self.batch_offset,
            "schedule": {"step": self.step, "total_steps": self.total_steps},
            "rng": {"mlx": self.rng, "seed": self.seed},
            "history": self.history,
            "best": self.best,
            "config": self.config,
            "extra": self.extra,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(
            step=int(d["step"]),
            epoch=int(d["epoch"]),
            batch_offset=int(d["batch_offset"]),
            total_steps=int(d.get("schedule", {}).get("total_steps", 0)),
            rng=list(d.get("rng", {}).get("mlx", [])),
            seed=int(d.get("rng", {}).get("seed", 0)),
            history=list(d.get("history", [])),
            best=d.get("best"),
            config=dict(d.get("config", {})),
            extra=dict(d.get("extra", {})),
        )


# ----------------------------------------------------------------------------- RNG


def rng_state() -> list[int]:
    """MLX's global random key as plain ints (JSON-friendly)."""
    return [int(v) for v in np.array(mx.random.state[0]).ravel()]


def set_rng_state(values: list[int]) -> None:
    """Restore MLX's global key exactly.

    ``mx.random.state`` cannot be assigned to from Python, but ``mx.random.seed(s)`` sets the
    key to the two 32-bit halves of ``s``, so seeding with ``(hi << 32) | lo`` restores it
    (a compiled step that captured the state object sees the new key).
    """
    if values:
        hi, lo = (int(v) for v in values)
        mx.random.seed((hi << 32) | lo)


# ----------------------------------------------------------------------------- save


def all_finite(tree: Any) -> bool:
    """True when every floating array in ``tree`` is free of NaN and inf."""
    checks = [
        mx.all(mx.isfinite(v))
        for _, v in tree_flatten(tree)
        if isinstance(v, mx.array) and mx.issubdtype(v.dtype, mx.floating)
    ]
    if not checks:
        return True
    return bool(mx.all(mx.stack(checks)).item())


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    tokenizer: Any,
    optimizer: Any,
    state: TrainState,
    *,
    keep_last: int | None = None,
    write_model: ModelWriter | None = None,
) -> Path:
    """Write ``<run_dir>/ckpt-<step>`` atomically and prune to the last ``keep_last``.

    Raises :class:`NonFiniteWeights` (writing nothing) if a weight is NaN or inf.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not all_finite(model.parameters()):
        raise NonFiniteWeights(f"refusing to save step {state.step}: the model has NaN/inf weights")
    final = run_dir / f"ckpt-{state.step}"
    with atomic_dir(final, fsync=True) as tmp:
        (write_model or write_model_files)(model, tokenizer, tmp)
        opt = dict(tree_flatten(optimizer.state))
        mx.save_safetensors(str(tmp / OPTIMIZER_FILE), opt, metadata={"format": "mlx"})
        write_json(tmp / STATE_FILE, state.to_dict(), default=_json_default)
    if keep_last is not None:
        prune(run_dir, keep_last)
    return final


def mark_best(run_dir: str | Path, ckpt: str | Path, metric: str, value: float) -> Path:
    """Make ``<run_dir>/best`` a copy (hard links) of ``ckpt`` and record why in best.json."""
    run_dir, ckpt = Path(run_dir), Path(ckpt)
    with atomic_dir(run_dir / BEST) as tmp:
        for src in ckpt.iterdir():
            _link_or_copy(src, tmp / src.name)
        write_json(tmp / BEST_FILE, {"metric": metric, "value": value, "source": ckpt.name})
    return run_dir / BEST


def prune(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` ckpt-* folders (``best`` is separate); return them."""
    ckpts = list_checkpoints(run_dir)
    doomed = ckpts[: max(0, len(ckpts) - max(1, keep_last))]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    # Leftovers of a crash in the middle of a save are never resumed from: clean them up
    # (only rank 0 writes, and never while pruning, so none of them is being written now).
    for tmp in Path(run_dir).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    return doomed


# ----------------------------------------------------------------------------- load


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete ckpt-<step> folders of a run, oldest first."""
    run_dir = Path(run_dir)
    found = []
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and (p / STATE_FILE).is_file():
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint, a run folder (its latest) or ``<run>/latest``."""
    path = Path(path)
    if path.name == "latest":
        path = path.parent
    if (path / STATE_FILE).is_file():
        return path
    ckpts = list_checkpoints(path)
    if ckpts:
        return ckpts[-1]
    raise UserError(f"no checkpoint found in {path} (expected ckpt-<step>/ with {STATE_FILE})")


def read_state(ckpt: str | Path) -> TrainState:
    """The state.json of a checkpoint folder."""
    path = Path(ckpt) / STATE_FILE
    try:
        return TrainState.from_dict(read_json(path))
    except (ValueError, KeyError) as err:
        raise UserError(f"cannot read training state {path}: {err}") from err


def load_optimizer_state(ckpt: str | Path) -> dict[str, Any]:
    """The optimizer state tree saved in a checkpoint (assign it to ``optimizer.state``)."""
    path = Path(ckpt) / OPTIMIZER_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: this folder is a model, not a training checkpoint")
    return tree_unflatten(list(mx.load(str(path)).items()))


def restore_optimizer(optimizer: Any, ckpt: str | Path, parameters: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state into a freshly built ``optimizer``.

    The saved state must have exactly the entries this optimizer would create for
    ``parameters`` (same groups, same trainable weights): a resume with a different trainable
    set would silently drop or zero Adam moments, so it is refused.
    """
    state = load_optimizer_state(ckpt)
    optimizer.init(parameters)
    expected = {k for k, _ in tree_flatten(optimizer.state)}
    saved = {k for k, _ in tree_flatten(state)}
    if expected != saved:
        missing, extra = sorted(expected - saved)[:3], sorted(saved - expected)[:3]
        raise UserError(
            f"optimizer state in {ckpt} does not match the trainable parameters "
            f"(missing e.g. {missing}, unexpected e.g. {extra}); resume with the same recipe"
        )
    optimizer.state = state
    optimizer.init(parameters)


# ----------------------------------------------------------------------------- helpers


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, mx.array):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _link_or_copy(src: Path, dst: Path) -> None:
    # Hard links are safe: checkpoint files are never modified in place.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
