"""The whole benchmark in one run: encoder, end to end, decoding, training, data (+ profile).

:func:`run_suite` takes a :class:`SuiteConfig` (``full()``, ``quick()`` or ``tiny()`` for
tests), runs each section, and returns one JSON-able dict whose top-level ``encoder``,
``e2e``, ``decode`` and ``train`` entries carry the headline figures
(``encoder.mlx_images_per_s``, ``encoder.bridge_images_per_s``, ``encoder.ratio`` at
ViT-B/32 batch 32 float32, ``e2e.ratio``, ``decode.kv_cache_speedup``,
``train.compile_speedup``). :func:`mlx_caption.bench.report.write_results` turns it into files.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_caption.models.clip import CLIPVisionConfig
from mlx_caption.models.decoder import DecoderConfig

SECTIONS = ("encoder", "e2e", "decode", "train", "data", "captioners")


@dataclass
class SuiteConfig:
    """What to measure and how often."""

    # encoder shape name (bench.encoder.SHAPES or a zoo name) -> batch sizes
    encoder: dict[str, list[int]] = field(
        default_factory=lambda: {
            "ViT-B/32": [1, 8, 32],
            "ViT-B/16": [1, 8, 32],
            "SigLIP-B/16": [1, 8, 32],
            "DINOv2-B/14": [1, 8, 32],
        }
    )
    encoder_configs: dict[str, Any] = field(default_factory=dict)  # overrides SHAPES
    headline: tuple[str, int] = ("ViT-B/32", 32)
    repeats: int = 5
    encoder_repeats: dict[str, int] = field(default_factory=dict)  # per shape, else repeats
    warmup: int = 1
    peak_size: int = 2048
    # the captioner used by e2e / decode / train / profile
    vision: str | CLIPVisionConfig = "ViT-B/32"
    decoder: str | DecoderConfig = "tiny"  # the training default (TrainConfig.decoder)
    vocab_size: int = 8192
    e2e_batch: int = 8
    num_beams: int = 3
    tokens: int = 20
    decode_images: int = 8
    train_batch: int = 16
    train_repeats: int = 3
    train_modes: tuple[str, ...] = (
        "frozen_cached",
        "frozen_live",
        "bridge",
        "finetune",
        "finetune_checkpoint",
    )
    data: dict[str, int] = field(
        default_factory=lambda: {"images": 512, "size": 320, "crop": 224, "batch": 32}
    )
    profile_batch: int = 8
    # pretrained captioners (zoo names) against transformers' generate
    captioners: tuple[str, ...] = ("blip-base",)
    captioner_batches: tuple[int, ...] = (1, 8)
    captioner_repeats: int = 2
    captioner_configs: dict[str, Any] = field(default_factory=dict)  # overrides the zoo's
    sections: tuple[str, ...] = SECTIONS
    profile: bool = False
    quick: bool = False
    name: str = "full"  # "full" | "quick" | "tiny": names the results files

    @classmethod
    def full(cls) -> SuiteConfig:
        return cls()

    @classmethod
    def quick_run(cls) -> SuiteConfig:
        """Fewer repeats and no batch 32 but ViT-B/32's: a shorter run than :meth:`full`."""
        return cls(
            encoder={
                "ViT-B/32": [1, 8, 32],
                "ViT-B/16": [1, 8],
                "SigLIP-B/16": [1, 8],
                "DINOv2-B/14": [1, 8],
            },
            repeats=3,
            encoder_repeats={"ViT-B/16": 2, "SigLIP-B/16": 2, "DINOv2-B/14": 2},
            e2e_batch=4,
            train_batch=8,
            train_repeats=2,
            data={"images": 128, "size": 320, "crop": 224, "batch": 32, "repeats": 1},
            profile_batch=4,
            captioner_batches=(8,),
            captioner_repeats=1,
            quick=True,
            name="quick",
        )

    @classmethod
    def tiny(cls) -> SuiteConfig:
        """Tiny shapes for tests: every code path in seconds, numbers meaningless."""
        from mlx_caption.bench.encoder import TINY
        from mlx_caption.bench.models import TINY_BLIP, TINY_DECODER

        return cls(
            encoder={"tiny": [1, 2]},
            encoder_configs={"tiny": TINY},
            headline=("tiny", 2),
            repeats=2,
            peak_size=128,
            vision=TINY,
            decoder=TINY_DECODER,
            vocab_size=TINY_DECODER.vocab_size,
            e2e_batch=2,
            tokens=8,
            decode_images=2,
            train_batch=2,
            train_repeats=1,
            data={"images": 8, "size": 64, "crop": 32, "batch": 4, "repeats": 1},
            profile_batch=2,
            captioner_batches=(1, 2),
            captioner_repeats=1,
            captioner_configs={"blip-base": TINY_BLIP},
            quick=True,
            name="tiny",
        )


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _headline_row(rows: list[dict], shape: str, batch: int) -> dict | None:
    for r in rows:
        if r["model"] == shape and r["batch"] == batch:
            return r
    return rows[-1] if rows else None


def run_suite(
    cfg: SuiteConfig,
    log: Callable[[str], None] = _log,
    bridge: bool = True,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run the configured sections; returns the results dict (see the module docstring).

    With ``cfg.profile`` and an ``out_dir``, a Metal GPU trace is written there on a Mac.
    """
    import mlx_caption.bench.encoder as enc_mod
    from mlx_caption.bench import report
    from mlx_caption.bench.system import system_info
    from mlx_caption.bridge import torch_available

    start = time.perf_counter()
    if bridge and not torch_available():
        log(
            "torch/transformers not installed: measuring MLX only (pip install 'mlx-caption[torch]')"
        )
        bridge = False
    results: dict[str, Any] = {
        "system": system_info(),
        "quick": cfg.quick,
        "run": cfg.name,
        "bridge": bridge,
        "config": {
            k: (str(v) if isinstance(v, (CLIPVisionConfig, DecoderConfig)) else v)
            for k, v in dataclasses.asdict(cfg).items()
            if k not in ("encoder_configs", "captioner_configs")
        },
    }

    # Each section runs until the next one starts (model building counts to the next section).
    section_start: dict[str, float] = {}

    def begin(section: str, message: str | None = None) -> None:
        section_start[section] = time.perf_counter()
        if message:
            log(message)

    if "encoder" in cfg.sections:
        begin("encoder")
        rows, half = [], []
        for shape, batches in cfg.encoder.items():
            log(f"encoder {shape} batches {batches}")
            shape_cfg = cfg.encoder_configs.get(shape) or enc_mod.encoder_shape(shape)
            rows += enc_mod.bench_encoder(
                shape,
                batches,
                cfg=shape_cfg,
                repeats=cfg.encoder_repeats.get(shape, cfg.repeats),
                warmup=cfg.warmup,
                peak_size=cfg.peak_size,
                bridge=bridge,
            )
            half.append(enc_mod.bench_half(shape, max(batches), cfg=shape_cfg))
        head = _headline_row(rows, *cfg.headline) or {}
        results["encoder"] = {
            "model": head.get("model"),
            "batch": head.get("batch"),
            "dtype": "float32",
            "mlx_images_per_s": head.get("mlx_images_per_s"),
            "bridge_images_per_s": head.get("bridge_images_per_s"),
            "ratio": head.get("ratio"),
            "mlx_peak_fraction": head.get("mlx_peak_fraction"),
            "peak_gflops": head.get("peak_gflops"),
            "rows": rows,
            "half": half,
        }

    needs_model = {"e2e", "decode", "train"} & set(cfg.sections) or cfg.profile
    model = bridge_model = None
    if needs_model:
        from mlx_caption.bench.models import build_captioner

        vision = (
            cfg.vision if isinstance(cfg.vision, CLIPVisionConfig) else enc_mod.SHAPES[cfg.vision]
        )
        log("building the captioner (MLX) and its bridge twin")
        model, bridge_model = build_captioner(
            vision, cfg.decoder, vocab_size=cfg.vocab_size, bridge=bridge
        )

    if "e2e" in cfg.sections:
        begin(
            "e2e", f"end to end, batch {cfg.e2e_batch}, beam-{cfg.num_beams}, {cfg.tokens} tokens"
        )
        from mlx_caption.bench.e2e import bench_e2e

        results["e2e"] = bench_e2e(
            model,
            bridge_model,
            batch=cfg.e2e_batch,
            num_beams=cfg.num_beams,
            length=cfg.tokens,
            repeats=cfg.repeats,
            warmup=cfg.warmup,
        )

    if "decode" in cfg.sections:
        begin("decode", "decoding: KV cache against recompute")
        from mlx_caption.bench.decode import bench_kv_cache

        results["decode"] = bench_kv_cache(
            model,
            images=cfg.decode_images,
            rows_per_image=cfg.num_beams,
            length=cfg.tokens,
            repeats=cfg.repeats,
            warmup=cfg.warmup,
        )

    if "train" in cfg.sections:
        begin("train", f"training, batch {cfg.train_batch}: {', '.join(cfg.train_modes)}")
        from mlx_caption.bench.train import bench_train

        results["train"] = bench_train(
            model,
            bridge_model,
            batch=cfg.train_batch,
            length=cfg.tokens,
            repeats=cfg.train_repeats,
            warmup=cfg.warmup,
            modes=cfg.train_modes,
        )

    if "data" in cfg.sections:
        begin("data", "data: mlx-data stream against a Pillow loop")
        from mlx_caption.bench.data import bench_data

        results["data"] = bench_data(**cfg.data)

    if "captioners" in cfg.sections:
        if bridge:
            begin("captioners", f"pretrained captioners against transformers: {cfg.captioners}")
            from mlx_caption.bench.captioners import bench_captioners

            results["captioners"] = bench_captioners(
                cfg.captioners, batches=cfg.captioner_batches, num_beams=cfg.num_beams,
                tokens=cfg.tokens, repeats=cfg.captioner_repeats, warmup=cfg.warmup,
                configs=cfg.captioner_configs, log=log,
            )  # fmt: skip
        else:
            log("captioners: skipped (transformers' generate is the other side; needs torch)")

    if cfg.profile:
        begin("profile", "profile: per-stage breakdown")
        from mlx_caption.bench.profile import profile_stages

        results["profile"] = profile_stages(
            model,
            batch=cfg.profile_batch,
            num_beams=cfg.num_beams,
            length=cfg.tokens,
            repeats=max(1, cfg.repeats // 2),
        )
        if out_dir is not None:
            from mlx_caption.bench.profile import capture_metal_trace

            results["profile"]["metal"] = capture_metal_trace(model, Path(out_dir))
            log(f"metal trace: {results['profile']['metal']}")

    if bridge:
        from mlx_caption.bench.system import torch_threads

        # The bridge sets torch's thread count when it is built: report what it ran with.
        results["system"]["threads"]["torch"] = torch_threads()
    results["goals"] = report.goals(results)
    try:
        results["load_end"] = list(os.getloadavg())
    except OSError:
        results["load_end"] = None
    results["elapsed_s"] = time.perf_counter() - start
    marks = sorted(section_start.items(), key=lambda kv: kv[1]) + [("end", time.perf_counter())]
    results["section_seconds"] = {
        name: marks[i + 1][1] - t for i, (name, t) in enumerate(marks[:-1])
    }
    return results


def run_and_write(
    cfg: SuiteConfig, out_dir: str | Path, log: Callable[[str], None] = _log, bridge: bool = True
) -> dict[str, Any]:
    """:func:`run_suite`, then the JSON, markdown and PNG files (and a Metal trace on a Mac)."""
    from mlx_caption.bench import report

    results = run_suite(cfg, log=log, bridge=bridge, out_dir=out_dir)
    stem = "bench" if cfg.name == "full" else f"bench_{cfg.name}"
    report.write_results(results, Path(out_dir), stem=stem)
    return results
