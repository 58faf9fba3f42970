"""Pretrained captioners: pure MLX against transformers' own ``generate``.

For each zoo captioner (random weights: a transformers initialisation, converted to MLX by the
family's ``sanitize``, so both sides hold the same numbers), the same random pixels are
captioned by :func:`mlx_caption.generate.generate` and by the transformers model's
``generate`` with the same beam settings and ``min = max = tokens`` new tokens (every caption
runs to the full length whatever the weights say). The two are timed in alternation; the
captions are compared token for token. Peak memory is the rise of the process's resident set
during one call (sampled, the same way for both), and MLX's own allocator peak.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_caption import zoo
from mlx_caption.bench.models import IdsTokenizer
from mlx_caption.bench.timing import TRAIN_TIMING, TimingOptions, measure_interleaved, ratio, sync
from mlx_caption.models.registry import family_of


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_rise_mb(fn: Callable[[], Any], interval: float = 0.002) -> tuple[float | None, Any]:
    """``(rise, result)``: how far the resident set rises above its starting size while
    ``fn`` runs (MB, sampled every ``interval`` seconds; None where there is no ``/proc``,
    as on macOS), and what ``fn`` returned."""
    if not os.path.exists("/proc/self/statm"):
        return None, fn()
    start = peak = _rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            done.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
        sync(result)
    finally:
        done.set()
        thread.join()
    return (max(peak, _rss_bytes()) - start) / 2**20, result


def twin_models(config: Any, seed: int = 0) -> tuple[Any, Any]:
    """``(mlx_model, transformers_model)`` with the same random weights, both in eval mode."""
    family = family_of(config)
    reference = family.reference_module()
    hf = reference.random_model(config, seed)
    state = family.model_class.sanitize({k: v.numpy() for k, v in hf.state_dict().items()})
    model = family.model_class(config)
    model.load_weights([(k, mx.array(v)) for k, v in state.items()], strict=True)
    model.eval()
    mx.eval(model.parameters())
    return model, hf


def bench_captioners(
    names: tuple[str, ...] = ("blip-base",),
    *,
    batches: tuple[int, ...] = (1, 8),
    num_beams: int = 3,
    tokens: int = 20,
    timing: TimingOptions = TRAIN_TIMING,
    configs: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Captions/s and peak memory of each captioner, MLX and transformers, per batch size.

    ``configs`` replaces a zoo name's config (tiny models for tests). ``timing.warmup`` counts
    the first call (which also gives the captions compared and the memory figures). The headline
    is the largest batch of the first captioner; ``min_ratio`` the lowest ratio of any at the
    largest batch.
    """
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for name in names:
        config = (configs or {}).get(name) or zoo.ZOO[name].make_config()
        log(f"captioner {name}: building the MLX model and its transformers twin")
        model, hf = twin_models(config, timing.seed)
        for batch in batches:
            size = config.vision.input_size
            pixels = np.random.default_rng(timing.seed).standard_normal(
                (batch, size, size, 3), np.float32
            )
            row = _measure(model, hf, pixels, num_beams, tokens, timing)
            log(f"captioner {name} batch {batch}: MLX / transformers {row['ratio']:.2f}")
            rows.append({"model": name, "family": family_of(config).name, **row})
    head = max((r for r in rows if r["model"] == names[0]), key=lambda r: r["batch"])
    return {
        "model": head["model"],
        "batch": head["batch"],
        "num_beams": num_beams,
        "tokens": tokens,
        "ratio": head["ratio"],
        # every captioner at the largest batch: the goal holds for each family
        "min_ratio": min(r["ratio"] for r in rows if r["batch"] == max(batches)),
        "same_captions": all(r["same_captions"] for r in rows),
        "rows": rows,
    }


def _measure(
    model: Any, hf: Any, pixels: np.ndarray, num_beams: int, tokens: int, timing: TimingOptions
) -> dict[str, Any]:
    from mlx_caption.generate import generate

    reference = family_of(model.config).reference_module()
    prefix = list(model.decoder.special_tokens.start)
    batch = len(pixels)

    def ours() -> Any:
        return generate(
            model, pixels, IdsTokenizer(), "beam",
            num_beams=num_beams, min_length=tokens, max_length=tokens,
        )  # fmt: skip

    def theirs() -> Any:
        return reference.generate(
            hf, pixels, prefix, num_beams=num_beams, min_new_tokens=tokens, max_new_tokens=tokens
        )

    # The first call of each (its warm-up: MLX compiles its steps) gives the captions to
    # compare and the memory figures.
    mx.reset_peak_memory()
    mlx_rss, captions = peak_rss_rise_mb(ours)
    mlx_peak = mx.get_peak_memory() / 2**20
    hf_rss, hf_ids = peak_rss_rise_mb(theirs)
    t = measure_interleaved(
        {"mlx": ours, "transformers": theirs},
        warmup=max(0, timing.warmup - 1),
        repeats=timing.repeats,
    )
    return {
        "batch": batch,
        "num_beams": num_beams,
        "tokens": tokens,
        "mlx_captions_per_s": t["mlx"].rate(batch),
        "transformers_captions_per_s": t["transformers"].rate(batch),
        "ratio": ratio(t["transformers"].median, t["mlx"].median),
        "same_captions": [c.token_ids for c in captions] == hf_ids,
        "mlx_peak_memory_mb": mlx_peak,
        "mlx_rss_rise_mb": mlx_rss,
        "transformers_rss_rise_mb": hf_rss,
        "seconds": {k: v.to_dict() for k, v in t.items()},
    }
