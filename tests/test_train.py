"""Training: loss, schedule, compiled step, encoder modes, resume, kill -9, Ctrl-C, NaN, e2e."""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import yaml
from mlx.utils import tree_flatten, tree_unflatten
from train_fixtures import learn_the_shapes, quiet, recipe, tiny_captioner, train_lines

import mlx_caption  # noqa: F401  (loads the BLAS before mlx.core)
from mlx_caption import backend
from mlx_caption.cli import main
from mlx_caption.commands.train import parse_overrides
from mlx_caption.data.sources import load_records
from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.errors import UserError
from mlx_caption.loading import load_captioner
from mlx_caption.models.captioner import Captioner, CaptionerConfig
from mlx_caption.models.clip import CLIPVisionConfig as VisionConfig
from mlx_caption.models.decoder import DecoderConfig
from mlx_caption.tokens import END, NO_TOKEN, START
from mlx_caption.train.checkpoint import list_checkpoints, read_state
from mlx_caption.train.config import TrainConfig, TrainModelConfig, TrainOptimConfig
from mlx_caption.train.distributed import World
from mlx_caption.train.evaluation import evaluate_captioner
from mlx_caption.train.schedule import GROUPS, WarmupDecay, build_optimizer, group_of
from mlx_caption.train.step import (
    TrainStep,
    balanced_streams,
    caption_loss,
    resolve_cpu_streams,
)
from mlx_caption.train.trainer import Trainer, check_recipe, set_trainable

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """120 synthetic 32-px images (96 train / 12 val / 12 test), Karpathy JSON."""
    root = tmp_path_factory.mktemp("shapes")
    return write_synthetic_dataset(root, images=120, seed=0, size=32)


def batch(n: int = 4, size: int = 16, seed: int = 0) -> tuple[mx.array, mx.array]:
    rng = np.random.default_rng(seed)
    px = rng.standard_normal((n, size, size, 3)).astype(np.float32)
    tok = rng.integers(4, 50, (n, 12))
    tok[:, 0] = 1
    for i in range(n):
        end = 4 + i % 6
        tok[i, end] = 2
        tok[i, end + 1 :] = 0
    return mx.array(px), mx.array(tok.astype(np.int32))


def weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


# ----------------------------------------------------------------------------- pieces


def test_caption_loss_ignores_padding_with_label_smoothing():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 4, 6)).astype(np.float32)
    # Padding is NO_TOKEN, never an id: a target 0 (a tokenizer's pad or end id) still counts.
    targets = np.array([[3, 5, 0, NO_TOKEN], [1, 2, NO_TOKEN, NO_TOKEN]])
    total, count, correct = caption_loss(mx.array(logits), mx.array(targets), 0.1)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    mask = targets != NO_TOKEN
    ids = np.where(mask, targets, 0)
    # Label smoothing 0.1 over 6 classes: 0.9 * NLL + 0.1 * mean over classes of -logp.
    nll = -np.take_along_axis(logp, ids[..., None], -1)[..., 0]
    smooth = 0.9 * nll + 0.1 * (-logp.mean(-1))
    assert count.item() == 5
    assert total.item() == pytest.approx(float((smooth * mask).sum()), rel=1e-5)
    hits = (logits.argmax(-1) == ids) & mask
    assert correct.item() == hits.sum()
    # Changing a logit row at a pad position changes nothing.
    logits[1, 3] += 100.0
    total2, _, _ = caption_loss(mx.array(logits), mx.array(targets), 0.1)
    assert total2.item() == pytest.approx(total.item(), rel=1e-6)


def test_schedule_warmup_then_cosine_to_floor():
    sched = WarmupDecay(1e-3, warmup_steps=10, total_steps=110, kind="cosine", min_ratio=0.1)
    got = [sched(mx.array(s, mx.uint64)).item() for s in (0, 4, 9, 10, 60, 110, 500)]
    assert got[0] == pytest.approx(1e-4)  # the very first update already moves
    assert got[1] == pytest.approx(5e-4)
    assert got[2] == pytest.approx(1e-3)
    assert got[3] == pytest.approx(1e-3)
    assert got[4] == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=1e-5)  # half way down the cosine
    assert got[5] == pytest.approx(1e-4) and got[6] == pytest.approx(1e-4)
    for s in range(0, 120, 7):
        assert sched(mx.array(s)).item() == pytest.approx(sched.at(s), rel=1e-5)
    linear = WarmupDecay(1.0, 0, 100, kind="linear")
    assert linear(mx.array(50)).item() == pytest.approx(0.5) == linear.at(50)
    assert WarmupDecay(2.0, 4, 100, kind="constant").at(50) == 2.0
    with pytest.raises(UserError):
        WarmupDecay(1.0, 0, 10, kind="step")


def test_parameter_groups_and_encoder_lr():
    model = tiny_captioner()
    assert group_of("encoder.encoder.layers.0.mlp.fc1.weight", mx.zeros((4, 4))) == "encoder_decay"
    assert group_of("encoder.embeddings.position_embedding.weight", mx.zeros((4, 4))) == (
        "encoder_no_decay"
    )
    assert group_of("decoder.layers.0.norm1.bias", mx.zeros((4,))) == "no_decay"
    assert group_of("decoder.embed_tokens.weight", mx.zeros((4, 4))) == "decay"
    assert group_of("decoder.norm.weight", mx.zeros((4,)), decay_all=True) == "decay"

    opt, schedules = build_optimizer(
        TrainOptimConfig(lr=1e-2, encoder_lr=1e-4, warmup_steps=0, schedule="constant"), 10
    )
    assert set(schedules) == set(GROUPS)
    px, tok = batch()
    before = weights(model)
    TrainStep(model, opt, compile=False)(px, tok)
    after = weights(model)
    # Adam's first step moves each weight by about lr: encoder 100x less than the decoder.
    enc = np.abs(after["encoder.encoder.layers.0.mlp.fc1.weight"] - before["encoder.encoder.layers.0.mlp.fc1.weight"]).max()  # fmt: skip
    dec = np.abs(after["decoder.layers.0.mlp.fc1.weight"] - before["decoder.layers.0.mlp.fc1.weight"]).max()  # fmt: skip
    assert enc == pytest.approx(1e-4, rel=0.05)
    assert dec == pytest.approx(1e-2, rel=0.05)


def run_steps(
    compile: bool,
    n: int = 5,
    dropout: float = 0.1,
    grad_checkpoint: bool = False,
    cpu_streams: int = 1,
    captions_per_image: int = 1,
    optimizer: str = "adamw",
    lr: float = 3e-3,
):
    model = tiny_captioner(dropout=dropout)
    model.encoder.grad_checkpoint = grad_checkpoint
    model.train()
    opt, _ = build_optimizer(TrainOptimConfig(optimizer=optimizer, lr=lr, warmup_steps=2), 20)
    mx.random.seed(7)
    step = TrainStep(
        model,
        opt,
        label_smoothing=0.1,
        grad_clip=1.0 if optimizer == "adamw" else None,
        compile=compile,
        cpu_streams=cpu_streams,
        captions_per_image=captions_per_image,
    )
    k = captions_per_image
    outs = []
    for i in range(n):
        px, tok = batch(n=4 * k, seed=i % 2)
        outs.append(step(px[::k], tok))  # k caption rows per image
    return [o.loss for o in outs], weights(model)


def assert_same_updates(reference: dict, variant: dict) -> None:
    """Two SGD steps of ``run_steps(**variant)`` change the weights as ``reference``'s do,
    to 1e-4 of each tensor's largest change, and give the same losses.

    Compared through plain SGD, whose update is linear in the gradient: Adam turns a
    near-zero gradient into a step of about the lr whatever its size, so summation-order
    noise in such an element would show up whole in Adam-updated weights.
    """
    start = weights(tiny_captioner())
    # A large lr keeps the weights' own rounding (w - lr g) far below the changes compared.
    common = {"n": 2, "dropout": 0.0, "optimizer": "sgd", "lr": 1.0}
    ref_losses, ref = run_steps(**common, **reference)
    losses, got = run_steps(**common, **variant)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    moved = [k for k in ref if np.abs(ref[k] - start[k]).max() > 0]
    assert any(k.startswith("encoder.encoder.layers.0.") for k in moved)
    assert any(k.startswith("decoder.layers.0.") for k in moved)
    for key in ref:
        change = ref[key] - start[key]
        scale = np.abs(change).max()
        err = np.abs((got[key] - start[key]) - change).max()
        rounding = 4 * np.spacing(np.abs(start[key]).max())
        assert err <= 1e-4 * scale + rounding, f"{key}: off by {err:.3g} of a {scale:.3g} change"


def test_compiled_step_matches_uncompiled():
    eager, w_eager = run_steps(compile=False)
    compiled, _ = run_steps(compile=True)
    assert eager[-1] < eager[0]
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)
    assert_same_updates({"compile": False}, {"compile": True})


@pytest.mark.parametrize("compile", [True, False])
@pytest.mark.parametrize("k", [1, 2])
def test_cpu_streams_split_gives_the_same_update(compile, k):
    one, _ = run_steps(compile=compile, n=3, dropout=0.0, captions_per_image=k)
    two, _ = run_steps(compile=compile, n=3, dropout=0.0, captions_per_image=k, cpu_streams=2)
    np.testing.assert_allclose(two, one, rtol=1e-5)
    plain = {"compile": compile, "captions_per_image": k}
    assert_same_updates(plain, {**plain, "cpu_streams": 2})
    with pytest.raises(ValueError, match="do not split over 3 CPU streams"):
        model = tiny_captioner()
        opt, _ = build_optimizer(TrainOptimConfig(), 10)
        TrainStep(model, opt, cpu_streams=3)(*batch(n=4))


@pytest.mark.parametrize("cpu_streams", [1, 2])
def test_update_runs_each_array_on_its_balanced_stream(cpu_streams):
    """Every array's optimizer update (through a MultiOptimizer's groups) runs on the stream
    TrainStep dealt it, and on a multi-core CPU the streams share the weights near evenly."""
    model = tiny_captioner(dropout=0.0)
    model.train()
    opt, _ = build_optimizer(TrainOptimConfig(lr=1e-3), 10)
    step = TrainStep(model, opt, grad_clip=1.0, compile=False, cpu_streams=cpu_streams)
    # apply_single gets each array's own state dict (Adam's m and v): it names the array.
    names = {}
    for group in opt.optimizers:
        keys = {k.rsplit(".", 1)[0] for k, _ in tree_flatten(group.state) if k.endswith(".m")}
        for key in keys:
            node = group.state
            for part in key.split("."):
                node = node[int(part)] if isinstance(node, list) else node[part]
            names[id(node)] = key
    seen: dict[str, object] = {}
    for group in opt.optimizers:
        original = type(group).apply_single

        def record(self, gradient, parameter, state, original=original):
            seen[names[id(state)]] = mx.default_stream(mx.cpu)
            return original(self, gradient, parameter, state)

        group.apply_single = record.__get__(group)
    step(*batch(n=4))
    assert set(seen) == set(names.values())
    assert seen == step._leaf_streams
    seen.clear()
    step(*batch(n=4))  # the recording wrappers set on the instances are still there
    assert seen == step._leaf_streams
    sizes = dict(tree_flatten(model.trainable_parameters()))
    load: dict = {}
    for name, stream in seen.items():
        load[str(stream)] = load.get(str(stream), 0) + sizes[name].size
    if backend.on_gpu() or backend.default_parts() < 2:
        assert len(load) == 1
    else:
        assert len(load) == 2
        largest = max(p.size for p in sizes.values())
        assert abs(max(load.values()) - min(load.values())) <= largest


def test_split_step_queues_the_chunks_side_by_side(monkeypatch):
    """The split step queues its chunks' graphs in step: both losses, then each parameter's
    gradient of both chunks, last parameter first (the order the backward passes reach
    them); the update is the same as without the queueing."""
    model = tiny_captioner(dropout=0.0)
    model.train()
    opt, _ = build_optimizer(TrainOptimConfig(lr=1e-3), 10)
    step = TrainStep(model, opt, compile=False, cpu_streams=2)
    names = [k for k, _ in tree_flatten(model.trainable_parameters())]
    queued = []
    async_eval = mx.async_eval
    monkeypatch.setattr(
        mx, "async_eval", lambda arrays: queued.append(arrays) or async_eval(arrays)
    )
    step(*batch(n=4))
    assert len(queued) == 1 + len(names)
    assert all(len(arrays) == 2 for arrays in queued)  # one array from each chunk
    assert [a.shape for a in queued[0]] == [(), ()]  # the losses
    sizes = dict(tree_flatten(model.trainable_parameters()))
    assert [q[0].shape for q in queued[1:]] == [sizes[k].shape for k in reversed(names)]


def test_balanced_streams_deals_largest_first_to_the_lightest():
    a, b = "a", "b"  # any objects stand for streams
    assert balanced_streams([5, 1, 4, 2, 3], [a, b]) == [a, a, b, a, b]  # 8 against 7
    assert balanced_streams([3, 3], [a]) == [a, a]
    assert balanced_streams([], [a, b]) == []


def test_step_for_recipe_is_the_configured_step():
    # Label smoothing 0.1, clipping at 1.0, eager: the same numbers as run_steps' explicit step.
    cfg = TrainConfig.from_dict(
        {
            "label_smoothing": 0.1,
            "compile": False,
            "cpu_streams": 1,  # dropout draws differ per stream
            "optim": {"grad_clip": 1.0},
            "model": {"encoder_mode": "finetune"},
        }
    )
    model = tiny_captioner(dropout=0.1)
    model.train()
    opt, _ = build_optimizer(TrainOptimConfig(lr=3e-3, warmup_steps=2), 20)
    mx.random.seed(7)
    step = TrainStep.for_recipe(model, opt, cfg)
    losses = [step(*batch(seed=i % 2)).loss for i in range(5)]
    expected, w_expected = run_steps(compile=False)
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
    for k, v in weights(model).items():
        np.testing.assert_allclose(v, w_expected[k], atol=1e-6, err_msg=k)


def test_cpu_streams_auto_splits_on_a_multicore_cpu():
    parts = backend.default_parts()
    assert resolve_cpu_streams("auto", 8) == (1 if backend.on_gpu() else parts)
    assert resolve_cpu_streams("auto", 8, grad_checkpoint=True) == 1
    assert resolve_cpu_streams("auto", 2 * parts + 1) == 1  # does not divide the images
    assert resolve_cpu_streams(3, 9) == 3
    model = tiny_captioner(dropout=0.0)
    opt, _ = build_optimizer(TrainOptimConfig(), 10)
    cfg = TrainConfig.from_dict({"batch_size": 8})
    assert cfg.cpu_streams == "auto"
    assert TrainStep.for_recipe(model, opt, cfg).cpu_streams == resolve_cpu_streams("auto", 8)


@pytest.mark.parametrize(
    "value, message",
    [("fast", "'auto' or a whole number"), (0, "must be >= 1"), (3, "divide the 8 images")],
)
def test_bad_cpu_streams_is_refused(value, message):
    with pytest.raises(UserError, match=message):
        check_recipe(TrainConfig.from_dict({"batch_size": 8, "cpu_streams": value}), World())


def test_grad_checkpoint_same_numbers():
    plain, _ = run_steps(compile=True, n=3, dropout=0.0)
    ckpt, _ = run_steps(compile=True, n=3, dropout=0.0, grad_checkpoint=True)
    np.testing.assert_allclose(ckpt, plain, rtol=1e-5)
    assert_same_updates({"compile": True}, {"compile": True, "grad_checkpoint": True})


def test_grad_checkpoint_lowers_peak_memory():
    # The encoder's activations must dominate the step for the saving to show: 64 px images
    # with 8 px patches (65 tokens) through 6 blocks. Peaks are measured above the memory
    # already live at the reset, so arrays left by earlier tests (or collected mid-step)
    # cannot tip the comparison.
    vision = VisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=6, num_attention_heads=2,
        image_size=64, patch_size=8,
    )  # fmt: skip
    decoder = DecoderConfig(
        vocab_size=50, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
        max_length=12,
    )  # fmt: skip
    px, tok = batch(n=16, size=64)

    def peak_above_live(flag: bool) -> int:
        mx.random.seed(0)
        model = Captioner(CaptionerConfig(vision=vision, decoder=decoder))
        model.encoder.grad_checkpoint = flag
        opt, _ = build_optimizer(TrainOptimConfig(), 10)
        return _second_step_peak(TrainStep(model, opt, compile=False), px, tok)[0]

    plain, ckpt = peak_above_live(False), peak_above_live(True)
    assert ckpt < 0.95 * plain, (ckpt, plain)  # measured: 44 MB vs 52 MB


def _second_step_peak(step: TrainStep, px, tok):
    """Peak memory of ``step``'s second call above what is live before it, and its output."""
    step(px, tok)
    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()
    live = mx.get_active_memory()
    out = step(px, tok)
    return mx.get_peak_memory() - live, out


def _wide_checkpointed_captioner():
    """Most of its memory is weights (and so gradients): 6 blocks 128 wide with a 1,024-wide
    MLP over 5 tokens an image."""
    mx.random.seed(0)
    vision = VisionConfig(
        hidden_size=128, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=2,
        image_size=16, patch_size=8,
    )  # fmt: skip
    decoder = DecoderConfig(
        vocab_size=50, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
        max_length=12,
    )  # fmt: skip
    model = Captioner(CaptionerConfig(vision=vision, decoder=decoder))
    model.unfreeze_encoder()
    model.encoder.grad_checkpoint = True
    model.train()
    return model


def test_checkpointed_step_frees_each_gradient_once_applied(monkeypatch):
    """With checkpointing and no clipping, each array's update is queued with its gradient's
    square sum, last layer first: the step holds about one layer's gradient at a time instead
    of all of them, with the same update. With clipping, or without checkpointing, the step
    is evaluated whole."""
    px, tok = batch(n=4)
    grad_bytes = 4 * sum(
        p.size for _, p in tree_flatten(_wide_checkpointed_captioner().trainable_parameters())
    )

    def one_step(early: bool):
        model = _wide_checkpointed_captioner()
        opt, _ = build_optimizer(TrainOptimConfig(lr=1e-3), 10)
        step = TrainStep(model, opt, compile=False)
        assert step._free_gradients_early
        step._free_gradients_early = early
        peak, out = _second_step_peak(step, px, tok)
        return peak, out, dict(tree_flatten(model.trainable_parameters()))

    held, out_held, params_held = one_step(False)
    freed, out_freed, params_freed = one_step(True)
    assert held - freed > 0.5 * grad_bytes, (held, freed, grad_bytes)
    assert out_freed.grad_norm == pytest.approx(out_held.grad_norm, rel=1e-5)
    for name, value in params_held.items():
        np.testing.assert_allclose(np.array(params_freed[name]), np.array(value), atol=1e-6)

    queued = []
    async_eval = mx.async_eval
    monkeypatch.setattr(
        mx, "async_eval", lambda *arrays: queued.append(arrays) or async_eval(*arrays)
    )
    model = _wide_checkpointed_captioner()
    opt, _ = build_optimizer(TrainOptimConfig(lr=1e-3), 10)
    TrainStep(model, opt)(px, tok)
    trainable = tree_flatten(model.trainable_parameters())
    assert [a.shape for a, _ in queued] == [p.shape for _, p in reversed(trainable)]
    assert all(square.shape == () for _, square in queued)
    assert not TrainStep(model, opt, grad_clip=1.0)._free_gradients_early
    model.encoder.grad_checkpoint = False
    assert not TrainStep(model, opt)._free_gradients_early


def test_frozen_and_last_n_blocks():
    # Frozen: the step takes cached grids; the encoder is bit-identical afterwards.
    model = tiny_captioner()
    set_trainable(model, TrainModelConfig(encoder_mode="frozen"))
    before = weights(model)
    opt, _ = build_optimizer(TrainOptimConfig(lr=1e-2, warmup_steps=0), 10)
    step = TrainStep(model, opt, from_features=True)
    px, tok = batch()
    grids = model.encode_features(px)
    for _ in range(3):
        step(grids, tok)
    after = weights(model)
    enc = [k for k in before if k.startswith("encoder.")]
    assert all(np.array_equal(before[k], after[k]) for k in enc)
    assert not np.array_equal(before["decoder.layers.0.mlp.fc1.weight"], after["decoder.layers.0.mlp.fc1.weight"])  # fmt: skip

    # Fine-tune the last block: block 1 moves, block 0, embeddings and pre-norm do not.
    model = tiny_captioner()
    set_trainable(model, TrainModelConfig(encoder_mode="finetune", finetune_last_n=1))
    before = weights(model)
    opt, _ = build_optimizer(TrainOptimConfig(lr=1e-2, encoder_lr=1e-2, warmup_steps=0), 10)
    step = TrainStep(model, opt)
    for _ in range(3):
        step(px, tok)
    after = weights(model)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    enc_changed = {k for k in changed if k.startswith("encoder.")}
    assert enc_changed and all(k.startswith("encoder.encoder.layers.1.") for k in enc_changed)
    assert any(k.startswith("decoder.") for k in changed)


# ----------------------------------------------------------------------------- the loop


def test_resume_continues_exactly(shapes, tmp_path):
    cfg = TrainConfig.from_dict(recipe(shapes, tmp_path / "cache"))
    straight = Trainer.from_recipe(cfg, tmp_path / "A", progress=False, log=quiet)
    result = straight.fit()
    assert result.status == "finished" and result.step == 18  # 3 epochs x 6 steps

    first = Trainer.from_recipe(cfg, tmp_path / "B", progress=False, log=quiet)
    stopped = first.fit(stop_at_step=9)  # mid-epoch 1 (batch 3 of 6)
    assert stopped.status == "stopped" and stopped.checkpoint.endswith("ckpt-9")
    state = read_state(tmp_path / "B" / "ckpt-9")
    assert (state.step, state.epoch, state.batch_offset) == (9, 1, 3)
    resumed = Trainer.from_recipe(
        cfg, tmp_path / "B", resume=tmp_path / "B", progress=False, log=quiet
    )
    assert resumed.lr() == pytest.approx(straight.lr_used(9))
    assert resumed.fit().status == "finished"

    a, b = train_lines(tmp_path / "A"), train_lines(tmp_path / "B")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(2, 19, 2))
    for ra, rb in zip(a, b, strict=True):
        assert rb["epoch"] == ra["epoch"]
        assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-6)
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)  # same data, same dropout
    wa, wb = weights(straight.model), weights(resumed.model)
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], atol=1e-4, err_msg=k)
    evals = [json.loads(x) for x in (tmp_path / "B" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r["kind"] == "eval"] == [6, 12, 18]


class WordTokenizer:
    """One id per word after the four specials: enough for the 50-id tiny decoder."""

    def __init__(self, captions):
        words = sorted({w for c in captions for w in c.split()})
        self.ids = {w: 4 + i for i, w in enumerate(words)}

    def encode(self, text):
        return [START, *(self.ids[w] for w in text.split()), END]

    def encode_batch(self, texts, max_length):
        out = np.full((len(texts), max_length), NO_TOKEN, dtype=np.int32)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            out[row, : len(ids)] = ids
        return out


@pytest.mark.parametrize(("metric", "pick"), [("val_loss", min), ("val_accuracy", max)])
def test_best_holds_the_best_evaluated_checkpoint(shapes, tmp_path, metric, pick):
    # Evaluations every 3 steps, checkpoints every 4: best/ must be the best of the
    # evaluated steps (lower is better for a loss), never a step that was only checkpointed.
    d = recipe(
        shapes,
        tmp_path / "cache",
        **{"eval.every_steps": 3, "eval.best_metric": metric, "checkpoint.every_steps": 4},
    )
    result = Trainer.from_recipe(TrainConfig.from_dict(d), tmp_path / "run", log=quiet).fit()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r[metric] for r in lines if r["kind"] == "eval"}
    assert sorted(evals) == list(range(3, 19, 3))
    best_step = pick(evals, key=evals.get)
    assert list(evals.values()).count(evals[best_step]) == 1  # the pick is unambiguous
    assert result.best == {"metric": metric, "value": evals[best_step], "step": best_step}
    info = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert info == {"metric": metric, "value": evals[best_step], "source": f"ckpt-{best_step}"}
    assert read_state(tmp_path / "run" / "best").step == best_step
    best_model, _ = load_captioner(tmp_path / "run" / "best")
    same_step, _ = load_captioner(tmp_path / "run" / f"ckpt-{best_step}")
    for key, value in weights(best_model).items():
        np.testing.assert_array_equal(value, weights(same_step)[key])


def test_validation_figures_match_a_hand_computation():
    """Loss (label-smoothed and plain) and token accuracy over every reference of every
    image, computed here one caption at a time in NumPy."""
    model = tiny_captioner()
    model.eval()
    rng = np.random.default_rng(3)
    pixels = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    references = [["a red circle", "a circle on the left"], ["two blue squares"]]
    tokenizer = WordTokenizer([c for rs in references for c in rs])
    batch = {"images": pixels, "ids": ["x", "y"], "references": references}
    out = evaluate_captioner(
        model, tokenizer, [batch], from_features=False, max_length=12,
        label_smoothing=0.1, generate_captions=False,
    )  # fmt: skip

    smooth = nll = correct = count = 0.0
    grid = np.array(model.encode(mx.array(pixels)))
    for image, refs in enumerate(references):
        for ref in refs:
            ids = tokenizer.encode(ref)
            logits = np.array(model(mx.array(grid[image : image + 1]), mx.array([ids[:-1]])))[0]
            logits = logits.astype(np.float64)
            logp = logits - logits.max(-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
            target = np.array(ids[1:])
            token_nll = -logp[np.arange(len(target)), target]
            nll += token_nll.sum()
            smooth += (0.9 * token_nll - 0.1 * logp.mean(-1)).sum()
            correct += (logits.argmax(-1) == target).sum()
            count += len(target)
    assert out["val_images"] == 2
    assert out["val_nll"] == pytest.approx(nll / count, rel=1e-5)
    assert out["val_loss"] == pytest.approx(smooth / count, rel=1e-5)
    assert out["val_accuracy"] == pytest.approx(correct / count)


def test_max_minutes_stops_with_a_checkpoint_and_resume_finishes(shapes, tmp_path):
    d = recipe(shapes, tmp_path / "cache", epochs=1)
    with pytest.raises(UserError, match="max_minutes must be positive"):
        Trainer.from_recipe(
            TrainConfig.from_dict({**d, "max_minutes": 0}), tmp_path / "X", log=quiet
        )
    # A limit that has passed by the first check: one step, then a checkpoint and the end.
    cfg = TrainConfig.from_dict({**d, "max_minutes": 1e-9})
    result = Trainer.from_recipe(cfg, tmp_path / "run", progress=False, log=quiet).fit()
    assert result.status == "time_limit" and result.step == 1
    assert "max_minutes" in result.message and result.checkpoint.endswith("ckpt-1")
    assert read_state(tmp_path / "run" / "ckpt-1").total_steps == 6  # the schedule kept
    # Resumed without the limit, the run completes its schedule.
    cfg.max_minutes = None
    resumed = Trainer.from_recipe(
        cfg, tmp_path / "run", resume=tmp_path / "run", progress=False, log=quiet
    )
    assert resumed.fit().status == "finished" and resumed.state.step == 6


def test_frozen_pretrained_encoder_stays_put_and_is_cached(shapes, tmp_path):
    from clip_fixtures import save_hf_clip

    from mlx_caption.loading import load_encoder

    clip = save_hf_clip(tmp_path / "clip", kind="vision", geometry="tiny")  # 64 px, patch 16
    d = recipe(shapes, tmp_path / "cache", **{"model.encoder_mode": "frozen", "epochs": 1})
    d["model"]["encoder"] = str(clip)
    del d["model"]["vision"]
    trainer = Trainer.from_recipe(
        TrainConfig.from_dict(d), tmp_path / "run", progress=False, log=quiet
    )
    pretrained = weights(load_encoder(clip))
    assert trainer.model.config.encoder_name == str(clip)
    assert trainer.fit().status == "finished"
    after = weights(trainer.model.encoder)
    assert pretrained.keys() == after.keys()
    assert all(np.array_equal(pretrained[k], after[k]) for k in pretrained)
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 2  # train + val grids
    # A second run finds the grids instead of encoding again (same fingerprint).
    again = Trainer.from_recipe(
        TrainConfig.from_dict(d), tmp_path / "run2", progress=False, log=quiet
    )
    assert again.data.features.path == trainer.data.features.path


def poison_before_update(monkeypatch, update: int) -> None:
    """Make one trainable weight NaN just before optimizer update ``update`` (1-based), as a
    blow-up would."""
    real_call = TrainStep.__call__
    calls = []

    def call(self, images, tokens):
        calls.append(1)
        if len(calls) == update:
            path, value = tree_flatten(self.model.trainable_parameters())[0]
            nan = mx.full(value.shape, float("nan"), value.dtype)
            self.model.update(tree_unflatten([(path, nan)]))
        return real_call(self, images, tokens)

    monkeypatch.setattr(TrainStep, "__call__", call)


def test_nan_stops_with_message_and_last_checkpoint_loads(shapes, tmp_path, capsys, monkeypatch):
    poison_before_update(monkeypatch, 6)
    cfg_path = tmp_path / "nan.yaml"
    cfg_path.write_text(yaml.safe_dump(recipe(shapes, tmp_path / "cache")))
    out = tmp_path / "run"
    code = main(["train", "--config", str(cfg_path), "--out", str(out), "--no-progress", "--json"])
    assert code == 3
    captured = capsys.readouterr()
    assert "diverged" in captured.err and "ckpt-4" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "diverged" and summary["checkpoint"].endswith("ckpt-4")
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-4"]
    model, _ = load_captioner(out / "ckpt-4")
    assert all(np.isfinite(v).all() for v in weights(model).values())
    errors = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert errors[-1]["kind"] == "error"


def test_cli_overrides_and_refusals(shapes, tmp_path, capsys):
    assert parse_overrides(["optim.lr=1e-3", "eval.generate=false", "model.decoder=tiny"]) == {
        "optim": {"lr": 1e-3},
        "eval": {"generate": False},
        "model": {"decoder": "tiny"},
    }
    with pytest.raises(UserError):
        parse_overrides(["novalue"])
    cfg_path = tmp_path / "r.yaml"
    cfg_path.write_text(yaml.safe_dump(recipe(shapes, tmp_path / "cache")))
    assert main(["train", "--config", str(cfg_path), "--set", "optim.lrr=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    # One epoch through the CLI with overrides; then the same --out again is refused.
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg_path), "--out", str(out), "--no-progress"]
    assert main([*args, "--set", "epochs=1", "--set", "checkpoint.every_steps=100"]) == 0
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-6"]
    assert (out / "curves.png").stat().st_size > 1000
    assert read_state(out / "ckpt-6").config["epochs"] == 1
    capsys.readouterr()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_wandb_without_the_package_is_a_clear_error(shapes, tmp_path, capsys):
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    cfg_path = tmp_path / "r.yaml"
    cfg_path.write_text(yaml.safe_dump(recipe(shapes, tmp_path / "cache", epochs=1)))
    args = ["train", "--config", str(cfg_path), "--out", str(tmp_path / "run"), "--wandb"]
    assert main([*args, "--no-progress"]) == 2
    assert "pip install wandb" in capsys.readouterr().err


@pytest.mark.parametrize(
    "recipe_file", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.stem
)
def test_shipped_recipes_parse(recipe_file):
    from mlx_caption.commands.train import load_recipe
    from mlx_caption.zoo import ZOO

    cfg = TrainConfig.from_dict(load_recipe(recipe_file))
    assert cfg.batch_size % cfg.data.captions_per_image == 0
    assert cfg.model.encoder_mode in ("frozen", "finetune")
    if cfg.model.init_from in ZOO:  # fine-tuning a pretrained captioner
        assert ZOO[cfg.model.init_from].kind == "captioner"
        assert cfg.optim.lr <= 1e-4  # a pretrained model: small steps
        return
    if cfg.model.encoder_mode == "finetune" and cfg.model.encoder != "scratch":
        assert cfg.optim.encoder_lr < cfg.optim.lr
    if cfg.model.encoder == "scratch":
        from mlx_caption.train.trainer import build_captioner

        model = build_captioner(cfg, vocab_size=512)
        assert 2e6 < model.num_parameters() < 3e6  # the ~2.4M-parameter demo model
    else:
        from mlx_caption.zoo import ZOO as ENCODERS

        assert cfg.model.encoder in ENCODERS


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "mlx_caption.cli", "train", *args],
            cwd=REPO,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for a checkpoint")
        time.sleep(0.05)


def test_kill9_resumes_from_last_checkpoint(shapes, tmp_path):
    cfg_path = tmp_path / "r.yaml"
    d = recipe(shapes, tmp_path / "cache", epochs=5)
    d["checkpoint"]["every_steps"] = 2
    cfg_path.write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    proc = _spawn(
        ["--config", str(cfg_path), "--out", str(out), "--no-progress"], tmp_path / "a.log"
    )
    _wait_for(lambda: len(list_checkpoints(out)) >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    last = read_state(list_checkpoints(out)[-1]).step
    assert 0 < last < 30

    proc = _spawn(["--resume", str(out), "--no-progress"], tmp_path / "b.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
    log = (tmp_path / "b.log").read_text()
    assert f"at step {last}" in log
    steps = [r["step"] for r in train_lines(out)]
    assert steps == list(range(2, 31, 2))  # no gap, no duplicate across the kill
    assert read_state(list_checkpoints(out)[-1]).step == 30


def test_sigint_saves_and_exits_130(shapes, tmp_path):
    cfg_path = tmp_path / "r.yaml"
    d = recipe(shapes, tmp_path / "cache", epochs=50)
    d["checkpoint"]["every_steps"] = 1000
    d["eval"]["every_steps"] = 1000
    cfg_path.write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    proc = _spawn(
        ["--config", str(cfg_path), "--out", str(out), "--no-progress"], tmp_path / "a.log"
    )
    _wait_for(lambda: (out / "metrics.jsonl").is_file(), proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    ckpts = list_checkpoints(out)
    assert len(ckpts) == 1, (tmp_path / "a.log").read_text()
    state = read_state(ckpts[0])
    assert ckpts[0].name == f"ckpt-{state.step}" and 0 < state.step < 300
    assert "SIGINT" in (tmp_path / "a.log").read_text()


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_end_to_end_learns_to_look(tmp_path):
    """A from-scratch captioner on synthetic shapes beats the image-blind caption."""
    d = {
        "model": {
            "encoder": "scratch",
            "encoder_mode": "finetune",
            "vision": {
                "hidden_size": 96,
                "intermediate_size": 192,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 32,
                "patch_size": 8,
            },
            "decoder": {
                "hidden_size": 96,
                "num_layers": 2,
                "num_heads": 2,
                "intermediate_size": 192,
                "dropout": 0.0,
            },
        },
        "data": {"synthetic": {"images": 400, "size": 32, "seed": 0}, "vocab_size": 400},
        "optim": {"lr": 2e-3, "encoder_lr": 2e-3, "warmup_steps": 20, "min_lr_ratio": 0.1},
        "eval": {
            "batch_size": 40,
            "val_images": 40,
            "metrics_tokenizer": "python",
            "every_steps": 100,
        },
        "checkpoint": {"every_steps": 1000},
        "epochs": 20,  # 200 steps of 32 images
        "batch_size": 32,
        "label_smoothing": 0.0,
        "log_every": 10,
    }
    _, result, blind = learn_the_shapes(d, tmp_path / "run", "e2e")
    last = result.last_eval
    assert last["CIDEr"] > 1.5 * blind["CIDEr"]
    assert last["pair_f1"] > blind["pair_f1"] + 0.1
    assert math.isfinite(result.best["value"])
    load_captioner(tmp_path / "run" / "best")


def test_scratch_encoder_position_init():
    from mlx_caption.demo import demo_config
    from mlx_caption.models.layers import sincos_position_embedding
    from mlx_caption.train.trainer import build_captioner

    cfg = demo_config(quick=True)
    grid = cfg.model.vision["image_size"] // cfg.model.vision["patch_size"]
    model = build_captioner(cfg, 300)
    expected = sincos_position_embedding(grid, cfg.model.vision["hidden_size"])
    assert mx.array_equal(model.encoder.embeddings.position_embedding.weight, expected)
    cfg.model.position_init = "random"
    model = build_captioner(cfg, 300)
    assert not mx.array_equal(model.encoder.embeddings.position_embedding.weight, expected)
    cfg.model.position_init = "learned-ish"
    with pytest.raises(UserError, match="position_init"):
        build_captioner(cfg, 300)


def test_scratch_encoder_stem_is_checked():
    from mlx_caption.demo import demo_config
    from mlx_caption.train.trainer import build_captioner

    cfg = demo_config(quick=True, **{"model.vision.stem": "conv", "model.vision.patch_size": 12})
    cfg.model.vision["image_size"] = 48
    with pytest.raises(UserError, match="power-of-two patch_size, not 12"):
        build_captioner(cfg, 300)
    cfg.model.vision["stem"] = "resnet"
    with pytest.raises(UserError, match="stem must be one of patch, conv"):
        build_captioner(cfg, 300)


def test_first_line_says_what_was_skipped(tmp_path):
    """A data set where some training images are corrupt or missing trains on the rest, and
    the run's first line says how many were left out and why."""
    data = write_synthetic_dataset(tmp_path / "shapes", images=60, seed=2, size=32)
    train = [r for r in load_records("karpathy", data, data.parent) if r.split == "train"]
    Path(train[0].image).write_bytes(b"not an image")
    Path(train[1].image).write_bytes(Path(train[1].image).read_bytes()[:100])  # truncated
    Path(train[2].image).unlink()
    lines = []
    d = recipe(data, tmp_path / "cache", **{"epochs": 1, "max_steps": 1, "batch_size": 8})
    trainer = Trainer.from_recipe(TrainConfig.from_dict(d), tmp_path / "run", progress=False,
                                  log=lines.append)  # fmt: skip
    assert trainer.data.num_train_images == len(train) - 3
    trainer.fit()
    assert f"{len(train) - 3} train images (3 skipped: 1 missing, 2 corrupt)" in lines[0]


def test_checkpoint_records_what_the_training_images_look_like(tmp_path):
    """The trainer measures the training images and the checkpoint's config says what they
    look like: the synthetic set's dim grey, its noise, its size and the generator's object
    sizes (the web page draws on it)."""
    from mlx_caption.data.look import measure_look
    from mlx_caption.data.preprocess import load_image
    from mlx_caption.data.synthetic import OBJECT_DIAMETERS

    d = recipe(Path("unused"), tmp_path / "cache", **{"epochs": 1, "max_steps": 1})
    shapes = {"images": 40, "size": 32, "seed": 3, "max_objects": 1}  # one shape per image
    d["data"] = {"synthetic": shapes, "vocab_size": 300}
    trainer = Trainer.from_recipe(TrainConfig.from_dict(d), tmp_path / "run", progress=False,
                                  log=quiet)  # fmt: skip
    result = trainer.fit()
    look = load_captioner(result.checkpoint)[0].config.image_look
    assert look == measure_look(
        [load_image(r.image) for r in trainer.data.train], OBJECT_DIAMETERS
    )  # 32 training images: all of them are measured
    assert look.images == 32 and look.size == 32
    assert all(55 - 12 <= c <= 110 + 12 for c in look.background)  # the generator's greys
    assert 6 < look.noise < 10  # deviation 7, and JPEG's own ripples
    assert dict(look.object_sizes) == {"small": 0.18, "large": 0.3}
    assert all(r.captions[1].startswith("one shape:") for r in trainer.data.train)
    assert (tmp_path / "run" / "data" / "synthetic-40-32-3-1objects").is_dir()
