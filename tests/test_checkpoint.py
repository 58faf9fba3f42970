"""Training checkpoints: atomic folders, optimizer/RNG round trips, keep-last-K, best, latest."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_caption  # noqa: F401  (conftest already loaded the BLAS; kept for scripts)
from mlx_caption.errors import UserError
from mlx_caption.loading import load_captioner
from mlx_caption.models.captioner import Captioner, CaptionerConfig
from mlx_caption.models.clip import CLIPVisionConfig as VisionConfig
from mlx_caption.models.decoder import DecoderConfig
from mlx_caption.tokenizer import CaptionTokenizer
from mlx_caption.train import checkpoint as ck
from mlx_caption.train.config import TrainOptimConfig
from mlx_caption.train.logs import MetricsLog
from mlx_caption.train.schedule import build_optimizer
from mlx_caption.train.step import TrainStep


def tiny_model() -> Captioner:
    mx.random.seed(0)
    vision = VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
    )
    decoder = DecoderConfig(
        vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
        max_length=12, dropout=0.0,
    )  # fmt: skip
    return Captioner(CaptionerConfig(vision=vision, decoder=decoder))


@pytest.fixture(scope="module")
def tokenizer() -> CaptionTokenizer:
    caps = ["a red circle on the left", "a blue square on the right", "two shapes"] * 5
    return CaptionTokenizer.train(caps, vocab_size=300)


def trained(model, steps=2):
    """A model and optimizer after a couple of real updates (non-trivial Adam moments)."""
    opt, _ = build_optimizer(TrainOptimConfig(lr=1e-2, warmup_steps=1), total_steps=10)
    step = TrainStep(model, opt, compile=False)
    rng = np.random.default_rng(0)
    px = mx.array(rng.standard_normal((2, 16, 16, 3)).astype(np.float32))
    tok = mx.array([[1, 5, 6, 7, 2, 0, 0, 0, 0, 0, 0, 0], [1, 8, 9, 2, 0, 0, 0, 0, 0, 0, 0, 0]])
    for _ in range(steps):
        step(px, tok)
    return opt


def test_round_trip_model_optimizer_state_and_rng(tmp_path, tokenizer):
    model = tiny_model()
    opt = trained(model)
    mx.random.seed(1234)
    mx.random.normal((3,))  # advance the key past its seed
    state = ck.TrainState(step=7, epoch=1, batch_offset=3, total_steps=10, rng=ck.rng_state())
    expected = mx.random.normal((4,))  # what the run would draw next
    state.history.append({"kind": "eval", "step": 5, "CIDEr": 0.5})
    path = ck.save_checkpoint(tmp_path, model, tokenizer, opt, state)

    assert path == tmp_path / "ckpt-7"
    names = {p.name for p in path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    assert {"optimizer.safetensors", "state.json"} <= names
    assert not list(tmp_path.glob(".tmp-*")), "temporary folder left behind"

    loaded_state = ck.read_state(path)
    assert (loaded_state.step, loaded_state.epoch, loaded_state.batch_offset) == (7, 1, 3)
    assert loaded_state.history == state.history
    raw = json.loads((path / "state.json").read_text())
    assert raw["schedule"] == {"step": 7, "total_steps": 10}

    model2, _ = load_captioner(path)
    w1, w2 = dict(tree_flatten(model.parameters())), dict(tree_flatten(model2.parameters()))
    assert all(mx.array_equal(w1[k], w2[k]).item() for k in w1)

    opt2, _ = build_optimizer(TrainOptimConfig(lr=1e-2, warmup_steps=1), total_steps=10)
    ck.restore_optimizer(opt2, path, model2.trainable_parameters())
    s1, s2 = dict(tree_flatten(opt.state)), dict(tree_flatten(opt2.state))
    assert s1.keys() == s2.keys()
    assert all(mx.array_equal(s1[k], s2[k]).item() for k in s1)
    assert int(s2["states.2.step"].item()) == 2

    # The RNG continues exactly where the saved one would have.
    ck.set_rng_state(loaded_state.rng)
    assert mx.array_equal(mx.random.normal((4,)), expected).item()


def test_refuses_nan_weights_and_keeps_previous(tmp_path, tokenizer):
    model = tiny_model()
    opt = trained(model, steps=1)
    good = ck.save_checkpoint(tmp_path, model, tokenizer, opt, ck.TrainState(step=1))
    w = model.decoder.embed_tokens.weight
    model.decoder.embed_tokens.weight = mx.where(mx.arange(w.shape[0])[:, None] == 3, mx.nan, w)
    with pytest.raises(ck.NonFiniteWeights):
        ck.save_checkpoint(tmp_path, model, tokenizer, opt, ck.TrainState(step=2))
    assert ck.list_checkpoints(tmp_path) == [good]
    assert not (tmp_path / "ckpt-2").exists()
    assert ck.resolve_checkpoint(tmp_path) == good


def test_keep_last_best_and_latest(tmp_path, tokenizer):
    model = tiny_model()
    opt = trained(model, steps=1)
    for step in (2, 4, 6, 8):
        path = ck.save_checkpoint(
            tmp_path, model, tokenizer, opt, ck.TrainState(step=step), keep_last=2
        )
        if step == 4:
            ck.mark_best(tmp_path, path, "CIDEr", 0.9)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-6", "ckpt-8"]
    # best survives the pruning of its source and is a complete checkpoint of step 4.
    assert ck.read_state(tmp_path / "best").step == 4
    assert json.loads((tmp_path / "best" / "best.json").read_text())["source"] == "ckpt-4"
    load_captioner(tmp_path / "best")
    assert ck.resolve_checkpoint(tmp_path) == tmp_path / "ckpt-8"
    assert ck.resolve_checkpoint(tmp_path / "latest") == tmp_path / "ckpt-8"
    assert ck.resolve_checkpoint(tmp_path / "ckpt-6") == tmp_path / "ckpt-6"
    with pytest.raises(UserError, match="no checkpoint"):
        ck.resolve_checkpoint(tmp_path / "nothing-here")


def test_crash_leftovers_are_ignored_and_cleaned(tmp_path, tokenizer):
    model = tiny_model()
    opt = trained(model, steps=1)
    ck.save_checkpoint(tmp_path, model, tokenizer, opt, ck.TrainState(step=1))
    # What a kill -9 in the middle of a save leaves: a hidden half-written folder.
    half = tmp_path / ".tmp-ckpt-2-99999"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 10)
    # And a ckpt folder without state.json is not a checkpoint either.
    (tmp_path / "ckpt-3").mkdir()
    assert ck.resolve_checkpoint(tmp_path) == tmp_path / "ckpt-1"
    ck.save_checkpoint(tmp_path, model, tokenizer, opt, ck.TrainState(step=4), keep_last=5)
    assert not half.exists()


def test_optimizer_state_must_match(tmp_path, tokenizer):
    model = tiny_model()
    opt = trained(model, steps=1)
    path = ck.save_checkpoint(tmp_path, model, tokenizer, opt, ck.TrainState(step=1))
    other = tiny_model()
    other.freeze_encoder()  # a different trainable set: the moments would not fit
    opt2, _ = build_optimizer(TrainOptimConfig(), total_steps=10)
    with pytest.raises(UserError, match="optimizer state"):
        ck.restore_optimizer(opt2, path, other.trainable_parameters())
    with pytest.raises(UserError, match="optimizer.safetensors"):
        ck.load_optimizer_state(tmp_path)


def test_metrics_log_truncates_on_resume(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (5, 10, 15, 20):
        log.append({"kind": "train", "step": step, "loss": 1.0 / step})
    with open(log.path, "a") as f:
        f.write('{"kind": "train", "st')  # a line cut short by kill -9
    assert log.truncate_after(10) == 2
    assert [r["step"] for r in log.read()] == [5, 10]
    log.append({"kind": "train", "step": 15, "loss": 0.1})
    assert [r["step"] for r in log.read()] == [5, 10, 15]
