"""The main job, offline: synthetic data -> a captioner trained end to end -> scored captions.

``run_demo`` writes the synthetic shapes data set, trains a small captioner from scratch
(encoder included: no pretrained weights are reachable offline), captions the test split,
and scores it three ways:

- ``test``: caption metrics of the model against the same four-reference sets used by
  ``reference_agreement`` (reference k left out, averaged over k), so the two compare;
- ``reference_agreement``: the references scored against each other, the ceiling;
- ``objects``: what the captions get right about each scene, read against the generator's
  ground truth (pair recall/precision, count, size and position accuracy).

An image-blind baseline (the most common training caption for every image) is scored the
same way, so a reader sees how far above guessing the model is.

Training is sized to a time budget: a few timed steps measure this machine's step rate, and
the step count (hence the lr schedule's length) is set from it before training starts. The
trainer's ``max_minutes`` makes the budget hard: if the machine slows down after the timing,
training ends early with its checkpoint instead of running past the limit.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from mlx_caption.data.sources import load_records
from mlx_caption.data.synthetic import (
    DATASET_FILE,
    blind_baseline_caption,
    load_scenes,
    score_objects,
)
from mlx_caption.errors import UserError
from mlx_caption.evaluate import evaluate
from mlx_caption.files import atomic_dir
from mlx_caption.generate import DecodingConfig
from mlx_caption.loading import CHECKPOINT_FILES, load_captioner
from mlx_caption.metrics import leave_one_out_scores
from mlx_caption.train.checkpoint import STATE_FILE
from mlx_caption.train.config import TrainConfig, set_dotted
from mlx_caption.train.data import TrainData
from mlx_caption.train.distributed import init_world
from mlx_caption.train.trainer import Trainer, build_parts

# The demo's recipe (configs/synthetic.yaml holds the same, for `mlx-caption train`).
# Chosen for what the captions get right per minute on 2 CPU cores (the README's demo section
# has the measurements):
# - a conv stem on 16-px patches (4x4 grid): a plain patch projection learned colour, size
#   and place but confused circle/square and triangle/star; the stem learns shapes in far
#   fewer steps;
# - a decoder 128 wide x 1 layer: a wider, deeper one ran fewer steps per second and scored
#   no better per step;
# - 64 images a step split over 2 CPU streams: more images per second than 32 on one
#   stream, with the same scores per image seen; one caption per image;
# - 20,000 images: with fewer, the train / validation loss gap grew within the budget.
# - the encoder at the decoder's lr: it starts from scratch, so a lower lr protects no
#   pretrained features, and what the captions still get wrong late in training (small
#   circle / square, triangle / star) is the encoder's to learn.
DEMO_RECIPE: dict[str, Any] = {
    "model": {
        "encoder": "scratch",
        "encoder_mode": "finetune",
        "vision": {
            "hidden_size": 192,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 3,
            "image_size": 64,
            "patch_size": 16,
            "stem": "conv",
            "preprocess": {
                "resize_shortest_edge": 64,
                "crop_size": 64,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            },
        },
        "decoder": {
            "hidden_size": 128,
            "num_layers": 1,
            "num_heads": 4,
            "intermediate_size": 512,
        },
        "decoder_overrides": {"dropout": 0.0},
    },
    "data": {
        "synthetic": {"images": 20000, "size": 64, "seed": 0},
        "vocab_size": 512,
        "max_length": 32,
        "captions_per_image": 1,
    },
    "optim": {
        "lr": 1.4e-3,
        "encoder_lr": 1.4e-3,
        "weight_decay": 0.05,
        "warmup_steps": 60,
        "schedule": "cosine",
        "min_lr_ratio": 0.05,
        "grad_clip": 1.0,
    },
    "eval": {
        "every_steps": None,
        "val_images": 100,
        "batch_size": 50,
        "metrics_tokenizer": "python",
    },
    "checkpoint": {"every_steps": 200, "keep_last": 1},
    "epochs": 1000,  # bounded by max_steps, set from the time budget
    "batch_size": 64,
    "cpu_streams": 2,
    "label_smoothing": 0.0,
    "seed": 0,
    "log_every": 10,
}

# Total minutes (a hard limit), minutes kept for captioning and scoring after training (it
# takes about half of that), images generated (80/10/10 train/val/test) and test images
# captioned and scored (the first of the test split: beam search over the whole split would
# eat into the training budget). Training gets the rest.
BUDGETS = {
    "full": {"minutes": 10.0, "after_minutes": 0.7, "images": 20000, "test_images": 500},
    "quick": {"minutes": 3.0, "after_minutes": 0.5, "images": 4000, "test_images": 150},
}
MIN_STEPS, MAX_STEPS = 60, 4000
# The plan: a little below the timed rate (checkpoints, logging), to end a little before the
# hard stop (compiling the step, the last validation pass). On a shared machine the rate
# moves during the run; when it drops, max_minutes ends training on time, in the low-lr tail
# of the schedule, which costs little.
RATE_MARGIN = 0.97
TRAINER_OVERHEAD_MINUTES = 0.15


def demo_config(quick: bool = False, **overrides: Any) -> TrainConfig:
    """The demo's TrainConfig (``overrides`` are dotted keys, as ``train --set``)."""
    recipe = copy.deepcopy(DEMO_RECIPE)
    recipe["data"]["synthetic"]["images"] = BUDGETS["quick" if quick else "full"]["images"]
    for key, value in overrides.items():
        set_dotted(recipe, key, value)
    return TrainConfig.from_dict(recipe)


def measure_step_rate(cfg: TrainConfig, data: TrainData, steps: int = 24) -> float:
    """Optimizer steps per second of this recipe on this machine, data pipeline included.

    Times ``steps`` compiled training steps on real batches from ``data`` (whose tokenizer
    must be set): reading and decoding images costs a step's worth of CPU time every few
    steps on 2 cores, so a rate measured on synthetic arrays overran the budget. Enough
    steps are timed to drain the pipeline's prefetched batches, which come for free.
    """
    parts = build_parts(cfg, data, total_steps=1000)
    model, ema = parts.model, parts.ema
    batches = data.train_batches(epoch=0, start=0)

    def step(n: int) -> None:  # evaluates the update, and the weights' average if any
        parts.step(*next(batches))
        if ema is not None:
            ema.update(model, n)

    for n in range(2):  # compile, then one more to settle
        step(n)
    start = time.perf_counter()
    for n in range(steps):
        step(n)
    return steps / (time.perf_counter() - start)


def _copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy the model files of a training checkpoint to ``dst`` atomically, with its
    ``state.json`` (the recipe and validation history: the web page shows them)."""
    with atomic_dir(dst) as tmp:
        for name in (*CHECKPOINT_FILES, STATE_FILE):
            shutil.copy2(src / name, tmp / name)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def run_demo(
    out_dir: str | Path = "demo_out",
    quick: bool = False,
    progress: bool = True,
    log=lambda msg: print(msg, file=sys.stderr, flush=True),
    *,
    steps: int | None = None,
    test_images: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole demo into ``out_dir``; returns the summary (also ``OUT/demo.json``).

    ``steps`` trains exactly that many steps with no time budget (to compare recipes at a
    fixed step count, as ``bench`` does); ``test_images`` overrides how many test images are
    captioned and scored; ``overrides`` are dotted recipe keys (``{"seed": 1}``).
    """
    started = time.perf_counter()
    budget = BUDGETS["quick" if quick else "full"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_dir = out / "train"

    cfg = demo_config(quick, **(overrides or {}))
    # The training data writes the synthetic set into OUT/train/data (once; the Trainer below
    # finds it there); its tokenizer gives the vocabulary size for the timing run.
    data = TrainData.build(cfg, train_dir, init_world())
    data.make_tokenizer()

    def training_minutes_left() -> float:  # until the hard stop
        elapsed = (time.perf_counter() - started) / 60
        return max(0.5, budget["minutes"] - budget["after_minutes"] - elapsed)

    planned = steps
    if planned is None:
        timed = measure_step_rate(cfg, data)
        rate = RATE_MARGIN * timed
        train_minutes = max(0.5, training_minutes_left() - TRAINER_OVERHEAD_MINUTES)
        planned = int(min(MAX_STEPS, max(MIN_STEPS, rate * train_minutes * 60)))
        log(
            f"demo: {timed:.2f} steps/s timed here, planning at {rate:.2f} -> {planned} steps "
            f"in about {train_minutes:.1f} min of training"
        )

    cfg.max_steps = planned
    cfg.eval.every_steps = planned  # one validation pass, at the end
    trainer = Trainer.from_recipe(cfg, train_dir, progress=progress, log=log)
    if steps is None:
        # The hard stop, counted from fit() (the trainer reads it there): whatever the plan,
        # after_minutes are left for captioning and scoring.
        cfg.max_minutes = training_minutes_left()
    result = trainer.fit()
    if result.status == "time_limit":
        log(f"demo: training ran slower than timed: {result.message}")
    elif result.status != "finished":
        raise UserError(f"training stopped: {result.message}")
    checkpoint = out / "checkpoint"
    _copy_checkpoint(Path(result.checkpoint), checkpoint)
    train_seconds = result.train_seconds

    model, tokenizer = load_captioner(checkpoint)
    spec = cfg.data.synthetic
    data_root = train_dir / "data" / f"synthetic-{spec['images']}-{spec['size']}-{spec['seed']}"
    dataset_json = data_root / DATASET_FILE
    test_records = [
        r for r in load_records("karpathy", dataset_json, data_root) if r.split == "test"
    ][: test_images or budget["test_images"]]
    decoding = DecodingConfig(strategy="beam", num_beams=3)
    log(f"demo: captioning {len(test_records)} test images (beam 3)")
    evaluated = evaluate(
        model,
        tokenizer,
        test_records,
        out / "eval",
        decoding=decoding,
        gallery_images=24,
        metrics_tokenizer="auto",
        metric_names=["Bleu", "ROUGE_L", "CIDEr"],
        progress=progress,
    )
    records, captions = evaluated.records, evaluated.captions
    scenes = load_scenes(dataset_json, split="test")
    preds = {r.id: c.text for r, c in zip(records, captions, strict=True)}
    objects = score_objects(preds, {r.id: scenes[r.id] for r in records})

    blind = blind_baseline_caption(c for r in trainer.data.train for c in r.captions)
    refs = {r.id: list(r.captions) for r in records}
    blind_preds = {r.id: blind for r in records}
    baseline = {
        "caption": blind,
        "test": _metric_subset(
            leave_one_out_scores(
                refs, blind_preds, tokenizer="auto", metrics=["Bleu", "ROUGE_L", "CIDEr"]
            )
        ),
        "objects": score_objects(blind_preds, {r.id: scenes[r.id] for r in records}),
    }
    test = _metric_subset(evaluated.metrics["leave_one_out"])
    agreement = _metric_subset(evaluated.metrics["reference_agreement"])
    summary = {
        "test": test,
        "reference_agreement": agreement,
        "of_agreement": {
            k: _ratio(test.get(k), agreement.get(k)) for k in ("Bleu_4", "CIDEr", "ROUGE_L")
        },
        "objects": objects,
        "baseline": baseline,
        "images": {"train": trainer.data.num_train_images, "test": len(records)},
        "training": {
            "steps": result.step,
            "planned_steps": planned,
            "time_limit": result.status == "time_limit",
            "minutes": round(train_seconds / 60, 2),
            "steps_per_s": round(result.step / train_seconds, 3) if train_seconds else None,
            "parameters": model.num_parameters(),
            "last_eval": {
                k: v for k, v in (result.last_eval or {}).items() if isinstance(v, int | float)
            },
        },
        "checkpoint": str(checkpoint),
        "gallery": str(out / "eval" / "gallery.html"),
        "minutes": round((time.perf_counter() - started) / 60, 2),
        "quick": quick,
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


def _metric_subset(scores: dict[str, Any]) -> dict[str, Any]:
    keys = ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
    return {k: round(scores[k], 4) for k in keys if isinstance(scores.get(k), float)}
