"""Training logs: ``metrics.jsonl`` (one JSON object per line), loss/metric curves as a PNG,
and Weights & Biases when asked for and installed.

Each line of ``metrics.jsonl`` has ``kind`` ("train" or "eval") and ``step``. On resume the
file is cut back to the checkpoint's step (lines logged after it are steps that will be run
again) and then appended to, so the curve continues without gaps or duplicates.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from mlx_caption.errors import UserError

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


class MetricsLog:
    """Append-only JSON-lines log with a resume-time cut."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_plain) + "\n")
            f.flush()

    def read(self) -> list[dict[str, Any]]:
        """Every complete record (a line cut short by a crash is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def truncate_after(self, step: int) -> int:
        """Drop records with ``step`` greater than ``step`` (atomic rewrite); return how many."""
        records = self.read()
        keep = [r for r in records if int(r.get("step", 0)) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in keep:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)
        return len(records) - len(keep)


def plot_curves(records: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Loss (train and validation) and caption metrics against step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train" and _finite(r.get("loss"))]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    metric_keys = [
        k
        for k in ("CIDEr", "Bleu_4", "METEOR", "ROUGE_L", "pair_f1", "exact")
        if any(_finite(r.get(k)) for r in evals)
    ]
    fig, axes = plt.subplots(1, 2 if metric_keys else 1, figsize=(11 if metric_keys else 6, 4))
    ax = axes[0] if metric_keys else axes
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train loss")
    for key, label in (("val_loss", "val loss"), ("val_nll", "val NLL")):
        pts = [(r["step"], r[key]) for r in evals if _finite(r.get(key))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=1.5, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if metric_keys:
        for key in metric_keys:
            pts = [(r["step"], r[key]) for r in evals if _finite(r.get(key))]
            axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
        axes[1].set_xlabel("step")
        axes[1].set_title("validation")
        axes[1].grid(alpha=0.3)
        axes[1].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


class WandbLogger:
    """Thin wrapper: ``log(record)`` forwards numbers to a W&B run."""

    def __init__(self, project: str, config: dict[str, Any], run_dir: Path, resume_id: str | None):
        try:
            import wandb
        except ImportError as err:
            raise UserError(
                "--wandb needs the wandb package: pip install wandb (or run without --wandb)"
            ) from err
        self._wandb = wandb
        self.run = wandb.init(
            project=project,
            config=config,
            dir=str(run_dir),
            id=resume_id,
            resume="allow" if resume_id else None,
        )

    @property
    def id(self) -> str:
        return self.run.id

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        prefix = "val/" if record.get("kind") == "eval" else "train/"
        data = {prefix + k: v for k, v in record.items() if isinstance(v, (int, float))}
        self._wandb.log(data, step=step)

    def finish(self) -> None:
        self.run.finish()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
