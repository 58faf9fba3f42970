"""Fine-tuning a pretrained ViT-GPT2 with `train --config`: the whole model or the decoder
only (``enc_to_dec_proj`` trains with the decoder, from cached encoder grids), checkpoints
that load back as ViT-GPT2, and a tiny random-initialised ViT-GPT2 that learns the synthetic
shapes."""

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from mlx.utils import tree_flatten
from prerequisites import require_module
from train_fixtures import recipe
from vit_gpt2_fixtures import save_hf_vit_gpt2

from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.loading import load_captioner
from mlx_caption.models.vit_gpt2 import VisionEncoderDecoderModel
from mlx_caption.train.config import TrainConfig
from mlx_caption.train.schedule import group_sizes
from mlx_caption.train.trainer import Trainer

require_module("transformers", "the [torch] extra")  # the starting checkpoints are HF's

# Every word of the synthetic captions (the byte-level BPE is trained on them).
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
def vit_gpt2(tmp_path_factory) -> Path:
    """A tiny ViT-GPT2 as transformers initialises it: 32-px images, 8-px patches (17 tokens),
    a 64-wide ViT and a 48-wide GPT-2 (so enc_to_dec_proj exists)."""
    return save_hf_vit_gpt2(
        tmp_path_factory.mktemp("vit_gpt2") / "hf", words=SHAPE_WORDS, perturb=False,
        image_size=32, patch_size=8, hidden_size=64, text_hidden_size=48, heads=2,
    )  # fmt: skip


@pytest.fixture(scope="module")
def vit_gpt2_same_widths(tmp_path_factory) -> Path:
    """The same with a 64-wide GPT-2 (no enc_to_dec_proj): a 48-wide one, projected, stays
    near the image-blind caption within a short test's steps."""
    return save_hf_vit_gpt2(
        tmp_path_factory.mktemp("vit_gpt2_64") / "hf", words=SHAPE_WORDS, perturb=False,
        image_size=32, patch_size=8, hidden_size=64, text_hidden_size=64, heads=2,
    )  # fmt: skip


def weights(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(tree)}


def train_lines(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "train"]


def start_recipe(shapes: Path, folder: Path, tmp: Path, **over) -> dict:
    d = recipe(shapes, tmp / "cache", **over)
    d["model"] = {"init_from": str(folder), "encoder_mode": d["model"]["encoder_mode"]}
    return d


def test_whole_model_trains_and_checkpoints_load_as_vit_gpt2(shapes, vit_gpt2, tmp_path):
    cfg = TrainConfig.from_dict(start_recipe(shapes, vit_gpt2, tmp_path, epochs=1))
    trainer = Trainer.from_recipe(cfg, tmp_path / "A", progress=False, log=quiet)
    assert isinstance(trainer.model, VisionEncoderDecoderModel)
    sizes = group_sizes(trainer.model)
    assert sizes["encoder_decay"] > 0 and sizes["decay"] > 0  # the ViT: encoder lr
    start = weights(trainer.model.parameters())
    assert trainer.fit().status == "finished"
    after = weights(trainer.model.parameters())
    moved = [k for k in after if not np.array_equal(after[k], start[k])]
    assert any(k.startswith("encoder.encoder.layer.") for k in moved)
    assert any(k.startswith("decoder.transformer.h.") for k in moved)
    assert "enc_to_dec_proj.weight" in moved
    assert "encoder.pooler.dense.weight" not in moved  # off the captioning path

    model, tokenizer = load_captioner(tmp_path / "A" / "ckpt-6")
    assert isinstance(model, VisionEncoderDecoderModel)
    assert tokenizer.encode_text("a red circle") == trainer.tokenizer.encode_text("a red circle")
    for k, v in weights(model.parameters()).items():
        np.testing.assert_array_equal(v, after[k])
    record = json.loads((tmp_path / "A" / "ckpt-6" / "convert.json").read_text())
    assert record["family"] == "vit_gpt2" and record["source_kind"] == "fine-tuned"


def test_decoder_only_leaves_the_vit_and_caches_its_grids(shapes, vit_gpt2, tmp_path):
    d = start_recipe(shapes, vit_gpt2, tmp_path, **{"model.encoder_mode": "frozen", "epochs": 1})
    trainer = Trainer.from_recipe(
        TrainConfig.from_dict(d), tmp_path / "run", progress=False, log=quiet
    )
    assert group_sizes(trainer.model)["encoder_decay"] == 0
    vit = weights(trainer.model.encoder.parameters())
    rest = {k: v for k, v in weights(trainer.model.parameters()).items() if k[:8] != "encoder."}
    assert trainer.fit().status == "finished"
    after = weights(trainer.model.encoder.parameters())
    assert all(np.array_equal(vit[k], after[k]) for k in vit)
    changed = weights(trainer.model.parameters())
    assert not np.array_equal(rest["enc_to_dec_proj.weight"], changed["enc_to_dec_proj.weight"])
    assert any(not np.array_equal(rest[k], changed[k]) for k in rest if k.startswith("decoder."))
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 2  # train + val grids


def test_finetuned_tiny_vit_gpt2_learns_the_shapes(tmp_path, vit_gpt2_same_widths):
    """A randomly initialised ViT-GPT2, fine-tuned end to end for 400 steps, describes the
    synthetic shapes far better than the image-blind caption. It learns the colour-shape
    pairs more slowly than BLIP does in as many steps, hence a relative bar on them."""
    from mlx_caption.data.synthetic import blind_baseline_caption, load_scenes, score_objects
    from mlx_caption.metrics import score_captions

    d = {
        "model": {"init_from": str(vit_gpt2_same_widths), "encoder_mode": "finetune"},
        "data": {"synthetic": {"images": 400, "size": 32, "seed": 0}, "max_length": 40},
        "optim": {"lr": 2e-3, "encoder_lr": 2e-3, "warmup_steps": 20, "min_lr_ratio": 0.1},
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
        f"\nViT-GPT2 fine-tune: {seconds:.0f}s, loss {losses[0]:.2f} -> {losses[-1]:.2f}, "
        f"CIDEr {last['CIDEr']:.3f} (blind {blind_scores['CIDEr']:.3f}), "
        f"pair_f1 {last['pair_f1']:.3f} (blind {blind_objects['pair_f1']:.3f})"
    )
    assert last["CIDEr"] > 1.5 * blind_scores["CIDEr"]
    assert last["pair_f1"] > 1.5 * blind_objects["pair_f1"]
    assert math.isfinite(result.best["value"])
    model, _ = load_captioner(tmp_path / "run" / "best")
    assert isinstance(model, VisionEncoderDecoderModel)
