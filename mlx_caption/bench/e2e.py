"""End to end: captions/s for encode + beam-3 decoding of a fixed number of tokens.

The pure-MLX captioner against the same captioner with its encoder in PyTorch (the PT
bridge): same weights, same MLX decoder, same ``generate`` call. ``min_length =
max_length`` forces every caption to the full length whatever the (random) weights say.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlx_caption.bench.models import IdsTokenizer
from mlx_caption.bench.timing import DEFAULT_TIMING, TimingOptions, measure_interleaved, ratio


def bench_e2e(
    model: Any,
    bridge_model: Any | None,
    *,
    batch: int = 8,
    num_beams: int = 3,
    length: int = 20,
    timing: TimingOptions = DEFAULT_TIMING,
) -> dict[str, Any]:
    """Captions/s of ``generate`` with each model on the same random pixels."""
    from mlx_caption.generate import generate

    size = model.config.vision.input_size
    pixels = np.random.default_rng(timing.seed).standard_normal((batch, size, size, 3), np.float32)
    tok = IdsTokenizer()
    options = dict(strategy="beam", num_beams=num_beams, min_length=length, max_length=length)
    fns = {"mlx": lambda: generate(model, pixels, tok, **options)}
    if bridge_model is not None:
        fns["bridge"] = lambda: generate(bridge_model, pixels, tok, **options)
    t = measure_interleaved(
        fns, warmup=timing.warmup, repeats=timing.repeats, min_seconds=timing.min_seconds
    )
    out = {
        "batch": batch,
        "num_beams": num_beams,
        "tokens": length,
        "mlx_captions_per_s": t["mlx"].rate(batch),
        "seconds": {k: v.to_dict() for k, v in t.items()},
    }
    if bridge_model is not None:
        out["bridge_captions_per_s"] = t["bridge"].rate(batch)
        out["ratio"] = ratio(out["mlx_captions_per_s"], out["bridge_captions_per_s"])
        # Same decoder, same weights: the captions must agree token for token.
        a = generate(model, pixels, tok, **options)
        b = generate(bridge_model, pixels, tok, **options)
        out["same_captions"] = [c.token_ids for c in a] == [c.token_ids for c in b]
    return out
