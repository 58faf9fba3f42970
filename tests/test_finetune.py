"""Fine-tuning a pretrained captioner (BLIP) with `train --config`: the whole model or the
decoder only, the optimizer's encoder groups, checkpoints that load back as BLIP, exact
resume, and a tiny random-initialised BLIP that learns the synthetic shapes."""

import json
import math
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from blip_fixtures import save_hf_blip
from mlx.utils import tree_flatten
from prerequisites import require_module
from train_fixtures import recipe

from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.loading import load_captioner
from mlx_caption.models.blip import BlipForConditionalGeneration
from mlx_caption.train.config import TrainConfig
from mlx_caption.train.schedule import group_sizes
from mlx_caption.train.trainer import Trainer

require_module("transformers", "the [torch] extra")  # the starting checkpoints are HF's

# Every word of the synthetic captions, as BERT splits them (punctuation on its own).
SHAPE_WORDS = (
    "a above and are at below blue bottom center circle column from green in is it its large "
    "left middle of on one purple red right row shape shapes side single small square star "
    "the there three to top triangle two which white yellow , : ."
).split()


def quiet(msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("shapes"), images=120, seed=0, size=32)


@pytest.fixture(scope="module")
def blip(tmp_path_factory) -> Path:
    """A tiny BLIP as transformers initialises it (the vision tower with a usable std):
    32-px images, 8-px patches (17 tokens)."""
    return save_hf_blip(
        tmp_path_factory.mktemp("blip") / "hf", words=SHAPE_WORDS, perturb=False,
        image_size=32, patch_size=8, hidden_size=64, text_hidden_size=64, heads=2,
        vision_init=0.02,
    )  # fmt: skip


def blip_recipe(shapes: Path, blip: Path, tmp: Path, **over) -> dict:
    d = recipe(shapes, tmp / "cache", **over)
    d["model"] = {"init_from": str(blip), "encoder_mode": d["model"]["encoder_mode"]}
    return d


def weights(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(tree)}


def train_lines(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "train"]


def test_whole_model_resumes_exactly_and_checkpoints_load_as_blip(shapes, blip, tmp_path):
    cfg = TrainConfig.from_dict(blip_recipe(shapes, blip, tmp_path))
    straight = Trainer.from_recipe(cfg, tmp_path / "A", progress=False, log=quiet)
    assert isinstance(straight.model, BlipForConditionalGeneration)
    sizes = group_sizes(straight.model)
    assert sizes["encoder_decay"] > 0 and sizes["decay"] > 0  # vision tower: encoder lr
    start = weights(straight.model.parameters())
    assert straight.fit().status == "finished"

    first = Trainer.from_recipe(cfg, tmp_path / "B", progress=False, log=quiet)
    assert first.fit(stop_at_step=9).status == "stopped"
    resumed = Trainer.from_recipe(
        cfg, tmp_path / "B", resume=tmp_path / "B", progress=False, log=quiet
    )
    assert resumed.fit().status == "finished"
    a, b = train_lines(tmp_path / "A"), train_lines(tmp_path / "B")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    wa, wb = weights(straight.model.parameters()), weights(resumed.model.parameters())
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], atol=1e-4, err_msg=k)
    moved = [k for k in wa if not np.array_equal(wa[k], start[k])]
    assert any(k.startswith("vision_model.") for k in moved)
    assert any(k.startswith("text_decoder.") for k in moved)

    model, tokenizer = load_captioner(tmp_path / "A" / "ckpt-18")
    assert isinstance(model, BlipForConditionalGeneration)
    assert tokenizer.encode_text("a red circle") == resumed.tokenizer.encode_text("a red circle")
    for k, v in weights(model.parameters()).items():
        np.testing.assert_array_equal(v, wa[k])
    record = json.loads((tmp_path / "A" / "ckpt-18" / "convert.json").read_text())
    assert record["family"] == "blip" and record["source_kind"] == "fine-tuned"


def test_decoder_only_leaves_the_vision_tower_and_caches_its_grids(shapes, blip, tmp_path):
    d = blip_recipe(shapes, blip, tmp_path, **{"model.encoder_mode": "frozen", "epochs": 1})
    trainer = Trainer.from_recipe(
        TrainConfig.from_dict(d), tmp_path / "run", progress=False, log=quiet
    )
    assert group_sizes(trainer.model)["encoder_decay"] == 0
    vision = weights(trainer.model.vision_model.parameters())
    decoder = weights(trainer.model.text_decoder.parameters())
    assert trainer.fit().status == "finished"
    after = weights(trainer.model.vision_model.parameters())
    assert all(np.array_equal(vision[k], after[k]) for k in vision)
    changed = weights(trainer.model.text_decoder.parameters())
    assert any(not np.array_equal(decoder[k], changed[k]) for k in decoder)
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 2  # train + val grids


def test_finetuned_tiny_blip_learns_the_shapes(tmp_path, blip):
    """A randomly initialised BLIP, fine-tuned end to end for 400 steps, describes the
    synthetic shapes far better than the image-blind caption."""
    from mlx_caption.data.synthetic import blind_baseline_caption, load_scenes, score_objects
    from mlx_caption.metrics import score_captions

    d = {
        "model": {"init_from": str(blip), "encoder_mode": "finetune"},
        "data": {"synthetic": {"images": 400, "size": 32, "seed": 0}, "max_length": 40},
        "optim": {"lr": 2e-3, "encoder_lr": 2e-3, "warmup_steps": 20, "min_lr_ratio": 0.1},
        "eval": {"batch_size": 40, "val_images": 40, "metrics_tokenizer": "python",
                 "every_steps": 100},
        "checkpoint": {"every_steps": 1000},
        "epochs": 40,  # 400 steps of 32 images
        "batch_size": 32,
        # BLIP's text dropout draws depend on the step's split over CPU streams; the pair-F1
        # margin below was set on one stream.
        "cpu_streams": 1,
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
        f"\nBLIP fine-tune: {seconds:.0f}s, loss {losses[0]:.2f} -> {losses[-1]:.2f}, "
        f"CIDEr {last['CIDEr']:.3f} (blind {blind_scores['CIDEr']:.3f}), "
        f"pair_f1 {last['pair_f1']:.3f} (blind {blind_objects['pair_f1']:.3f})"
    )
    assert last["CIDEr"] > 1.5 * blind_scores["CIDEr"]
    assert last["pair_f1"] > blind_objects["pair_f1"] + 0.1
    assert math.isfinite(result.best["value"])
    model, _ = load_captioner(tmp_path / "run" / "best")
    assert isinstance(model, BlipForConditionalGeneration)
    assert (
        mx.array_equal(
            model.text_decoder.cls.predictions.bias, trainer.model.text_decoder.cls.predictions.bias
        )
        or result.best["step"] != result.step
    )
