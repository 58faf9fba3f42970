"""Encoder throughput: the MLX encoder against its torch reference, same weights, same pixels.

Every encoder family (CLIP, SigLIP, DINOv2, ViT) is measured the same way: the shapes come
from the zoo (one per family and architecture, see :func:`zoo_shapes`), the torch side is
the family's ``reference`` module
(the PT bridge, :class:`mlx_caption.bridge.BridgeEncoder`), and the MLX side the family's
model built through ``models/registry.py`` with the same weights (the family's ``sanitize``).
Both sides start from NHWC float32 numpy pixels (what preprocessing yields) and end with the
``(B, T, D)`` token grid as an evaluated ``mx.array``, so the bridge pays its torch -> numpy
-> MLX copy and MLX pays its numpy -> MLX copy; MLX runs as the library runs an encoder for
inference (:func:`mlx_caption.backend.split_eval`, whole batches by default).
Heads off the captioning path (contrastive projection, pooling head, pooler) are left out on
both sides, as a captioner reads only the token grid. A float32 matmul of the same process is
timed in the same rounds, giving the fraction of the machine's matmul peak each side reaches.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_caption import backend, zoo
from mlx_caption.bench.timing import (
    DEFAULT_TIMING,
    TRAIN_TIMING,
    TimingOptions,
    measure_interleaved,
    ratio,
)
from mlx_caption.data.preprocess import PreprocessConfig
from mlx_caption.models.clip import CLIPVisionConfig
from mlx_caption.models.registry import build_encoder

# Encoders whose forward pass costs more than this (GFLOP per image) are left out of the
# CPU run: a batch of 32 would take minutes per repeat on each side.
CPU_GFLOP_BUDGET = 200.0
# Shapes costlier than this per image are "large": timed with fewer repeats, and on a CPU only
# the first large shape of the zoo is measured (:func:`zoo_shapes`).
LARGE_GFLOP = 50.0

# A ViT small enough for the test suite: same code paths, milliseconds per batch.
TINY = CLIPVisionConfig(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=64,
    patch_size=16,
    preprocess=PreprocessConfig(resize_shortest_edge=64, crop_size=64),
)

_SIZES = {192: "Ti", 384: "S", 768: "B", 1024: "L", 1152: "So400m", 1280: "H", 1536: "g"}


# The config fields that add a head off the captioning path, and the value that removes it.
HEADS_OFF = {"projection_dim": None, "vision_use_head": False, "add_pooling_layer": False}


def without_head(cfg: Any) -> Any:
    """The config without the heads a captioner does not use (:data:`HEADS_OFF`): throughput
    is the token grid's."""
    names = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in HEADS_OFF.items() if k in names})


def _architecture(entry: zoo.ZooEntry, cfg: Any) -> tuple:
    # The same weights at another resolution, or with a few register tokens, are the same
    # architecture: their cost per token is the same.
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size")
    return (entry.family, mlp_width(cfg)) + tuple(getattr(cfg, f) for f in fields)


def zoo_shapes(
    max_gflop: float | None = CPU_GFLOP_BUDGET, large_gflop: float | None = LARGE_GFLOP
) -> dict[str, Any]:
    """One encoder config per family and architecture in the zoo, named by its first row.

    Rows differing only in weights, resolution, register tokens, activation or projection
    head share a shape. ``max_gflop`` drops shapes whose forward pass costs more per image;
    of the shapes over ``large_gflop`` only the first (CLIP's ViT-L/14) is kept: the other
    families' large towers run the same blocks as their base ones, and each would add many
    minutes to a CPU run. None keeps them all.
    """
    shapes: dict[str, Any] = {}
    seen = set()
    large = 0
    for entry in zoo.entries("encoder"):
        cfg = without_head(entry.make_config())
        key = _architecture(entry, cfg)
        gflop = vit_flops(cfg) / 1e9
        if key in seen or (max_gflop is not None and gflop > max_gflop):
            continue
        seen.add(key)
        if large_gflop is not None and gflop > large_gflop:
            large += 1
            if large > 1:
                continue
        shapes[entry.name] = cfg
    return shapes


def encoder_config(name: str) -> Any:
    """The config of a zoo encoder (no projection head), or ``"tiny"`` (tests)."""
    if name == "tiny":
        return TINY
    entry = zoo.lookup(name)
    if entry is None or entry.kind != "encoder":
        raise ValueError(f"no encoder {name!r} in the zoo")
    return without_head(entry.make_config())


def shape_label(cfg: Any) -> str:
    """``ViT-B/16, 224 px, 197 tokens``: what a row measured."""
    size = _SIZES.get(cfg.hidden_size, f"{cfg.hidden_size}d")
    return f"ViT-{size}/{cfg.patch_size}, {cfg.input_size} px, {cfg.num_tokens} tokens"


def mlp_width(cfg: Any) -> int:
    """The MLP's hidden width (``intermediate_size``, or ``mlp_ratio`` times the width)."""
    width = getattr(cfg, "intermediate_size", None)
    return int(width or cfg.hidden_size * getattr(cfg, "mlp_ratio", 4))


def vit_flops(cfg: Any, batch: int = 1) -> float:
    """Floating-point operations of one ViT forward (2 per multiply-add, matmuls only).

    Patch embedding ``2 N (p^2 C) D``; per block on ``T`` tokens: q/k/v/out projections
    ``8 T D^2``, scores and weighted sum ``4 T^2 D``, MLP ``4 T D M``. LayerNorm, softmax and
    the activation are element-wise (O(T D)) and not counted.
    """
    d, m, t = cfg.hidden_size, mlp_width(cfg), cfg.num_tokens
    patch = 2 * cfg.num_patches * cfg.patch_size**2 * getattr(cfg, "num_channels", 3) * d
    block = 8 * t * d * d + 4 * t * t * d + 4 * t * d * m
    head = getattr(cfg, "projection_dim", None)
    proj = 2 * d * head if head else 0
    return float(batch * (patch + cfg.num_hidden_layers * block + proj))


def matmul_fn(n: int = 2048):
    """A closure timing one float32 ``n x n`` matmul, and its FLOPs."""
    a = mx.random.normal((n, n))
    b = mx.random.normal((n, n))
    mx.eval(a, b)
    return (lambda: a @ b), 2.0 * n**3


def build_pair(
    cfg: Any, seed: int = 0, dtype: str = "float32", bridge: bool = True
) -> tuple[Any, Any]:
    """``(mlx_encoder, bridge)`` with the same random weights (the family's transformers
    init, converted by its ``sanitize``), for an encoder config of any family.

    ``bridge=False`` gives ``(mlx_encoder, None)`` from MLX's own init, without torch.
    """
    cfg = without_head(cfg)
    if bridge:
        from mlx_caption.bridge import BridgeEncoder

        enc = BridgeEncoder.from_config(cfg, seed=seed)
        model = enc.to_mlx()
    else:
        mx.random.seed(seed)
        model, enc = build_encoder(cfg), None
        model.eval()
    if dtype != "float32":
        model.set_dtype(getattr(mx, dtype))
    mx.eval(model.parameters())
    return model, enc


def encode(model: Any, pixels: np.ndarray) -> mx.array:
    """The token grid as the library computes it for inference (``backend.split_eval``),
    from numpy pixels."""
    return backend.split_eval(
        lambda x: model(x).last_hidden_state, mx.array(pixels), tokens=model.config.num_tokens
    )


def half_precision_note() -> str | None:
    """Why half precision is skipped here, or None when the device does it well."""
    if backend.on_gpu():
        return None
    return (
        "skipped on the CPU: bfloat16/float16 matmuls do not use BLAS there (about 7 GFLOP/s "
        "against hundreds for float32), see shared/design.md"
    )


def bench_encoder(
    name: str,
    batches: list[int],
    *,
    cfg: Any | None = None,
    timing: TimingOptions = DEFAULT_TIMING,
    peak_size: int = 2048,
    bridge: bool = True,
) -> list[dict[str, Any]]:
    """Images/s of MLX and the bridge for one encoder shape at each batch size (float32).

    Returns one row per batch: images/s, their ratio, GFLOP/s and the fraction of the float32
    matmul peak measured in the same rounds (``peak_gflops``).
    """
    cfg = cfg or encoder_config(name)
    model, enc = build_pair(cfg, timing.seed, bridge=bridge)
    mm, mm_flops = matmul_fn(peak_size)
    rng = np.random.default_rng(timing.seed)
    rows = []
    for batch in batches:
        pixels = rng.standard_normal((batch, cfg.input_size, cfg.input_size, 3), np.float32)
        fns = {"mlx": lambda p=pixels: encode(model, p), "peak": mm}
        if enc is not None:
            fns["bridge"] = lambda p=pixels: enc(p)
        t = measure_interleaved(
            fns, warmup=timing.warmup, repeats=timing.repeats, min_seconds=timing.min_seconds
        )
        flops = vit_flops(cfg, batch)
        peak = mm_flops / t["peak"].median / 1e9
        row = {
            "model": name,
            "shape": shape_label(cfg),
            "batch": batch,
            "dtype": "float32",
            "tokens": cfg.num_tokens,
            "gflop_per_image": vit_flops(cfg) / 1e9,
            "peak_gflops": peak,
            "mlx_images_per_s": t["mlx"].rate(batch),
            "mlx_gflops": flops / t["mlx"].median / 1e9,
            "mlx_seconds": t["mlx"].to_dict(),
        }
        row["mlx_peak_fraction"] = row["mlx_gflops"] / peak
        if enc is not None:
            row["bridge_images_per_s"] = t["bridge"].rate(batch)
            row["bridge_gflops"] = flops / t["bridge"].median / 1e9
            row["bridge_peak_fraction"] = row["bridge_gflops"] / peak
            row["bridge_seconds"] = t["bridge"].to_dict()
            row["ratio"] = ratio(row["mlx_images_per_s"], row["bridge_images_per_s"])
            # The best ratio MLX could reach on this machine: its encoder running at its own
            # matmul peak (the counted FLOPs are all matmuls; nothing else makes them faster).
            row["ratio_ceiling"] = ratio(peak, row["bridge_gflops"])
            # Interference only ever slows a run down: best-of-repeats ratio, for comparison.
            row["ratio_best"] = ratio(t["bridge"].best, t["mlx"].best)
        rows.append(row)
    return rows


def bench_half(
    name: str,
    batch: int,
    *,
    cfg: Any | None = None,
    timing: TimingOptions = TRAIN_TIMING,
    dtype: str = "float16",
    bridge: bool = True,
) -> dict[str, Any]:
    """Images/s in ``dtype`` against float32 on this device, MLX and (with ``bridge``) the
    torch reference in the same half type, or a note why it is skipped."""
    note = half_precision_note()
    if note:
        return {"model": name, "batch": batch, "dtype": dtype, "skipped": note}
    cfg = cfg or encoder_config(name)
    model32, enc = build_pair(cfg, timing.seed, bridge=bridge)
    model16, _ = build_pair(cfg, timing.seed, dtype=dtype, bridge=False)
    pixels = np.random.default_rng(timing.seed).standard_normal(
        (batch, cfg.input_size, cfg.input_size, 3), np.float32
    )
    half = getattr(mx, dtype)
    fns = {
        "float32": lambda: encode(model32, pixels),
        dtype: lambda: model16(mx.array(pixels).astype(half)).last_hidden_state,
    }
    if enc is not None:
        import torch

        from mlx_caption.bridge import BridgeEncoder

        enc16 = BridgeEncoder(copy.deepcopy(enc.model).to(getattr(torch, dtype)), cfg)
        fns[f"torch_{dtype}"] = lambda: enc16(pixels)
    t = measure_interleaved(
        fns, warmup=timing.warmup, repeats=timing.repeats, min_seconds=timing.min_seconds
    )
    out = {
        "model": name,
        "batch": batch,
        "dtype": dtype,
        "mlx_images_per_s": t[dtype].rate(batch),
        "float32_images_per_s": t["float32"].rate(batch),
        "speedup": ratio(t["float32"].median, t[dtype].median),
    }
    if enc is not None:
        out["torch_images_per_s"] = t[f"torch_{dtype}"].rate(batch)
        out["ratio"] = ratio(t[f"torch_{dtype}"].median, t[dtype].median)
    return out
