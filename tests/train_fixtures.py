"""A tiny training recipe shared by the training and distributed tests, and what the tests
that train a captioner until it learns the synthetic shapes share."""

import json
import time
from pathlib import Path


def recipe(dataset: Path, cache: Path, **over) -> dict:
    """A tiny from-scratch recipe: 6 steps per epoch of 16 images."""
    d = {
        "model": {
            "encoder": "scratch",
            "encoder_mode": "finetune",
            "vision": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 32,
                "patch_size": 8,
            },
            "decoder": {
                "hidden_size": 32,
                "num_layers": 1,
                "num_heads": 2,
                "intermediate_size": 64,
                "dropout": 0.1,
            },
        },
        "data": {
            "format": "karpathy",
            "annotations": str(dataset),
            "images": str(dataset.parent),
            "vocab_size": 300,
            "max_length": 32,
            "feature_cache": str(cache),
        },
        "optim": {"lr": 2e-3, "encoder_lr": 1e-3, "warmup_steps": 4},
        "eval": {"generate": False, "batch_size": 12, "val_images": 12},
        "checkpoint": {"every_steps": 4, "keep_last": 10},
        "epochs": 3,
        "batch_size": 16,
        "log_every": 2,
        "seed": 0,
    }
    for key, value in over.items():
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return d


def tiny_captioner(dropout: float = 0.0, layers: int = 2):
    """A seeded captioner small enough to train in milliseconds (16-px images, 8-px patches)."""
    import mlx_caption  # noqa: F401, I001  (loads the BLAS before mlx.core)

    import mlx.core as mx

    from mlx_caption.models.captioner import Captioner, CaptionerConfig
    from mlx_caption.models.clip import CLIPVisionConfig
    from mlx_caption.models.decoder import DecoderConfig

    mx.random.seed(0)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2,
        image_size=16, patch_size=8,
    )  # fmt: skip
    decoder = DecoderConfig(
        vocab_size=50, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
        max_length=12, dropout=dropout,
    )  # fmt: skip
    return Captioner(CaptionerConfig(vision=vision, decoder=decoder))


def quiet(msg: str) -> None:
    """A trainer's log that prints nothing."""


def train_lines(run: Path) -> list[dict]:
    """The training lines of a run's ``metrics.jsonl``."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "train"]


def learn_the_shapes(d: dict, run: Path, label: str) -> tuple:
    """Train recipe ``d`` (on ``data.synthetic``) in ``run``: the run finishes and its loss
    halves. Returns the trainer, the fit's result and the image-blind caption's ``CIDEr`` and
    ``pair_f1`` on the validation images, the bars a model that looks must clear; prints
    them beside the last evaluation's (``pytest -s`` shows it) under ``label``."""
    from mlx_caption.data.synthetic import blind_baseline_caption, load_scenes, score_objects
    from mlx_caption.metrics import score_captions
    from mlx_caption.train.config import TrainConfig
    from mlx_caption.train.trainer import Trainer

    t0 = time.perf_counter()
    trainer = Trainer.from_recipe(TrainConfig.from_dict(d), run, progress=False, log=quiet)
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    assert result.status == "finished"
    losses = [r["loss"] for r in train_lines(run)]
    assert losses[-1] < 0.5 * losses[0]

    refs = {r.id: r.captions for r in trainer.data.val}
    blind = blind_baseline_caption(c for r in trainer.data.train for c in r.captions)
    synthetic = d["data"]["synthetic"]
    name = "synthetic-{images}-{size}-{seed}".format(**synthetic)
    scenes = load_scenes(run / "data" / name / "dataset_synthetic.json")
    blind_scores = {
        "CIDEr": score_captions(refs, dict.fromkeys(refs, blind), tokenizer="python")["CIDEr"],
        "pair_f1": score_objects(
            dict.fromkeys(refs, blind), {str(k): v for k, v in scenes.items()}
        )["pair_f1"],
    }
    last = result.last_eval
    print(
        f"\n{label}: {seconds:.0f}s, loss {losses[0]:.2f} -> {losses[-1]:.2f}, "
        f"CIDEr {last['CIDEr']:.3f} (blind {blind_scores['CIDEr']:.3f}), "
        f"pair_f1 {last['pair_f1']:.3f} (blind {blind_scores['pair_f1']:.3f})"
    )
    return trainer, result, blind_scores
