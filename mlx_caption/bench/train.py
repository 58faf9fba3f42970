"""Training throughput: steps/s and images/s for each way of training a captioner.

- ``frozen_cached``: decoder (and projector) only; the encoder's grids come from a feature
  cache, so a step never runs the ViT;
- ``frozen_live``: decoder only, the frozen MLX encoder recomputed every step;
- ``bridge``: decoder only, the grids computed every step by the PT bridge (torch);
- ``finetune``: the whole encoder trains too; ``finetune_checkpoint`` with gradient
  checkpointing (activations recomputed in the backward pass), for the memory it saves.

Every mode uses the trainer's own step (:class:`mlx_caption.train.trainer.TrainStep`,
compiled like in training), and ``frozen_cached`` is also timed uncompiled, interleaved with
the compiled step, for the compile speedup. Peak memory comes from ``mx.get_peak_memory``.
"""

from __future__ import annotations

import gc
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from mlx_caption.bench.timing import Timing, measure_interleaved, ratio, time_call

MODES = ("frozen_cached", "frozen_live", "bridge", "finetune", "finetune_checkpoint")


def _batch(model: Any, batch: int, length: int, seed: int) -> tuple[np.ndarray, mx.array]:
    rng = np.random.default_rng(seed)
    size = model.config.vision.input_size
    pixels = rng.standard_normal((batch, size, size, 3), np.float32)
    vocab = model.config.decoder.vocab_size
    tokens = rng.integers(4, vocab, (batch, length + 1), dtype=np.int32)
    tokens[:, 0] = 1  # <start>
    tokens[:, -1] = 2  # <end>
    return pixels, mx.array(tokens)


def _step(model: Any, *, from_features: bool, compile: bool) -> Any:
    from mlx_caption.train.trainer import TrainStep

    return TrainStep(model, optim.AdamW(1e-4), from_features=from_features, compile=compile)


def _peak_mb() -> float:
    return mx.get_peak_memory() / 2**20


def _release() -> None:
    """Free the previous mode's step (its optimizer state, compiled graph) before the next.

    Without this a mode's peak memory would include the last mode's AdamW moments.
    """
    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()


def bench_train(
    model: Any,
    bridge_model: Any | None,
    *,
    batch: int = 16,
    length: int = 20,
    repeats: int = 5,
    warmup: int = 1,
    modes: tuple[str, ...] = MODES,
    seed: int = 0,
) -> dict[str, Any]:
    """Steps/s, images/s and peak memory per mode, and the compiled-step speedup."""
    pixels_np, tokens = _batch(model, batch, length, seed)
    pixels = mx.array(pixels_np)
    rows: dict[str, dict[str, Any]] = {}

    def record(name: str, t: Timing, peak_mb: float | None = None, **extra: Any) -> None:
        rows[name] = {
            "steps_per_s": 1.0 / t.median,
            "images_per_s": t.rate(batch),
            "peak_memory_mb": peak_mb,
            "seconds": t.to_dict(),
            **extra,
        }

    model.train()
    model.freeze_encoder()
    was_ckpt = model.encoder.grad_checkpoint

    def group(fns: dict[str, Any]) -> dict[str, Timing]:
        """Warm every step up (traces, compiles), take each one's peak memory on its own,
        then time them interleaved so a load change hits them alike."""
        for fn in fns.values():
            for _ in range(max(warmup, 1)):
                fn()
        peaks, first = {}, {}
        for name, fn in fns.items():
            _release()
            first[name] = time_call(fn)  # a warm call like the others: it counts as a repeat
            peaks[name] = _peak_mb()
        timings = measure_interleaved(fns, warmup=0, repeats=repeats - 1)
        for name, t in timings.items():
            t.times.insert(0, first[name])
            record(name, t, peaks[name])
        return timings

    if "frozen_cached" in modes:
        model.eval()
        features = model.encode_features(pixels)
        mx.eval(features)
        model.train()
        compiled = _step(model, from_features=True, compile=True)
        eager = _step(model, from_features=True, compile=False)
        group(
            {
                "frozen_cached": lambda: compiled(features, tokens),
                "frozen_cached_uncompiled": lambda: eager(features, tokens),
            }
        )
        del compiled, eager, features

    frozen: dict[str, Any] = {}
    if "frozen_live" in modes:
        live = _step(model, from_features=False, compile=True)
        frozen["frozen_live"] = lambda: live(pixels, tokens)
    if "bridge" in modes and bridge_model is not None:
        # The torch encoder runs outside the MLX step; its grid feeds the same projector.
        via_bridge = _step(model, from_features=True, compile=True)
        enc = bridge_model.bridge
        frozen["bridge"] = lambda: via_bridge(enc(pixels_np), tokens)
    if frozen:
        group(frozen)
        frozen.clear()
        live = via_bridge = None

    # Fine-tuning modes one after the other, not interleaved: two live steps would hold two
    # copies of the encoder's AdamW moments and inflate each one's peak memory.
    for name, ckpt in (("finetune", False), ("finetune_checkpoint", True)):
        if name not in modes:
            continue
        model.unfreeze_encoder()
        model.encoder.grad_checkpoint = ckpt
        tuned = _step(model, from_features=False, compile=True)
        group({name: lambda s=tuned: s(pixels, tokens)})
        tuned = None
        model.freeze_encoder()

    model.encoder.grad_checkpoint = was_ckpt
    model.eval()
    out: dict[str, Any] = {"batch": batch, "tokens": length, "modes": rows}
    if "frozen_cached" in rows:
        out["compile_speedup"] = ratio(
            rows["frozen_cached"]["steps_per_s"], rows["frozen_cached_uncompiled"]["steps_per_s"]
        )
    if "frozen_live" in rows and "bridge" in rows:
        out["live_vs_bridge"] = ratio(
            rows["frozen_live"]["steps_per_s"], rows["bridge"]["steps_per_s"]
        )
    if "finetune" in rows and "finetune_checkpoint" in rows:
        a, b = rows["finetune"]["peak_memory_mb"], rows["finetune_checkpoint"]["peak_memory_mb"]
        out["checkpoint_memory_saving"] = ratio(a, b)
    return out
