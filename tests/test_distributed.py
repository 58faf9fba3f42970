"""Data parallelism: two processes under ``mlx.launch`` equal one process on the whole batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlx.utils import tree_flatten
from train_fixtures import recipe

import mlx_caption  # noqa: F401  (loads the BLAS before mlx.core)
from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.errors import UserError
from mlx_caption.loading import load_captioner
from mlx_caption.train.distributed import World, shard_rows

REPO = Path(__file__).resolve().parents[1]
LAUNCH = shutil.which("mlx.launch") or str(Path(sys.executable).with_name("mlx.launch"))


def test_shard_rows():
    assert shard_rows(8, World(rank=0, size=2)) == slice(0, 4)
    assert shard_rows(8, World(rank=1, size=2)) == slice(4, 8)
    assert shard_rows(8, World()) == slice(0, 8)
    with pytest.raises(UserError, match="divisible"):
        shard_rows(9, World(rank=0, size=2))


def _recipe(tmp_path: Path, mode: str, blip: bool = False) -> Path:
    data = write_synthetic_dataset(tmp_path / "shapes", images=60, seed=1, size=32)
    d = recipe(
        data,
        tmp_path / "cache",
        **{
            "model.encoder_mode": mode,
            # No dropout: the two layouts draw different masks for the same rows.
            "model.decoder.dropout": 0.0,
            "data.max_length": 24,
            "data.captions_per_image": 2,
            # SGD: its update is linear in the gradient, so the ranks' different summation
            # order stays at rounding level (Adam would blow a near-zero gradient's noise up
            # to a step of about the lr).
            "optim": {"optimizer": "sgd", "lr": 0.5, "encoder_lr": 0.5, "warmup_steps": 0},
            "eval": {"generate": False, "val_images": 4},
            "checkpoint": {"every_steps": 100},
            "epochs": 1,
            "max_steps": 2,
            "batch_size": 16,  # 8 images x 2 captions; 4 images per rank
            "log_every": 1,
        },
    )
    if blip:  # fine-tuning a pretrained captioner: a tiny BLIP, as transformers saves one
        from captioner_fixtures import save_hf_captioner
        from prerequisites import require_module

        require_module("transformers", "the [torch] extra")
        folder = save_hf_captioner(
            tmp_path / "blip", "blip", perturb=False, image_size=32, patch_size=8, vision_init=0.02
        )
        d["model"] = {"init_from": str(folder), "encoder_mode": mode}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def _weights(folder: Path) -> dict[str, np.ndarray]:
    model, _ = load_captioner(folder)
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def _losses(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r["kind"] == "train"]


@pytest.mark.parametrize(
    ("mode", "blip"), [("finetune", False), ("frozen", False), ("finetune", True)]
)
def test_two_ranks_equal_one_process(tmp_path, mode, blip):
    recipe = _recipe(tmp_path, mode, blip)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    train = ["-m", "mlx_caption.cli", "train", "--config", str(recipe), "--no-progress"]
    one = subprocess.run(
        [sys.executable, *train, "--out", str(tmp_path / "one")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [LAUNCH, "-n", "2", "--backend", "ring", "--", sys.executable, *train]
        + ["--out", str(tmp_path / "two")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stdout + two.stderr
    assert "on 2 processes" in two.stdout + two.stderr

    # The same two global steps: same losses, same weights.
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-5)
    a, b = _weights(tmp_path / "one" / "ckpt-2"), _weights(tmp_path / "two" / "ckpt-2")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=2e-5, err_msg=k)
    # Only rank 0 wrote: one log line per step.
    assert len(_losses(tmp_path / "two")) == 2
