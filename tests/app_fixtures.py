"""A tiny random captioner checkpoint and synthetic images for the web page's tests.

Usable from any test module::

    from app_fixtures import tiny_checkpoint, synthetic_images
    ckpt = tiny_checkpoint(tmp_path / "ckpt")

``tiny_checkpoint``'s model is random or briefly fitted (its captions are words, not
sense) but real: a folder ``load_captioner`` opens, with a tokenizer trained on synthetic
captions, so greedy decoding is deterministic. ``shapes_checkpoint`` trains one that knows
its shapes (the demo's recipe on one shape per image, shrunk), for tests that read what a
caption says.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx_caption  # noqa: F401  (BLAS before mlx.core)


def synthetic_images(
    out_dir: Path, images: int = 4, size: int = 64
) -> tuple[list[Path], list[str]]:
    """Write a tiny synthetic data set; returns its image paths and all its captions."""
    from mlx_caption.data.synthetic import write_synthetic_dataset

    dataset = write_synthetic_dataset(out_dir, images=images, seed=0, size=size)
    data = json.loads(dataset.read_text(encoding="utf-8"))
    paths = [out_dir / e["filepath"] / e["filename"] for e in data["images"]]
    captions = [s["raw"] for e in data["images"] for s in e["sentences"]]
    return paths, captions


def tiny_checkpoint(
    folder: Path,
    captions: list[str] | None = None,
    seed: int = 0,
    images: list[Path] | None = None,
    image_captions: list[str] | None = None,
    steps: int = 0,
) -> Path:
    """Save a tiny captioner (32-px images, 8-px patches) with a tokenizer trained on captions.

    With ``steps`` > 0 it is first trained on (``images``, ``image_captions``) pairs for that
    many Adam steps (a few seconds), so its captions are made of words, not bytes.
    """
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np

    from mlx_caption.data.preprocess import PreprocessConfig
    from mlx_caption.loading import save_captioner
    from mlx_caption.models.captioner import Captioner, CaptionerConfig
    from mlx_caption.models.clip import CLIPVisionConfig as VisionConfig
    from mlx_caption.models.decoder import DecoderConfig
    from mlx_caption.tokenizer import CaptionTokenizer
    from mlx_caption.train.step import caption_loss, shifted

    if captions is None:
        captions = [
            "a red circle on the left",
            "a large blue square at the top",
            "two green triangles side by side",
            "a small yellow star in the middle",
        ]
    tokenizer = CaptionTokenizer.train(captions * 4, vocab_size=300)
    cfg = CaptionerConfig(
        vision=VisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            preprocess=PreprocessConfig(resize_shortest_edge=32, crop_size=32),
        ),
        decoder=DecoderConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            intermediate_size=64,
            max_length=24,
            dropout=0.0,
        ),
        encoder_name="random-tiny",
    )
    mx.random.seed(seed)
    model = Captioner(cfg)
    mx.eval(model.parameters())
    if steps > 0 and images:
        from mlx_caption.data.preprocess import load_image, preprocess_image

        pixels = mx.array(
            np.stack([preprocess_image(load_image(p), cfg.vision.preprocess) for p in images])
        )
        tokens = mx.array(tokenizer.encode_batch(image_captions, cfg.decoder.max_length))

        def loss_fn(m):
            inputs, targets = shifted(tokens)
            total, count, _ = caption_loss(m(m.encode(pixels), inputs), targets)
            return total / count

        opt = optim.Adam(learning_rate=3e-3)
        step = nn.value_and_grad(model, loss_fn)
        model.train()
        for _ in range(steps):
            _, grads = step(model)
            opt.update(model, grads)
            mx.eval(model.parameters(), opt.state)
        model.eval()
    return save_captioner(model, tokenizer, folder)


# The demo's recipe, shrunk to what a test can afford: one shape per image (learnt in far fewer
# steps than scenes of three), a ViT 96 x 2 instead of 192 x 4 and a decoder 96 wide instead of
# 128, captions of at most 20 tokens (one shape needs fewer), a higher lr for the short run.
SHAPES_RECIPE = {
    "data.synthetic.images": 2000,
    "data.synthetic.max_objects": 1,
    "model.vision.hidden_size": 96,
    "model.vision.intermediate_size": 384,
    "model.vision.num_hidden_layers": 2,
    "model.decoder.hidden_size": 96,
    "model.decoder.intermediate_size": 384,
    "data.max_length": 20,
    "optim.lr": 3e-3,
    "optim.encoder_lr": 1.5e-3,
    "optim.warmup_steps": 30,
    "eval.val_images": 100,
    "max_steps": 400,
}
SHAPES_MIN_PAIR_F1 = 0.7  # validation (colour, shape) F1 the test model must reach


def shapes_checkpoint(out_dir: Path) -> tuple[Path, dict]:
    """Train the shapes model into ``out_dir``; returns its final checkpoint and validation.

    Fails (rather than letting a page test fail for the wrong reason) when the model has not
    learnt its shapes: validation pair F1 below ``SHAPES_MIN_PAIR_F1``.
    """
    from mlx_caption.demo import demo_config
    from mlx_caption.train.trainer import Trainer

    cfg = demo_config(quick=True, **SHAPES_RECIPE)
    cfg.eval.every_steps = cfg.max_steps  # one validation, at the end
    cfg.checkpoint.every_steps = cfg.max_steps
    trainer = Trainer.from_recipe(cfg, out_dir, progress=False, log=lambda message: None)
    result = trainer.fit()
    last = result.last_eval or {}
    assert result.status == "finished", result.message
    assert last.get("pair_f1", 0.0) >= SHAPES_MIN_PAIR_F1, (
        f"the shapes model did not learn its shapes: {last}"
    )
    return Path(result.checkpoint), last
