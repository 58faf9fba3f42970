"""Where the time goes: a per-stage breakdown of captioning, and a Metal GPU trace on a Mac.

The breakdown runs one batch stage by stage, evaluating after each stage so its time is its
own: preprocessing (JPEG decode, resize, crop, normalize), patch embedding, then per encoder
block the layer norms, the q/k/v/out projections, the attention core (scores, softmax,
weighted sum), the MLP matmuls and the MLP activation, and on the decoding side the
per-image cross-attention keys/values, the decoder steps and the beam search's
search's overhead (what ``generate`` spends beyond the decoder itself: candidate
selection, host bookkeeping, cache reordering). Running stage by stage
loses the overlap of MLX's lazy graph, so the stages sum to a little more than one
ordinary forward pass; both are reported.

``capture_metal_trace`` records one encoder and one decoding batch with MLX's Metal capture
API. It needs a Mac with Metal and ``MTL_CAPTURE_ENABLED=1`` in the environment; open the
``.gputrace`` it writes in Xcode. Elsewhere it returns a message saying why it skipped.
"""

from __future__ import annotations

import io
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_caption.bench.models import IdsTokenizer
from mlx_caption.bench.timing import measure
from mlx_caption.models.layers import scaled_dot_product_attention

# Display order of the stages.
STAGES = (
    "preprocessing",
    "patch embedding",
    "layer norm",
    "attention projections",
    "attention core (softmax)",
    "MLP matmuls",
    "MLP activation",
    "residual adds",
    "projector",
    "cross-attention K/V",
    "decoder steps",
    "beam search overhead",
)


def _jpegs(count: int, size: tuple[int, int], seed: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        # Smooth random images compress like photos (noise would make huge JPEGs).
        small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _timed(acc: dict[str, float], name: str, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    mx.eval(out)
    acc[name] += time.perf_counter() - start
    return out


def _layer_stages(acc: dict[str, float], layer: Any, x: mx.array) -> mx.array:
    """One encoder block, op group by op group (mirrors ``clip.vision.EncoderLayer``)."""
    attn, mlp = layer.self_attn, layer.mlp
    b, t, d = x.shape
    h = attn.num_heads

    def split(y: mx.array) -> mx.array:
        return y.reshape(b, t, h, d // h).transpose(0, 2, 1, 3)

    def qkv(y: mx.array) -> list[mx.array]:
        return [split(attn.q_proj(y)), split(attn.k_proj(y)), split(attn.v_proj(y))]

    def core(q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        return scaled_dot_product_attention(q, k, v, attn.scale)

    def out(o: mx.array) -> mx.array:
        return attn.out_proj(o.transpose(0, 2, 1, 3).reshape(b, t, d))

    def add(a: mx.array, c: mx.array) -> mx.array:
        return a + c

    y = _timed(acc, "layer norm", layer.layer_norm1, x)
    q, k, v = _timed(acc, "attention projections", qkv, y)
    o = _timed(acc, "attention core (softmax)", core, q, k, v)
    o = _timed(acc, "attention projections", out, o)
    x = _timed(acc, "residual adds", add, x, o)
    y = _timed(acc, "layer norm", layer.layer_norm2, x)
    y = _timed(acc, "MLP matmuls", mlp.fc1, y)
    y = _timed(acc, "MLP activation", mlp.act, y)
    y = _timed(acc, "MLP matmuls", mlp.fc2, y)
    return _timed(acc, "residual adds", add, x, y)


def encoder_stages(vit: Any, pixels: mx.array) -> dict[str, float]:
    """Seconds per stage of one ViT forward, evaluated stage by stage."""
    acc: dict[str, float] = defaultdict(float)
    x = _timed(acc, "patch embedding", lambda p: vit.pre_layrnorm(vit.embeddings(p)), pixels)
    for layer in vit.layers:
        x = _layer_stages(acc, layer, x)
    return dict(acc)


def _repeat_kv(kv: list, repeats: int) -> list:
    return [(mx.repeat(k, repeats, 0), mx.repeat(v, repeats, 0)) for k, v in kv]


def _compiled_step(decoder: Any):
    """One cached decoding position as a compiled pure function, like ``generate``'s step."""
    from mlx_caption.models.layers.attention import KVCache

    def step(tokens, offset, cache_state, cross_kv):
        caches = [KVCache(k, v, offset) for k, v in cache_state]
        logits = decoder(tokens, cross_kv=cross_kv, caches=caches, offset=offset)[:, -1]
        return logits, [c.state for c in caches]

    return mx.compile(step, inputs=decoder.state)


def profile_stages(
    model: Any,
    *,
    batch: int = 8,
    num_beams: int = 3,
    length: int = 20,
    image_size: tuple[int, int] = (500, 375),
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Median seconds per stage for captioning ``batch`` JPEGs, and the plain totals."""
    from mlx_caption.data.preprocess import load_image, preprocess_image
    from mlx_caption.generate import DecodingConfig, decode

    pre_cfg = model.config.vision.preprocess
    jpegs = _jpegs(batch, image_size, seed)
    vit, decoder = model.encoder, model.decoder
    rows = batch * num_beams
    dec_cfg = DecodingConfig(
        strategy="beam", num_beams=num_beams, min_length=length, max_length=length
    )
    tok = IdsTokenizer()

    def preprocess():
        return np.stack([preprocess_image(load_image(j), pre_cfg) for j in jpegs])

    pixels_np = preprocess()
    pixels = mx.array(pixels_np)
    image_tokens = model.encode(pixels)
    mx.eval(image_tokens)
    step = _compiled_step(decoder)
    cache = [c.state for c in decoder.make_cache(rows, length)]
    features = vit(pixels).last_hidden_state
    cross = _repeat_kv(decoder.cross_kv(image_tokens), num_beams)
    tokens = mx.full((rows, 1), 1, dtype=mx.int32)
    mx.eval(cross, features)

    def one_step():
        return step(tokens, mx.array(3, dtype=mx.int32), cache, cross)

    runs: dict[str, list[float]] = defaultdict(list)
    totals: dict[str, list[float]] = defaultdict(list)
    for r in range(repeats + 1):  # the first round warms up (compiles, allocates)
        stages: dict[str, float] = {}
        start = time.perf_counter()
        preprocess()
        stages["preprocessing"] = time.perf_counter() - start
        stages.update(encoder_stages(vit, pixels))
        start = time.perf_counter()
        mx.eval(model.project(features))
        stages["projector"] = time.perf_counter() - start
        start = time.perf_counter()
        mx.eval(_repeat_kv(decoder.cross_kv(image_tokens), num_beams))
        stages["cross-attention K/V"] = time.perf_counter() - start
        step_t = measure(one_step, warmup=0, repeats=3).median
        stages["decoder steps"] = step_t * length
        start = time.perf_counter()
        decode(decoder, image_tokens, tok, dec_cfg)
        decode_s = time.perf_counter() - start
        encode_s = measure(lambda: model.encode(pixels), warmup=0, repeats=1).median
        # generate's beam search beyond the decoder itself: candidate selection, the host's
        # bookkeeping (numpy, one sync per token) and cache reordering.
        stages["beam search overhead"] = max(
            decode_s - stages["decoder steps"] - stages["cross-attention K/V"], 0.0
        )
        if r == 0:
            continue
        for k, v in stages.items():
            runs[k].append(v)
        totals["encoder forward"].append(encode_s)
        totals["decode (generate, beam)"].append(decode_s)
        totals["stages sum"].append(sum(stages.values()))
    med = {k: float(np.median(runs[k])) for k in STAGES if k in runs}
    whole = sum(med.values())
    return {
        "batch": batch,
        "num_beams": num_beams,
        "tokens": length,
        "image_size": list(image_size),
        "stages_s": med,
        "stages_fraction": {k: v / whole for k, v in med.items()},
        "totals_s": {k: float(np.median(v)) for k, v in totals.items()},
    }


def capture_metal_trace(model: Any, out_dir: Path, batch: int = 4, length: int = 20) -> dict:
    """Write ``mlx_caption.gputrace`` of one encoder and one decoding batch (Mac + Metal only)."""
    from mlx_caption.generate import generate

    if not mx.metal.is_available():
        return {"skipped": "no Metal device: GPU trace capture needs a Mac (Apple silicon)"}
    if os.environ.get("MTL_CAPTURE_ENABLED") != "1":
        return {
            "skipped": "set MTL_CAPTURE_ENABLED=1 to allow Metal capture, e.g. "
            "MTL_CAPTURE_ENABLED=1 mlx-caption bench --profile"
        }
    path = Path(out_dir) / "mlx_caption.gputrace"
    if path.exists():
        import shutil

        shutil.rmtree(path) if path.is_dir() else path.unlink()
    size = model.config.vision.input_size
    pixels = mx.random.normal((batch, size, size, 3))
    options = dict(strategy="beam", num_beams=3, min_length=length, max_length=length)
    generate(model, pixels, IdsTokenizer(), **options)  # warm-up outside the trace
    mx.metal.start_capture(str(path))
    try:
        mx.eval(model.encode(pixels))
        generate(model, pixels, IdsTokenizer(), **options)
    finally:
        mx.metal.stop_capture()
    return {"trace": str(path), "open_with": "Xcode (File > Open), or `open` on macOS"}
