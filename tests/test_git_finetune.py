"""Fine-tuning a pretrained GIT with `train --config`: decoder only (the image encoder frozen,
its grids in the feature cache) and the whole model, checkpoints that load back as GIT, and a
tiny random-initialised GIT that learns the synthetic shapes."""

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from git_fixtures import save_hf_git
from mlx.utils import tree_flatten
from prerequisites import require_module
from test_finetune import SHAPE_WORDS, quiet, train_lines
from train_fixtures import recipe

from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.loading import load_captioner
from mlx_caption.models.git import GitForCausalLM
from mlx_caption.train.config import TrainConfig
from mlx_caption.train.schedule import group_sizes
from mlx_caption.train.trainer import Trainer

require_module("transformers", "the [torch] extra")  # the starting checkpoints are HF's


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("shapes"), images=120, seed=0, size=32)


@pytest.fixture(scope="module")
def git(tmp_path_factory) -> Path:
    """A tiny GIT as transformers initialises it: 32-px images, 8-px patches (17 tokens)."""
    return save_hf_git(
        tmp_path_factory.mktemp("git") / "hf", words=SHAPE_WORDS, perturb=False,
        image_size=32, patch_size=8, hidden_size=64, text_hidden_size=64, heads=2,
    )  # fmt: skip


def weights(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(tree)}


def git_recipe(shapes: Path, git: Path, tmp: Path, mode: str) -> dict:
    d = recipe(shapes, tmp / "cache", epochs=1)
    d["model"] = {"init_from": str(git), "encoder_mode": mode}
    return d


def test_decoder_only_leaves_the_image_encoder_and_caches_its_grids(shapes, git, tmp_path):
    trainer = Trainer.from_recipe(
        TrainConfig.from_dict(git_recipe(shapes, git, tmp_path, "frozen")),
        tmp_path / "run", progress=False, log=quiet,
    )  # fmt: skip
    model = trainer.model
    assert isinstance(model, GitForCausalLM) and group_sizes(model)["encoder_decay"] == 0
    encoder = weights(model.encoder.parameters())
    start = weights(model.parameters())
    assert trainer.fit().status == "finished"
    after = weights(model.parameters())
    assert all(
        np.array_equal(encoder[k], after[f"git.image_encoder.vision_model.{k}"]) for k in encoder
    )
    moved = {k for k in after if not np.array_equal(after[k], start[k])}
    assert any(k.startswith("git.visual_projection.") for k in moved)  # trains with the decoder
    assert any(k.startswith("git.encoder.layer.") for k in moved) and "output.weight" in moved
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 2  # train + val grids


def test_whole_model_trains_and_checkpoints_load_as_git(shapes, git, tmp_path):
    trainer = Trainer.from_recipe(
        TrainConfig.from_dict(git_recipe(shapes, git, tmp_path, "finetune")),
        tmp_path / "run", progress=False, log=quiet,
    )  # fmt: skip
    sizes = group_sizes(trainer.model)
    assert sizes["encoder_decay"] > 0 and sizes["decay"] > 0  # image encoder: encoder lr
    start = weights(trainer.model.parameters())
    assert trainer.fit().status == "finished"
    end = weights(trainer.model.parameters())
    moved = [k for k in end if not np.array_equal(end[k], start[k])]
    assert any(k.startswith("git.image_encoder.vision_model.encoder.") for k in moved)
    assert not any(k.endswith("self_attn.k_proj.bias") for k in moved)  # CLIP's rule
    model, tokenizer = load_captioner(tmp_path / "run" / "ckpt-6")
    assert isinstance(model, GitForCausalLM)
    assert tokenizer.encode_text("a red circle") == trainer.tokenizer.encode_text("a red circle")
    for k, v in weights(model.parameters()).items():
        np.testing.assert_array_equal(v, end[k])
    record = json.loads((tmp_path / "run" / "ckpt-6" / "convert.json").read_text())
    assert record["family"] == "git" and record["source_kind"] == "fine-tuned"


# Decoder only at a high rate; the whole model with the image encoder at a tenth of it (a
# randomly initialised CLIP tower at the decoder's rate loses what its features tell apart).
LEARNS = {"frozen": (5e-3, 5e-3), "finetune": (5e-3, 5e-4)}


@pytest.mark.parametrize("mode", list(LEARNS))
def test_finetuned_tiny_git_learns_the_shapes(tmp_path, git, mode):
    """A randomly initialised GIT, fine-tuned for 400 steps (decoder only, or everything),
    describes the synthetic shapes far better than the image-blind caption."""
    from mlx_caption.data.synthetic import blind_baseline_caption, load_scenes, score_objects
    from mlx_caption.metrics import score_captions

    lr, encoder_lr = LEARNS[mode]
    d = {
        "model": {"init_from": str(git), "encoder_mode": mode},
        "data": {"synthetic": {"images": 400, "size": 32, "seed": 0}, "max_length": 40},
        "optim": {"lr": lr, "encoder_lr": encoder_lr, "warmup_steps": 20, "min_lr_ratio": 0.1},
        "eval": {"batch_size": 40, "val_images": 40, "metrics_tokenizer": "python",
                 "every_steps": 100},
        "checkpoint": {"every_steps": 1000},
        "epochs": 40,  # 400 steps of 32 images
        "batch_size": 32,
        "label_smoothing": 0.0,
        "log_every": 10,
    }  # fmt: skip
    t0 = time.perf_counter()
    trainer = Trainer.from_recipe(
        TrainConfig.from_dict(d), tmp_path / "run", progress=False, log=quiet
    )
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    assert result.status == "finished"
    losses = [r["loss"] for r in train_lines(tmp_path / "run")]
    assert losses[-1] < 0.5 * losses[0]

    last = result.last_eval
    refs = {r.id: r.captions for r in trainer.data.val}
    blind = blind_baseline_caption(c for r in trainer.data.train for c in r.captions)
    blind_scores = score_captions(refs, dict.fromkeys(refs, blind), tokenizer="python")
    data_file = tmp_path / "run" / "data" / "synthetic-400-32-0" / "dataset_synthetic.json"
    scenes = {str(k): v for k, v in load_scenes(data_file).items()}
    blind_objects = score_objects(dict.fromkeys(refs, blind), scenes)
    print(
        f"\nGIT fine-tune ({mode}): {seconds:.0f}s, loss {losses[0]:.2f} -> {losses[-1]:.2f}, "
        f"CIDEr {last['CIDEr']:.3f} (blind {blind_scores['CIDEr']:.3f}), "
        f"pair_f1 {last['pair_f1']:.3f} (blind {blind_objects['pair_f1']:.3f})"
    )
    assert last["CIDEr"] > 1.5 * blind_scores["CIDEr"]
    assert last["pair_f1"] > blind_objects["pair_f1"] + 0.1
    assert math.isfinite(result.best["value"])
    model, _ = load_captioner(tmp_path / "run" / "best")
    assert isinstance(model, GitForCausalLM)
