"""A tiny training recipe shared by the training and distributed tests."""

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
