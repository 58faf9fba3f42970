"""Training throughput and memory: each way of training a captioner, and MLX against PyTorch.

:func:`bench_train` times the trainer's own step (:class:`mlx_caption.train.step.TrainStep`,
compiled as in training) in each mode:

- ``frozen_cached``: decoder (and projector) only; the encoder's grids come from a feature
  cache, so a step never runs the ViT (also timed uncompiled, interleaved, for the compile
  speedup);
- ``frozen_live``: decoder only, the frozen MLX encoder recomputed every step;
- ``bridge``: decoder only, the grids computed every step by the PT bridge (torch);
- ``finetune``: the whole encoder trains too; ``finetune_checkpoint`` with gradient
  checkpointing (activations recomputed in the backward pass), for the memory it saves.

:func:`bench_train_torch` and :func:`bench_finetune_torch` race the same step against its
PyTorch twin (``benchmarks/torch_twin.py``: the same projector, decoder, loss and AdamW, with
the same weights), and :func:`checkpoint_memory` takes the fine-tuning step's peak memory
with and without gradient checkpointing. Peak memory comes from ``mx.get_peak_memory``.
"""

from __future__ import annotations

import copy
import gc
import os
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from mlx_caption.bench import scripts
from mlx_caption.bench.timing import (
    TRAIN_TIMING,
    Timing,
    TimingOptions,
    measure_interleaved,
    ratio,
    time_call,
)

MODES = ("frozen_cached", "frozen_live", "bridge", "finetune", "finetune_checkpoint")
# The training recipes' default (TrainConfig.label_smoothing): the loss path people run.
LABEL_SMOOTHING = 0.1


def _tokens(vocab: int, batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
    tokens = rng.integers(4, vocab, (batch, length + 1), dtype=np.int32)
    tokens[:, 0] = 1  # <start>
    tokens[:, -1] = 2  # <end>
    return tokens


def _batch(model: Any, batch: int, length: int, seed: int) -> tuple[np.ndarray, mx.array]:
    rng = np.random.default_rng(seed)
    size = model.config.vision.input_size
    pixels = rng.standard_normal((batch, size, size, 3), np.float32)
    return pixels, mx.array(_tokens(model.config.decoder.vocab_size, batch, length, rng))


def _step(
    model: Any, *, from_features: bool, compile: bool, images: int, cpu_streams: int | str = "auto"
) -> Any:
    """The step a recipe with these settings builds (``cpu_streams`` as a recipe gives it)."""
    from mlx_caption.train.step import TrainStep, resolve_cpu_streams

    cpu_streams = resolve_cpu_streams(cpu_streams, images, model.encoder.grad_checkpoint)
    return TrainStep(
        model,
        optim.AdamW(1e-4),
        label_smoothing=LABEL_SMOOTHING,
        from_features=from_features,
        compile=compile,
        cpu_streams=cpu_streams,
    )


def _peak_mb() -> float:
    return mx.get_peak_memory() / 2**20


def _release() -> None:
    """Free the previous mode's step (its optimizer state, compiled graph) before the next.

    Without this a mode's peak memory would include the last mode's AdamW moments.
    """
    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()


def _timed_group(fns: dict[str, Any], timing: TimingOptions) -> tuple[dict, dict[str, float]]:
    """Warm every step up (traces, compiles), take each one's peak memory on its own, then
    time them interleaved so a load change hits them alike. Returns timings and peaks."""
    for fn in fns.values():
        for _ in range(max(timing.warmup, 1)):
            fn()
    peaks, first = {}, {}
    for name, fn in fns.items():
        _release()
        first[name] = time_call(fn)  # a warm call like the others: it counts as a repeat
        peaks[name] = _peak_mb()
    timings = measure_interleaved(fns, warmup=0, repeats=timing.repeats - 1)
    for name, t in timings.items():
        t.times.insert(0, first[name])
    return timings, peaks


def _row(t: Timing, batch: int, peak_mb: float | None = None) -> dict[str, Any]:
    return {
        "steps_per_s": 1.0 / t.median,
        "images_per_s": t.rate(batch),
        "peak_memory_mb": peak_mb,
        "seconds": t.to_dict(),
    }


def bench_train(
    model: Any,
    bridge_model: Any | None,
    *,
    batch: int = 16,
    length: int = 20,
    timing: TimingOptions = TRAIN_TIMING,
    modes: tuple[str, ...] = MODES,
) -> dict[str, Any]:
    """Steps/s, images/s and peak memory per mode, and the compiled-step speedup."""
    pixels_np, tokens = _batch(model, batch, length, timing.seed)
    pixels = mx.array(pixels_np)
    rows: dict[str, dict[str, Any]] = {}

    def group(fns: dict[str, Any]) -> None:
        timings, peaks = _timed_group(fns, timing)
        for name, t in timings.items():
            rows[name] = _row(t, batch, peaks[name])

    model.train()
    model.freeze_encoder()
    was_ckpt = model.encoder.grad_checkpoint

    if "frozen_cached" in modes:
        model.eval()
        features = model.encode_features(pixels)
        mx.eval(features)
        model.train()
        compiled = _step(model, from_features=True, compile=True, images=batch)
        eager = _step(model, from_features=True, compile=False, images=batch)
        group(
            {
                "frozen_cached": lambda: compiled(features, tokens),
                "frozen_cached_uncompiled": lambda: eager(features, tokens),
            }
        )
        del compiled, eager, features

    frozen: dict[str, Any] = {}
    if "frozen_live" in modes:
        live = _step(model, from_features=False, compile=True, images=batch)
        frozen["frozen_live"] = lambda: live(pixels, tokens)
    if "bridge" in modes and bridge_model is not None:
        # The torch encoder runs outside the MLX step; its grid feeds the same projector.
        via_bridge = _step(model, from_features=True, compile=True, images=batch)
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
        # One stream both ways, so the two rows differ by checkpointing alone.
        tuned = _step(model, from_features=False, compile=True, images=batch, cpu_streams=1)
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


# ----------------------------------------------------------------------------- against torch


def default_device() -> str:
    """Where the torch side runs: the device MLX is measured on (see ``bridge``)."""
    from mlx_caption.bridge import default_device as bridge_device

    return bridge_device()


def _twin_module() -> Any:
    module = scripts.load_script("torch_twin")
    if module is None:
        raise FileNotFoundError(f"{scripts.script_path('torch_twin')} not found")
    return module


def _torch_threads() -> int:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    return torch.get_num_threads()


def _race_frozen(
    model: Any,
    twin_mod: Any,
    batch: int,
    length: int,
    rng: np.random.Generator,
    timing: TimingOptions,
    torch_compile: bool,
) -> dict[str, Any]:
    """One batch size of :func:`bench_train_torch`."""
    import torch

    vision, vocab = model.config.vision, model.config.decoder.vocab_size
    grids = rng.standard_normal((batch, vision.num_tokens, vision.hidden_size), np.float32)
    tokens = _tokens(vocab, batch, length, rng)
    features, captions = mx.array(grids), mx.array(tokens)
    device = default_device()
    t_grids = torch.from_numpy(grids).to(device)
    t_tokens = torch.from_numpy(tokens).long().to(device)
    _release()
    mlx_step = _step(model, from_features=True, compile=True, images=batch)
    eager = twin_mod.TrainStep(
        twin_mod.build(model, device=device), label_smoothing=LABEL_SMOOTHING
    )
    fns = {"mlx": lambda: mlx_step(features, captions), "torch": lambda: eager(t_grids, t_tokens)}
    if torch_compile:
        compiled = twin_mod.TrainStep(
            twin_mod.build(model, device=device), label_smoothing=LABEL_SMOOTHING, compile=True
        )
        fns["torch_compiled"] = lambda: compiled(t_grids, t_tokens)
    t = measure_interleaved(fns, warmup=max(timing.warmup, 1), repeats=timing.repeats)
    row: dict[str, Any] = {"batch": batch, "rows": batch * length}
    for name, timed in t.items():
        row[f"{name}_steps_per_s"] = 1.0 / timed.median
        row[f"{name}_seconds"] = timed.to_dict()
    best_torch = max(row.get("torch_compiled_steps_per_s", 0.0), row["torch_steps_per_s"])
    row["ratio"] = ratio(row["mlx_steps_per_s"], best_torch)
    return row


def bench_train_torch(
    model: Any,
    *,
    batches: tuple[int, ...] = (16, 32, 64, 128, 250),
    length: int = 20,
    timing: TimingOptions = TRAIN_TIMING,
    torch_compile: bool = False,
) -> dict[str, Any]:
    """The compiled MLX step against its PyTorch twin, frozen encoder from a feature cache.

    At each batch both start from the same weights and the same random grids and captions;
    they are timed interleaved. With ``torch_compile`` the twin is also timed under
    ``torch.compile`` and the faster torch step is the one compared against.
    """
    twin_mod = _twin_module()
    threads = _torch_threads()
    rng = np.random.default_rng(timing.seed)
    model.train()
    model.freeze_encoder()
    rows = [
        _race_frozen(model, twin_mod, batch, length, rng, timing, torch_compile)
        for batch in batches
    ]
    model.eval()
    return {
        "mode": "frozen_cached",
        "tokens": length,
        "torch_threads": threads,
        "torch_compile": torch_compile,
        "rows": rows,
        "min_ratio": min(r["ratio"] for r in rows),
    }


def bench_finetune_torch(
    model: Any,
    bridge_model: Any,
    *,
    batch: int = 16,
    length: int = 20,
    timing: TimingOptions = TRAIN_TIMING,
) -> dict[str, Any]:
    """Fine-tuning the whole encoder end to end: the MLX step against the PyTorch twin with
    the family's transformers encoder (a copy of the bridge's, same weights), interleaved."""
    import torch

    twin_mod = _twin_module()
    _torch_threads()
    pixels_np, tokens = _batch(model, batch, length, timing.seed)
    pixels = mx.array(pixels_np)
    device = default_device()
    t_pixels = torch.from_numpy(pixels_np).to(device)
    t_tokens = torch.from_numpy(np.array(tokens)).long().to(device)
    model.train()
    model.unfreeze_encoder()
    mlx_step = _step(model, from_features=False, compile=True, images=batch)
    encoder = copy.deepcopy(bridge_model.bridge.model)
    twin = twin_mod.TrainStep(
        twin_mod.build(model, encoder, device=device), label_smoothing=LABEL_SMOOTHING
    )
    t = measure_interleaved(
        {"mlx": lambda: mlx_step(pixels, tokens), "torch": lambda: twin(t_pixels, t_tokens)},
        warmup=max(timing.warmup, 1),
        repeats=timing.repeats,
    )
    model.freeze_encoder()
    model.eval()
    return {
        "batch": batch,
        "tokens": length,
        "mlx_steps_per_s": 1.0 / t["mlx"].median,
        "torch_steps_per_s": 1.0 / t["torch"].median,
        "ratio": ratio(t["torch"].median, t["mlx"].median),
        "seconds": {k: v.to_dict() for k, v in t.items()},
    }


def checkpoint_memory(
    model: Any, *, batches: tuple[int, ...] = (16, 32), length: int = 20, seed: int = 0
) -> dict[str, Any]:
    """Peak memory of one fine-tuning step (after a warm-up step) without and with gradient
    checkpointing, at each batch; ``fraction`` is with / without."""
    was_ckpt = model.encoder.grad_checkpoint
    rows = []
    for batch in batches:
        pixels_np, tokens = _batch(model, batch, length, seed)
        pixels = mx.array(pixels_np)
        row: dict[str, Any] = {"batch": batch}
        for name, ckpt in (("without", False), ("with", True)):
            model.train()
            model.unfreeze_encoder()
            model.encoder.grad_checkpoint = ckpt
            # One stream both ways: what checkpointing alone saves.
            step = _step(model, from_features=False, compile=True, images=batch, cpu_streams=1)
            step(pixels, tokens)
            _release()
            row[f"{name}_resting_mb"] = mx.get_active_memory() / 2**20
            step(pixels, tokens)
            row[f"{name}_peak_mb"] = _peak_mb()
            step = None
            _release()
        row["fraction"] = ratio(row["with_peak_mb"], row["without_peak_mb"])
        rows.append(row)
    model.encoder.grad_checkpoint = was_ckpt
    model.freeze_encoder()
    model.eval()
    return {"tokens": length, "rows": rows, "max_fraction": max(r["fraction"] for r in rows)}
