"""Decoding: the KV cache against recomputing the whole prefix at every position.

Both loops are greedy over the same rows (``images x rows_per_image``, e.g. the 3 rows per
image of beam-3), generate exactly ``length`` tokens with ``<end>`` suppressed, and compile
their step like ``generate`` does, so their ratio is the cache's alone (the same pair
uncompiled is reported too). The library's own decoding (``generate.decode``, greedy) is
timed alongside for reference.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from mlx_caption.bench.models import IdsTokenizer
from mlx_caption.bench.timing import DEFAULT_TIMING, TimingOptions, measure_interleaved, ratio
from mlx_caption.tokens import END, START


def _end_mask(vocab: int) -> mx.array:
    return mx.where(mx.arange(vocab) == END, -mx.inf, 0.0)


def _steps(decoder: Any, compiled: bool) -> tuple[Any, Any]:
    """``(cached_step, recompute_step)``: pure functions of arrays, compiled or not.

    Compiled like ``generate``'s step (``inputs=decoder.state``); the recompute step's input
    grows by one token per position, so it is traced once per length (during warm-up).
    """
    from mlx_caption.models.layers.attention import KVCache

    ban = _end_mask(decoder.config.vocab_size)

    def cached(tokens, offset, cache_state, cross_kv):
        caches = [KVCache(k, v, offset) for k, v in cache_state]
        logits = decoder(tokens, cross_kv=cross_kv, caches=caches, offset=offset)[:, -1]
        nxt = mx.argmax(logits + ban, axis=-1).astype(mx.int32)[:, None]
        return nxt, [c.state for c in caches]

    def recompute(seq, cross_kv):
        logits = decoder(seq, cross_kv=cross_kv)[:, -1]
        return mx.argmax(logits + ban, axis=-1).astype(mx.int32)[:, None]

    if not compiled:
        return cached, recompute
    key = "_bench_steps"
    if key not in decoder.__dict__:
        decoder.__dict__[key] = (
            mx.compile(cached, inputs=decoder.state),
            mx.compile(recompute, inputs=decoder.state),
        )
    return decoder.__dict__[key]


def greedy_cached(
    decoder: Any, cross_kv: list, rows: int, length: int, compiled: bool = True
) -> mx.array:
    """``length`` greedy tokens with per-layer KV caches: one new position per step."""
    step, _ = _steps(decoder, compiled)
    state = [c.state for c in decoder.make_cache(rows, length)]
    tokens = mx.full((rows, 1), START, dtype=mx.int32)
    out = []
    for t in range(length):
        tokens, state = step(tokens, mx.array(t, dtype=mx.int32), state, cross_kv)
        mx.async_eval(tokens, state)
        out.append(tokens)
    return mx.concatenate(out, axis=1)


def greedy_recompute(
    decoder: Any, cross_kv: list, rows: int, length: int, compiled: bool = True
) -> mx.array:
    """``length`` greedy tokens running the whole prefix through the decoder at every step."""
    _, step = _steps(decoder, compiled)
    seq = mx.full((rows, 1), START, dtype=mx.int32)
    for _ in range(length):
        seq = mx.concatenate([seq, step(seq, cross_kv)], axis=1)
        mx.async_eval(seq)
    return seq[:, 1:]


def bench_kv_cache(
    model: Any,
    *,
    images: int = 8,
    rows_per_image: int = 3,
    length: int = 20,
    timing: TimingOptions = DEFAULT_TIMING,
) -> dict[str, Any]:
    """Tokens/s of cached against recomputed greedy decoding (and the library's compiled path)."""
    from mlx_caption.generate import DecodingConfig, decode

    decoder = model.decoder
    if length > decoder.config.max_length:
        raise ValueError(f"length {length} exceeds the decoder's {decoder.config.max_length}")
    rows = images * rows_per_image
    mx.random.seed(timing.seed)
    vis = model.config.vision
    image_tokens = mx.random.normal((rows, vis.num_tokens, decoder.config.hidden_size))
    cross_kv = decoder.cross_kv(image_tokens)
    mx.eval(cross_kv)
    # Same tokens both ways: the cache changes the cost, not the result.
    same = mx.array_equal(
        greedy_cached(decoder, cross_kv, rows, length),
        greedy_recompute(decoder, cross_kv, rows, length, compiled=False),
    ).item()
    lib_cfg = DecodingConfig(strategy="greedy", min_length=length, max_length=length)
    tok = IdsTokenizer()
    t = measure_interleaved(
        {
            "kv_cache": lambda: greedy_cached(decoder, cross_kv, rows, length),
            "recompute": lambda: greedy_recompute(decoder, cross_kv, rows, length),
            "kv_cache_uncompiled": lambda: greedy_cached(decoder, cross_kv, rows, length, False),
            "recompute_uncompiled": lambda: greedy_recompute(
                decoder, cross_kv, rows, length, False
            ),
            "library": lambda: decode(decoder, image_tokens, tok, lib_cfg),
        },
        warmup=timing.warmup,
        repeats=timing.repeats,
        min_seconds=timing.min_seconds,
    )
    tokens = rows * length
    return {
        "rows": rows,
        "length": length,
        "same_tokens": bool(same),
        "kv_cache_tokens_per_s": t["kv_cache"].rate(tokens),
        "recompute_tokens_per_s": t["recompute"].rate(tokens),
        "library_tokens_per_s": t["library"].rate(tokens),
        "kv_cache_speedup": ratio(t["recompute"].median, t["kv_cache"].median),
        "kv_cache_speedup_uncompiled": ratio(
            t["recompute_uncompiled"].median, t["kv_cache_uncompiled"].median
        ),
        "library_speedup": ratio(t["recompute"].median, t["library"].median),
        "seconds": {k: v.to_dict() for k, v in t.items()},
    }
