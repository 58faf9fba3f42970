"""The whole benchmark in one run: encoder, end to end, decoding, training, training against
PyTorch, memory, data, pretrained captioners against transformers, the demo (+ profile).

:func:`run_suite` takes a :class:`SuiteConfig` (``full()``, ``quick_run()`` or ``tiny()`` for
tests), runs each section, and returns one JSON-able dict: one entry per section, plus
``goals`` (:func:`mlx_caption.bench.report.goals`). The headline figures are
``encoder.ratio`` (MLX / torch at ViT-B/32 batch 32), ``encoder.min_ratio`` (the lowest over
every shape and batch), ``e2e.ratio``, ``decode.kv_cache_speedup``, ``train.compile_speedup``,
``torch.min_ratio``, ``torch.finetune.ratio``, ``memory.fractions``, ``captioners.ratio``
and ``demo.min_pair_score``. :func:`mlx_caption.bench.report.write_results` turns it into files.
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

from mlx_caption.bench import decode, e2e, train
from mlx_caption.bench.timing import TimingOptions
from mlx_caption.models.decoder import DecoderConfig

SECTIONS = ("encoder", "e2e", "decode", "train", "torch", "memory", "data", "captioners", "demo")
VIT_B32, VIT_B16 = "clip-vit-base-patch32", "clip-vit-base-patch16"
ENCODER_BATCHES = [1, 8, 32]


@dataclass
class SuiteConfig:
    """What to measure and how often."""

    # encoder name (zoo) -> batch sizes; None: every zoo shape within the CPU budget (or all of
    # them on a GPU) at ENCODER_BATCHES.
    encoder: dict[str, list[int]] | None = None
    encoder_configs: dict[str, Any] = field(default_factory=dict)  # name -> config (tests)
    headline: tuple[str, int] = (VIT_B32, 32)
    peak_row: tuple[str, int] = (VIT_B16, 32)  # the matmul-peak goal's shape and batch
    # Short calls (batch 1 encoders) get more rounds: 5 s of interleaved calls per row.
    timing: TimingOptions = TimingOptions(min_seconds=5.0)
    large_repeats: int = 2  # timed repeats for shapes over bench.encoder.LARGE_GFLOP per image
    peak_size: int = 2048
    # the captioner used by e2e / decode / train / torch / memory / profile
    vision: str = VIT_B32
    decoder: str | DecoderConfig = "tiny"  # the training default (TrainConfig.decoder)
    vocab_size: int = 8192
    e2e_batch: int = 8
    num_beams: int = 3
    tokens: int = 20
    decode_images: int = 8
    train_batch: int = 16
    train_timing: TimingOptions = TimingOptions(repeats=3)
    train_modes: tuple[str, ...] = (
        "frozen_cached",
        "frozen_live",
        "bridge",
        "finetune",
        "finetune_checkpoint",
    )
    # training against the PyTorch twin: frozen-cached batches, fine-tuning batch
    torch_batches: tuple[int, ...] = (16, 32, 64, 128, 250)
    torch_compile: bool = True
    finetune_batch: int = 16
    memory_batches: tuple[int, ...] = (16, 32)
    data: dict[str, int] = field(
        default_factory=lambda: {"images": 512, "size": 320, "crop": 224, "batch": 32}
    )
    # pretrained captioners (zoo names) against transformers' generate
    captioners: tuple[str, ...] = ("blip-base", "git-base-coco", "vit-gpt2")
    captioner_batches: tuple[int, ...] = (1, 8)
    captioner_timing: TimingOptions = TimingOptions(repeats=2)
    captioner_configs: dict[str, Any] = field(default_factory=dict)  # overrides the zoo's
    demo: dict[str, Any] = field(default_factory=lambda: {"steps": 1400, "seeds": [0, 1, 2]})
    profile_batch: int = 8
    sections: tuple[str, ...] = SECTIONS
    profile: bool = False
    quick: bool = False
    name: str = "full"  # "full" | "quick" | "tiny": names the results files

    @classmethod
    def full(cls) -> SuiteConfig:
        return cls()

    @classmethod
    def quick_run(cls) -> SuiteConfig:
        """A few minutes: the goals' shapes and batches only, fewer repeats, no ViT-L, the
        demo left out (1,400 training steps take several minutes on their own)."""
        return cls(
            encoder={VIT_B32: [1, 8, 32], VIT_B16: [32]}, timing=TimingOptions(repeats=3, min_seconds=3.0), large_repeats=2,
            e2e_batch=4, profile_batch=4,
            train_batch=8, train_timing=TimingOptions(repeats=2),
            torch_batches=(16, 250), torch_compile=False, finetune_batch=8, memory_batches=(16,),
            data={"images": 128, "size": 320, "crop": 224, "batch": 32, "repeats": 1},
            captioner_batches=(8,), captioner_timing=TimingOptions(repeats=1),
            sections=tuple(s for s in SECTIONS if s != "demo"), quick=True, name="quick",
        )  # fmt: skip

    @classmethod
    def tiny(cls) -> SuiteConfig:
        """Tiny shapes for tests: every code path in seconds, numbers meaningless."""
        from mlx_caption.bench.encoder import TINY
        from mlx_caption.bench.models import TINY_BLIP, TINY_DECODER, TINY_GIT, TINY_VIT_GPT2

        return cls(
            encoder={"tiny": [1, 2]}, encoder_configs={"tiny": TINY}, headline=("tiny", 2),
            peak_row=("tiny", 2), timing=TimingOptions(repeats=2), peak_size=128,
            vision="tiny", decoder=TINY_DECODER, vocab_size=TINY_DECODER.vocab_size,
            e2e_batch=2, tokens=8, decode_images=2, profile_batch=2,
            train_batch=2, train_timing=TimingOptions(repeats=1),
            torch_batches=(2, 4), torch_compile=False, finetune_batch=2, memory_batches=(2,),
            data={"images": 8, "size": 64, "crop": 32, "batch": 4, "repeats": 1},
            captioner_batches=(1, 2), captioner_timing=TimingOptions(repeats=1),
            captioner_configs={
                "blip-base": TINY_BLIP, "git-base-coco": TINY_GIT, "vit-gpt2": TINY_VIT_GPT2,
            },
            demo={"steps": 3, "seeds": [0], "images": 200, "test_images": 4},
            sections=tuple(s for s in SECTIONS if s != "demo"), quick=True, name="tiny",
        )  # fmt: skip


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _find_row(rows: list[dict], name: str, batch: int) -> dict:
    return next((r for r in rows if r["model"] == name and r["batch"] == batch), {})


class _Run:
    """One suite run: a method per section, each returning that section's results."""

    def __init__(
        self, cfg: SuiteConfig, log: Callable[[str], None], bridge: bool, out: Path | None
    ):
        self.cfg, self.log, self.bridge, self.out = cfg, log, bridge, out
        self._models: tuple[Any, Any] | None = None

    @property
    def models(self) -> tuple[Any, Any]:
        """``(captioner, bridge twin)``, built on first use (it counts to that section)."""
        if self._models is None:
            from mlx_caption.bench.encoder import encoder_config
            from mlx_caption.bench.models import build_captioner

            cfg = self.cfg
            vision = cfg.encoder_configs.get(cfg.vision) or encoder_config(cfg.vision)
            self.log("building the captioner (MLX) and its bridge twin")
            self._models = build_captioner(
                vision, cfg.decoder, vocab_size=cfg.vocab_size, bridge=self.bridge
            )
        return self._models

    def encoder(self) -> dict[str, Any]:
        from mlx_caption.bench import encoder as enc

        cfg = self.cfg
        shapes = cfg.encoder
        if shapes is None:
            limits = (None, None) if _on_gpu() else (enc.CPU_GFLOP_BUDGET, enc.LARGE_GFLOP)
            shapes = {name: list(ENCODER_BATCHES) for name in enc.zoo_shapes(*limits)}
        rows, half = [], []
        for name, batches in shapes.items():
            shape_cfg = cfg.encoder_configs.get(name) or enc.encoder_config(name)
            repeats = cfg.timing.repeats
            if enc.vit_flops(shape_cfg) / 1e9 > enc.LARGE_GFLOP:
                repeats = min(repeats, cfg.large_repeats)
            self.log(f"encoder {name} ({enc.shape_label(shape_cfg)}) batches {batches}")
            timing = dataclasses.replace(cfg.timing, repeats=repeats)
            rows += enc.bench_encoder(
                name, batches, cfg=shape_cfg, timing=timing, peak_size=cfg.peak_size,
                bridge=self.bridge,
            )  # fmt: skip
            half.append(enc.bench_half(name, max(batches), cfg=shape_cfg, bridge=self.bridge))
        head = _find_row(rows, *cfg.headline)
        ratios = [r["ratio"] for r in rows if "ratio" in r]
        ceilings = [r["ratio_ceiling"] for r in rows if "ratio_ceiling" in r]
        return {
            "model": head.get("model"),
            "batch": head.get("batch"),
            "dtype": "float32",
            "mlx_images_per_s": head.get("mlx_images_per_s"),
            "bridge_images_per_s": head.get("bridge_images_per_s"),
            "ratio": head.get("ratio"),
            "ratio_ceiling": head.get("ratio_ceiling"),
            "mlx_peak_fraction": head.get("mlx_peak_fraction"),
            "peak_gflops": head.get("peak_gflops"),
            "min_ratio": min(ratios) if ratios else None,
            # No row's ratio can pass its ceiling, so the lowest ratio cannot pass the lowest.
            "min_ratio_ceiling": min(ceilings) if ceilings else None,
            "peak_row": _find_row(rows, *cfg.peak_row) or None,
            "rows": rows,
            "half": half,
        }

    def e2e(self) -> dict[str, Any]:
        c = self.cfg
        self.log(f"end to end, batch {c.e2e_batch}, beam-{c.num_beams}, {c.tokens} tokens")
        return e2e.bench_e2e(*self.models, batch=c.e2e_batch, num_beams=c.num_beams, length=c.tokens, timing=c.timing)  # fmt: skip

    def decode(self) -> dict[str, Any]:
        self.log("decoding: KV cache against recompute")
        c = self.cfg
        return decode.bench_kv_cache(self.models[0], images=c.decode_images, rows_per_image=c.num_beams, length=c.tokens, timing=c.timing)  # fmt: skip

    def train(self) -> dict[str, Any]:
        c = self.cfg
        self.log(f"training, batch {c.train_batch}: {', '.join(c.train_modes)}")
        return train.bench_train(*self.models, batch=c.train_batch, length=c.tokens, timing=c.train_timing, modes=c.train_modes)  # fmt: skip

    def torch(self) -> dict[str, Any]:
        from mlx_caption.bench import scripts

        cfg = self.cfg
        if not self.bridge:
            return {"skipped": "needs torch (and --no-bridge was not given)"}
        if scripts.load_script("torch_twin") is None:
            return {"skipped": f"{scripts.script_path('torch_twin')} not found"}
        self.log(f"training against the PyTorch twin: batches {list(cfg.torch_batches)}")
        model, bridge_model = self.models
        out = train.bench_train_torch(
            model, batches=cfg.torch_batches, length=cfg.tokens, timing=cfg.train_timing,
            torch_compile=cfg.torch_compile,
        )  # fmt: skip
        self.log(f"fine-tuning against the PyTorch twin: batch {cfg.finetune_batch}")
        out["finetune"] = train.bench_finetune_torch(
            model, bridge_model, batch=cfg.finetune_batch, length=cfg.tokens,
            timing=cfg.train_timing,
        )  # fmt: skip
        return out

    def memory(self) -> dict[str, Any]:
        cfg = self.cfg
        self.log(f"fine-tuning peak memory with and without checkpointing: {cfg.memory_batches}")
        out = train.checkpoint_memory(self.models[0], batches=cfg.memory_batches, length=cfg.tokens)
        out["fractions"] = {str(r["batch"]): r["fraction"] for r in out["rows"]}
        return out

    def data(self) -> dict[str, Any]:
        from mlx_caption.bench.data import bench_data

        self.log("data: mlx-data stream against a Pillow loop")
        return bench_data(**self.cfg.data)

    def captioners(self) -> dict[str, Any]:
        from mlx_caption.bench.captioners import bench_captioners

        cfg = self.cfg
        if not self.bridge:
            return {"skipped": "transformers' generate is the other side: needs torch"}
        self.log(f"pretrained captioners against transformers: {', '.join(cfg.captioners)}")
        return bench_captioners(
            cfg.captioners, batches=cfg.captioner_batches, num_beams=cfg.num_beams,
            tokens=cfg.tokens, timing=cfg.captioner_timing, configs=cfg.captioner_configs,
            log=self.log,
        )  # fmt: skip

    def demo(self) -> dict[str, Any]:
        from mlx_caption.bench.demo import bench_demo

        demo = self.cfg.demo
        self.log(f"demo: {demo['steps']} steps, seeds {demo['seeds']}")
        return bench_demo(**demo, out_dir=None if self.out is None else self.out / "demo")

    def profile(self) -> dict[str, Any]:
        from mlx_caption.bench.profile import capture_metal_trace, profile_stages

        cfg = self.cfg
        self.log("profile: per-stage breakdown")
        model = self.models[0]
        prof = profile_stages(
            model, batch=cfg.profile_batch, num_beams=cfg.num_beams, length=cfg.tokens,
            repeats=max(1, cfg.timing.repeats // 2),
        )  # fmt: skip
        if self.out is not None:
            prof["metal"] = capture_metal_trace(model, self.out)
            self.log(f"metal trace: {prof['metal']}")
        return prof


def _on_gpu() -> bool:
    from mlx_caption import backend

    return backend.on_gpu()


def run_suite(
    cfg: SuiteConfig,
    log: Callable[[str], None] = _log,
    bridge: bool = True,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run the configured sections; returns the results dict (see the module docstring).

    With ``cfg.profile`` and an ``out_dir``, a Metal GPU trace is written there on a Mac.
    """
    from mlx_caption.bench import report
    from mlx_caption.bench.system import system_info, torch_threads
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
            k: (str(v) if not isinstance(v, (int, float, str, bool, list, tuple, dict)) else v)
            for k, v in dataclasses.asdict(cfg).items()
            if k not in ("encoder_configs", "captioner_configs")
        },
    }
    run = _Run(cfg, log, bridge, None if out_dir is None else Path(out_dir))
    # Each section runs until the next one starts (model building counts to the section that
    # first needs the model).
    section_seconds: dict[str, float] = {}
    for section in [s for s in SECTIONS if s in cfg.sections] + (
        ["profile"] if cfg.profile else []
    ):
        begun = time.perf_counter()
        results[section] = getattr(run, section)()
        section_seconds[section] = time.perf_counter() - begun

    if bridge:
        # The bridge sets torch's thread count when it is built: report what it ran with.
        results["system"]["threads"]["torch"] = torch_threads()
    results["goals"] = report.goals(results)
    try:
        results["load_end"] = list(os.getloadavg())
    except OSError:
        results["load_end"] = None
    results["elapsed_s"] = time.perf_counter() - start
    results["section_seconds"] = section_seconds
    return results


def merge_sections(results: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """``results`` with the sections it did not run taken from an ``earlier`` results dict
    (say, the demo's fixed-step quality figures beside a re-measured timing run). Each taken
    section is listed under ``merged`` with when that run was made and its machine's load,
    and the goals are computed again over the whole."""
    from mlx_caption.bench import report

    merged = dict(results.get("merged", {}))
    for section in SECTIONS:
        if section in results or section not in earlier:
            continue
        results[section] = earlier[section]
        source = earlier.get("merged", {}).get(section)
        merged[section] = source or {
            "time": earlier.get("system", {}).get("time"),
            "run": earlier.get("run"),
            "load_average": earlier.get("system", {}).get("load_average"),
            "load_end": earlier.get("load_end"),
        }
    if merged:
        results["merged"] = merged
    results["goals"] = report.goals(results)
    return results


def run_and_write(
    cfg: SuiteConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = _log,
    bridge: bool = True,
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`run_suite`, then the JSON, markdown and PNG files (and a Metal trace on a Mac);
    with ``earlier`` (a results dict), the sections not run here are taken from it
    (:func:`merge_sections`)."""
    from mlx_caption.bench import report

    results = run_suite(cfg, log=log, bridge=bridge, out_dir=out_dir)
    if earlier:
        results = merge_sections(results, earlier)
    stem = "bench" if cfg.name == "full" else f"bench_{cfg.name}"
    report.write_results(results, Path(out_dir), stem=stem)
    return results
