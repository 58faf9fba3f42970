"""Decoding: the KV cache against recomputing the whole prefix at every position.

Both loops are greedy over the same rows (``images x rows_per_image``, e.g. the 3 rows per
image of beam-3) and generate exactly ``length`` tokens with ``<end>`` suppressed, uncompiled,
so their ratio is the cache's alone. The library's own decoding (``generate.decode``, greedy,
compiled step) is timed alongside for reference.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from mlx_caption.bench.models import IdsTokenizer
from mlx_caption.bench.timing import measure_interleaved, ratio

START, END = 1, 2


def _end_mask(vocab: int) -> mx.array:
    return mx.where(mx.arange(vocab) == END, -mx.inf, 0.0)


def greedy_cached(decoder: Any, cross_kv: list, rows: int, length: int) -> mx.array:
    """``length`` greedy tokens with per-layer KV caches: one new position per step."""
    caches = decoder.make_cache(rows, length)
    ban = _end_mask(decoder.config.vocab_size)
    tokens = mx.full((rows, 1), START, dtype=mx.int32)
    out = []
    for t in range(length):
        logits = decoder(tokens, cross_kv=cross_kv, caches=caches, offset=t)[:, -1]
        tokens = mx.argmax(logits + ban, axis=-1).astype(mx.int32)[:, None]
        mx.async_eval(tokens)
        out.append(tokens)
    return mx.concatenate(out, axis=1)


def greedy_recompute(decoder: Any, cross_kv: list, rows: int, length: int) -> mx.array:
    """``length`` greedy tokens running the whole prefix through the decoder at every step."""
    ban = _end_mask(decoder.config.vocab_size)
    seq = mx.full((rows, 1), START, dtype=mx.int32)
    for _ in range(length):
        logits = decoder(seq, cross_kv=cross_kv)[:, -1]
        nxt = mx.argmax(logits + ban, axis=-1).astype(mx.int32)[:, None]
        seq = mx.concatenate([seq, nxt], axis=1)
        mx.async_eval(seq)
    return seq[:, 1:]


def bench_kv_cache(
    model: Any,
    *,
    images: int = 8,
    rows_per_image: int = 3,
    length: int = 20,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Tokens/s of cached against recomputed greedy decoding (and the library's compiled path)."""
    from mlx_caption.generate import DecodingConfig, decode

    decoder = model.decoder
    if length > decoder.config.max_length:
        raise ValueError(f"length {length} exceeds the decoder's {decoder.config.max_length}")
    rows = images * rows_per_image
    mx.random.seed(seed)
    vis = model.config.vision
    image_tokens = mx.random.normal((rows, vis.num_tokens, decoder.config.hidden_size))
    cross_kv = decoder.cross_kv(image_tokens)
    mx.eval(cross_kv)
    # Same tokens both ways: the cache changes the cost, not the result.
    same = mx.array_equal(
        greedy_cached(decoder, cross_kv, rows, length),
        greedy_recompute(decoder, cross_kv, rows, length),
    ).item()
    lib_cfg = DecodingConfig(strategy="greedy", min_length=length, max_length=length)
    tok = IdsTokenizer()
    t = measure_interleaved(
        {
            "kv_cache": lambda: greedy_cached(decoder, cross_kv, rows, length),
            "recompute": lambda: greedy_recompute(decoder, cross_kv, rows, length),
            "library": lambda: decode(decoder, image_tokens, tok, lib_cfg),
        },
        warmup=warmup,
        repeats=repeats,
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
        "library_speedup": ratio(t["recompute"].median, t["library"].median),
        "seconds": {k: v.to_dict() for k, v in t.items()},
    }
