"""Encoder throughput: an MLX encoder against the PT bridge, same weights, same pixels.

Shapes are the usual CLIP ViTs, SigLIP-B/16 and DINOv2-B/14 (:data:`SHAPES`), or any zoo name.

Both sides start from NHWC float32 numpy pixels (what preprocessing yields) and end with the
``(B, T, D)`` token grid as an evaluated ``mx.array``, so the bridge pays its torch -> numpy
-> MLX copy and MLX pays its numpy -> MLX copy. A float32 matmul of the same process is timed
in the same rounds, giving the fraction of the machine's matmul peak each side reaches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_caption import backend, zoo
from mlx_caption.bench.timing import measure_interleaved, ratio
from mlx_caption.data.preprocess import PreprocessConfig
from mlx_caption.errors import UserError
from mlx_caption.models.clip import CLIPVisionConfig
from mlx_caption.models.dinov2 import Dinov2Config
from mlx_caption.models.registry import build_encoder
from mlx_caption.models.siglip import SiglipVisionConfig

# The geometry of the usual encoders (weights random: throughput does not depend on them).
SHAPES: dict[str, Any] = {
    "ViT-B/32": CLIPVisionConfig(patch_size=32),
    "ViT-B/16": CLIPVisionConfig(patch_size=16),
    "ViT-L/14": CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
    ),
    "SigLIP-B/16": SiglipVisionConfig(),
    "DINOv2-B/14": Dinov2Config(image_size=518),  # the hub's 37x37 table, 224-px crops
}
# Heads off the captioning path (contrastive projection, pooling head, pooler): left out on
# both sides, as a captioner reads only the token grid.
HEADS_OFF = {"projection_dim": None, "vision_use_head": False, "add_pooling_layer": False}

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


def encoder_shape(name: str) -> Any:
    """The config of a :data:`SHAPES` name or a zoo encoder name."""
    if name in SHAPES:
        return SHAPES[name]
    entry = zoo.lookup(name)
    if entry is None or entry.kind != "encoder":
        raise UserError(f"unknown encoder shape {name!r}: {', '.join(SHAPES)} or a zoo name")
    return entry.make_config()


def tokens_only(cfg: Any) -> Any:
    """``cfg`` without the heads a captioner does not use (:data:`HEADS_OFF`)."""
    names = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in HEADS_OFF.items() if k in names})


def vit_flops(cfg: Any, batch: int = 1) -> float:
    """Floating-point operations of one ViT forward (2 per multiply-add, matmuls only).

    Patch embedding ``2 N (p^2 C) D``; per block on ``T`` tokens: q/k/v/out projections
    ``8 T D^2``, scores and weighted sum ``4 T^2 D``, MLP ``4 T D M``. LayerNorm, softmax and
    the activation are element-wise (O(T D)) and not counted.
    """
    d, m, t = cfg.hidden_size, cfg.intermediate_size, cfg.num_tokens
    patch = 2 * cfg.num_patches * cfg.patch_size**2 * cfg.num_channels * d
    block = 8 * t * d * d + 4 * t * t * d + 4 * t * d * m
    projection = getattr(cfg, "projection_dim", None)
    proj = 2 * d * projection if projection else 0
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
    """``(mlx_vit, bridge)`` with the same random weights (HF init, converted by ``sanitize``),
    for an encoder config of any family, heads off.

    ``bridge=False`` gives ``(mlx_vit, None)`` from MLX's own init, without torch.
    """
    cfg = tokens_only(cfg)
    if bridge:
        from mlx_caption.bridge import BridgeEncoder

        enc = BridgeEncoder.from_config(cfg, seed=seed)
        vit = enc.to_mlx()
    else:
        mx.random.seed(seed)
        vit, enc = build_encoder(cfg), None
        vit.eval()
    if dtype != "float32":
        vit.set_dtype(getattr(mx, dtype))
    mx.eval(vit.parameters())
    return vit, enc


def half_precision_note() -> str | None:
    """Why half precision is skipped here, or None when the device does it well."""
    if backend.on_gpu():
        return None
    return (
        "skipped on the CPU: bfloat16/float16 matmuls do not use BLAS there (about 7 GFLOP/s "
        "against hundreds for float32), see shared/design.md"
    )


def bench_encoder(
    shape: str,
    batches: list[int],
    *,
    cfg: Any = None,
    repeats: int = 5,
    warmup: int = 1,
    peak_size: int = 2048,
    seed: int = 0,
    bridge: bool = True,
) -> list[dict[str, Any]]:
    """Images/s of MLX and the bridge for one encoder shape at each batch size (float32).

    Returns one row per batch: images/s, their ratio, GFLOP/s and the fraction of the float32
    matmul peak measured in the same rounds (``peak_gflops``).
    """
    cfg = cfg or encoder_shape(shape)
    vit, enc = build_pair(cfg, seed, bridge=bridge)
    mm, mm_flops = matmul_fn(peak_size)
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batches:
        pixels = rng.standard_normal((batch, cfg.input_size, cfg.input_size, 3), np.float32)
        fns = {
            "mlx": lambda p=pixels: vit(mx.array(p)).last_hidden_state,
            "peak": mm,
        }
        if enc is not None:
            fns["bridge"] = lambda p=pixels: enc(p)
        t = measure_interleaved(fns, warmup=warmup, repeats=repeats)
        flops = vit_flops(cfg, batch)
        peak = mm_flops / t["peak"].median / 1e9
        row = {
            "model": shape,
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
            # Interference only ever slows a run down: best-of-repeats ratio, for comparison.
            row["ratio_best"] = ratio(t["bridge"].best, t["mlx"].best)
        rows.append(row)
    return rows


def bench_half(
    shape: str,
    batch: int,
    *,
    cfg: Any = None,
    repeats: int = 3,
    dtype: str = "float16",
) -> dict[str, Any]:
    """MLX images/s in ``dtype`` against float32 on this device, or a note why it is skipped."""
    note = half_precision_note()
    if note:
        return {"model": shape, "batch": batch, "dtype": dtype, "skipped": note}
    cfg = cfg or encoder_shape(shape)
    vit32, _ = build_pair(cfg, bridge=False)
    vit16, _ = build_pair(cfg, dtype=dtype, bridge=False)
    x = mx.random.normal((batch, cfg.input_size, cfg.input_size, 3))
    x16 = x.astype(getattr(mx, dtype))
    t = measure_interleaved(
        {
            "float32": lambda: vit32(x).last_hidden_state,
            dtype: lambda: vit16(x16).last_hidden_state,
        },
        repeats=repeats,
    )
    return {
        "model": shape,
        "batch": batch,
        "dtype": dtype,
        "mlx_images_per_s": t[dtype].rate(batch),
        "float32_images_per_s": t["float32"].rate(batch),
        "speedup": ratio(t["float32"].median, t[dtype].median),
    }
