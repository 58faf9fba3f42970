"""The benchmark harness on tiny random models: structure, files and keys (no timed assertions)."""

import dataclasses
import json
import time

import mlx.core as mx
import numpy as np
import pytest
from prerequisites import require_module

from mlx_caption.bench import report, timing
from mlx_caption.bench.encoder import TINY, encoder_config, vit_flops, zoo_shapes
from mlx_caption.bench.suite import (
    SECTIONS,
    SuiteConfig,
    merge_sections,
    run_and_write,
    run_suite,
)
from mlx_caption.cli import main

require_module("torch", "torch (the [torch] extra)")
require_module("transformers", "transformers (the [torch] extra)")


def test_vit_flops_counts_matmuls():
    b32 = encoder_config("clip-vit-base-patch32")
    # 49 patches of 32x32x3 -> 768, then 12 blocks on 50 tokens, 2 flops per multiply-add
    patch = 2 * 49 * 3072 * 768
    block = 2 * 50 * (4 * 768 * 768 + 2 * 768 * 3072) + 2 * 2 * 50 * 50 * 768
    assert vit_flops(b32) == patch + 12 * block
    assert vit_flops(b32, batch=4) == 4 * vit_flops(b32)
    assert 8.8e9 < vit_flops(b32) < 8.9e9
    b16 = encoder_config("clip-vit-base-patch16")
    assert 3.9 * vit_flops(b32) < vit_flops(b16) < 4.1 * vit_flops(b32)


def test_zoo_shapes_one_per_family_and_architecture_within_the_budget():
    shapes = zoo_shapes()
    # LAION's ViT-B/32 is OpenAI's shape, SigLIP 2's and the other resolutions are SigLIP's,
    # DINOv2 with registers is DINOv2's; of the large towers only CLIP's ViT-L/14 is kept.
    assert list(shapes) == [
        "clip-vit-base-patch32",
        "clip-vit-base-patch16",
        "clip-vit-large-patch14",
        "siglip-base-patch16-224",
        "dinov2-small",
        "dinov2-base",
        "vit-base-patch16-224-in21k",
    ]
    assert all(getattr(c, "projection_dim", None) is None for c in shapes.values())
    assert not shapes["siglip-base-patch16-224"].vision_use_head
    every = zoo_shapes(max_gflop=None, large_gflop=None)
    assert {"siglip-large-patch16-256", "dinov2-large", "siglip-so400m-patch14-384"} <= set(every)
    assert "clip-vit-large-patch14-336" not in every  # ViT-L/14's architecture at 336 px
    with pytest.raises(ValueError, match="no encoder"):
        encoder_config("nope")


def test_measure_interleaved_round_robin():
    calls = []
    out = timing.measure_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b") or mx.zeros(3)},
        warmup=1,
        repeats=3,
    )
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert [len(t.times) for t in out.values()] == [3, 3]
    assert out["a"].median > 0 and out["a"].rate(10) == pytest.approx(10 / out["a"].median)
    assert np.isnan(timing.ratio(1.0, 0.0))


def test_measure_interleaved_min_seconds_adds_rounds():
    """Past ``repeats``, rounds go on until they have lasted ``min_seconds``, up to a cap."""

    def nap():
        time.sleep(0.01)

    out = timing.measure_interleaved({"a": nap, "b": nap}, warmup=0, repeats=2, min_seconds=0.2)
    rounds = len(out["a"].times)
    assert rounds == len(out["b"].times) and rounds > 2  # 2 rounds take ~0.04 s
    spent = sum(out["a"].times) + sum(out["b"].times)
    assert spent >= 0.2 and spent - 2 * max(out["a"].times + out["b"].times) < 0.2
    out = timing.measure_interleaved({"a": lambda: None}, warmup=0, repeats=1, min_seconds=1e9)
    assert len(out["a"].times) == timing.MAX_ROUNDS


def test_goals_from_results():
    res = {
        "encoder": {
            "ratio": 1.5,
            "ratio_ceiling": 1.6,
            "min_ratio": 0.9,
            "min_ratio_ceiling": 1.1,
            "mlx_peak_fraction": 0.4,
            "peak_row": {"mlx_peak_fraction": 0.8},
        },
        "decode": {"kv_cache_speedup": 3.2},
        "train": {"compile_speedup": float("nan")},
        "memory": {"fractions": {"16": 0.7, "32": 0.55}},
    }
    by_key = {g["key"]: g for g in report.goals(res)}
    assert by_key["encoder.ratio"]["met"] is True
    # A ceiling below the target says the goal is out of reach on this machine.
    assert (by_key["encoder.ratio"]["ceiling"], by_key["encoder.ratio"]["reachable"]) == (1.6, True)
    low = by_key["encoder.min_ratio"]
    assert (low["met"], low["ceiling"], low["reachable"]) == (False, 1.1, False)
    assert "ceiling" not in by_key["e2e.ratio"]
    assert by_key["encoder.mlx_peak_fraction"]["met"] is False
    assert by_key["encoder.peak_row.mlx_peak_fraction"]["met"] is True
    assert by_key["decode.kv_cache_speedup"]["met"] is True
    assert by_key["train.compile_speedup"]["met"] is None
    assert by_key["e2e.ratio"]["value"] is None
    # Memory targets are upper bounds.
    assert by_key["memory.fractions.16"]["met"] is False
    assert by_key["memory.fractions.32"]["met"] is True
    assert by_key["demo.min_pair_score"]["met"] is None


def test_cli_sections_are_the_suites():
    from mlx_caption.commands.bench import SECTION_NAMES

    assert SECTION_NAMES == SECTIONS


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg = dataclasses.replace(SuiteConfig.tiny(), profile=True)
    return run_and_write(cfg, out, log=lambda msg: None), out


def test_tiny_suite_structure(tiny_run):
    res, _ = tiny_run
    for key in ("mlx_images_per_s", "bridge_images_per_s", "ratio", "mlx_peak_fraction"):
        assert res["encoder"][key] > 0
    assert (res["encoder"]["model"], res["encoder"]["batch"]) == ("tiny", 2)
    rows = res["encoder"]["rows"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert rows[0]["gflop_per_image"] == pytest.approx(vit_flops(TINY) / 1e9)
    assert res["encoder"]["half"][0]["skipped"]  # CPU: half precision is skipped with a note
    assert res["encoder"]["min_ratio"] == min(r["ratio"] for r in rows)
    for r in rows:  # the ratio at MLX's matmul peak: torch's share of that peak, inverted
        assert r["ratio_ceiling"] == pytest.approx(1 / r["bridge_peak_fraction"])
    assert res["encoder"]["min_ratio_ceiling"] == min(r["ratio_ceiling"] for r in rows)
    assert res["encoder"]["peak_row"]["batch"] == 2
    assert res["e2e"]["ratio"] > 0 and res["e2e"]["same_captions"] is True
    cap = res["captioners"]
    assert (cap["model"], cap["batch"], cap["same_captions"]) == ("blip-base", 2, True)
    assert [(r["model"], r["family"], r["batch"]) for r in cap["rows"]] == [
        ("blip-base", "blip", 1), ("blip-base", "blip", 2),
        ("git-base-coco", "git", 1), ("git-base-coco", "git", 2),
        ("vit-gpt2", "vit_gpt2", 1), ("vit-gpt2", "vit_gpt2", 2),
    ]  # fmt: skip
    assert cap["min_ratio"] == min(r["ratio"] for r in cap["rows"] if r["batch"] == 2)
    for row in cap["rows"]:
        assert row["mlx_captions_per_s"] > 0 and row["transformers_captions_per_s"] > 0
        assert row["mlx_peak_memory_mb"] > 0 and row["tokens"] == 8
    assert res["decode"]["kv_cache_speedup"] > 0 and res["decode"]["same_tokens"] is True
    assert res["train"]["compile_speedup"] > 0
    modes = res["train"]["modes"]
    assert set(modes) == {
        "frozen_cached",
        "frozen_cached_uncompiled",
        "frozen_live",
        "bridge",
        "finetune",
        "finetune_checkpoint",
    }
    assert all(m["steps_per_s"] > 0 for m in modes.values())
    assert modes["finetune"]["peak_memory_mb"] > 0
    assert res["data"]["stream_images_per_s"] > 0
    race = res["torch"]
    assert [r["batch"] for r in race["rows"]] == [2, 4]
    assert all(r["mlx_steps_per_s"] > 0 and r["torch_steps_per_s"] > 0 for r in race["rows"])
    assert race["min_ratio"] == min(r["ratio"] for r in race["rows"])
    assert race["finetune"]["ratio"] > 0
    mem = res["memory"]["rows"][0]
    assert mem["with_peak_mb"] > mem["with_resting_mb"] > 0
    assert res["memory"]["fractions"]["2"] == pytest.approx(
        mem["with_peak_mb"] / mem["without_peak_mb"]
    )
    stages = res["profile"]["stages_s"]
    assert {"preprocessing", "patch embedding", "MLP activation", "decoder steps"} <= set(stages)
    assert sum(res["profile"]["stages_fraction"].values()) == pytest.approx(1.0)
    assert "skipped" in res["profile"]["metal"]  # no Metal here
    sysinfo = res["system"]
    assert sysinfo["versions"]["mlx"] and sysinfo["cpu_count"] >= 1
    assert "blas" in sysinfo and "threads" in sysinfo and sysinfo["cpu_model"]
    assert [g["key"] for g in res["goals"]] == [g[0] for g in report.GOALS]


def test_tiny_suite_files(tiny_run):
    res, out = tiny_run
    saved = json.loads((out / "bench_tiny.json").read_text())
    assert saved["encoder"]["ratio"] == pytest.approx(res["encoder"]["ratio"])
    md = (out / "bench_tiny.md").read_text()
    for heading in (
        "## Goals",
        "## Encoder",
        "## End to end",
        "## Decoding",
        "## Training",
        "## Training against PyTorch",
        "## Fine-tuning memory",
        "## Pretrained captioners",
    ):
        assert heading in md
    assert "## Where the time goes" in md and "MLP activation" in md
    lowest = next(line for line in md.splitlines() if line.startswith("| encoder MLX / torch, low"))
    assert lowest.endswith(f"| {report._f(res['encoder']['min_ratio_ceiling'])} |")
    for png in ("bench_tiny.png", "bench_tiny_profile.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000


def test_mlx_only_without_bridge():
    cfg = dataclasses.replace(SuiteConfig.tiny(), sections=("encoder", "decode"))
    res = run_suite(cfg, log=lambda msg: None, bridge=False)
    assert res["bridge"] is False
    assert res["encoder"]["mlx_images_per_s"] > 0
    assert res["encoder"]["bridge_images_per_s"] is None
    assert "bridge_images_per_s" not in res["encoder"]["rows"][0]
    assert "e2e" not in res and res["decode"]["kv_cache_speedup"] > 0


def test_cli_json_last_line(tmp_path, capsys):
    code = main(
        ["bench", "--tiny", "--only", "encoder", "--repeats", "1", "--json", "--out", str(tmp_path)]
    )
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    res = json.loads(last)
    assert {"mlx_images_per_s", "bridge_images_per_s", "ratio"} <= set(res["encoder"])
    assert res["files"]["json"].endswith("bench_tiny.json")
    assert (tmp_path / "bench_tiny.md").is_file()


def test_merge_takes_the_sections_not_run_with_where_they_came_from():
    earlier = {
        "system": {"time": "2026-01-01T00:00:00", "load_average": [0.1, 0.1, 0.1]},
        "run": "full",
        "load_end": [0.2, 0.2, 0.2],
        "encoder": {"ratio": 0.5},
        "demo": {"steps": 1400, "seeds": [0], "runs": [], "min_pair_score": 0.93},
    }
    now = {"system": {"time": "2026-01-02T00:00:00"}, "encoder": {"ratio": 1.4}}
    merged = merge_sections(now, earlier)
    assert merged["encoder"]["ratio"] == 1.4  # what this run measured is kept
    assert merged["demo"] == earlier["demo"]
    assert merged["merged"] == {
        "demo": {
            "time": "2026-01-01T00:00:00",
            "run": "full",
            "load_average": [0.1, 0.1, 0.1],
            "load_end": [0.2, 0.2, 0.2],
        }
    }
    by_key = {g["key"]: g for g in merged["goals"]}
    assert by_key["demo.min_pair_score"]["met"] is True and by_key["encoder.ratio"]["met"]
    assert "section `demo` taken from the full run of 2026-01-01" in report.markdown(merged)
    # Merged again, a section keeps the run it was measured in.
    again = merge_sections({"system": {"time": "2026-01-03"}}, merged)
    assert again["merged"]["demo"]["time"] == "2026-01-01T00:00:00"


def test_cli_merge_with_refuses_what_is_not_a_results_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    args = ["bench", "--tiny", "--only", "data", "--out", str(tmp_path)]
    assert main([*args, "--merge-with", str(bad)]) == 2
    assert "not a bench results file" in capsys.readouterr().err
    assert main([*args, "--merge-with", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_encoders_are_checked_against_the_zoo(tmp_path, capsys):
    args = ["bench", "--tiny", "--only", "encoder", "--out", str(tmp_path)]
    assert main([*args, "--encoders", "clip-vit-base-patch32", "nope"]) == 2
    assert "no encoder 'nope' in the zoo" in capsys.readouterr().err


def test_cli_rejects_bad_repeats(tmp_path, capsys):
    assert main(["bench", "--tiny", "--repeats", "0", "--out", str(tmp_path)]) == 2
    assert "--repeats" in capsys.readouterr().err


def test_sections_skip_without_their_scripts(monkeypatch, tmp_path):
    from mlx_caption.bench import data, scripts

    monkeypatch.setattr(scripts, "FOLDER", tmp_path)
    assert "skipped" in data.bench_data(images=4)
    cfg = dataclasses.replace(SuiteConfig.tiny(), sections=("torch",))
    assert "skipped" in run_suite(cfg, log=lambda msg: None)["torch"]


# ------------------------------------------------------------ library fast paths found here


def test_fast_softmax_matches_softmax_and_its_gradient():
    from mlx_caption.models.layers.activations import fast_softmax

    s = mx.random.normal((4, 3, 7, 50), key=mx.random.key(0)) * 6
    s = mx.concatenate([s, mx.full((4, 3, 7, 2), -mx.inf)], axis=-1)  # masked keys
    ref = mx.softmax(s, axis=-1, precise=True)
    out = fast_softmax(s)
    assert mx.abs(out - ref).max().item() < 2e-6
    assert mx.all(out[..., -2:] == 0).item()
    g = mx.random.normal(s.shape, key=mx.random.key(1))
    ref_g = mx.vjp(lambda x: mx.softmax(x, axis=-1, precise=True), [s], [g])[1][0]
    out_g = mx.vjp(fast_softmax, [s], [g])[1][0]
    finite = mx.isfinite(s)
    assert mx.abs(mx.where(finite, out_g - ref_g, 0)).max().item() < 2e-6


def test_vit_gradients_with_fast_attention_match_mlx_softmax(monkeypatch):
    from mlx.utils import tree_flatten

    from mlx_caption.models.clip import CLIPVisionModel
    from mlx_caption.models.layers import attention as attention_mod

    mx.random.seed(0)
    model = CLIPVisionModel(TINY)
    x = mx.random.normal((2, 64, 64, 3))

    def loss(params):
        model.update(params)
        return (model(x).last_hidden_state ** 2).mean()

    params = model.trainable_parameters()
    fast = dict(tree_flatten(mx.grad(loss)(params)))

    def plain(q, k, v, scale, mask=None):  # the reference: MLX's own softmax
        return mx.softmax((q * scale) @ k.swapaxes(-1, -2), axis=-1, precise=True) @ v

    monkeypatch.setattr(attention_mod, "scaled_dot_product_attention", plain)
    ref = dict(tree_flatten(mx.grad(loss)(params)))
    for k, g in ref.items():
        assert mx.allclose(fast[k], g, atol=1e-5, rtol=1e-4).item(), k


def test_ops_experiments_tiny(tmp_path, capsys):
    assert main(["bench", "--ops", "--tiny", "--json", "--out", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = [row["experiment"] for row in res["experiments"]]
    assert {"softmax", "attention core", "quick_gelu", "patch embedding"} <= set(names)
    assert {"kernel boundary", "cross-entropy value and gradient", "attention chunks"} <= set(names)
    for row in res["experiments"]:
        if row["experiment"] in (
            "kernel boundary",
            "cross-entropy value and gradient",
            "attention chunks",
        ):
            assert row["max_abs_diff"] < 1e-4, row
    soft = next(r for r in res["experiments"] if r["experiment"] == "softmax")
    assert soft["max_abs_diff"] < 1e-5 and set(soft["ms"]) == {"mx.softmax", "fast_softmax"}
    conv = next(r for r in res["experiments"] if r["experiment"] == "conv stem gradient")
    assert conv["max_abs_diff"] < 1e-4 and len(conv["ms"]) == 3
    mem = next(r for r in res["experiments"] if r["experiment"] == "checkpoint memory")
    assert len(mem["peak_mb"]) == 4
    assert "# Op-level experiments" in (tmp_path / "ops_tiny.md").read_text()


def test_demo_section_trains_a_fixed_number_of_steps(tmp_path):
    from mlx_caption.bench.demo import bench_demo

    res = bench_demo(steps=3, seeds=[0, 1], images=200, test_images=4, out_dir=tmp_path)
    assert [r["steps"] for r in res["runs"]] == [3, 3]
    assert 0.0 <= res["min_pair_score"] <= 1.0
    assert res["min_pair_score"] == min(
        min(r["pair_recall"], r["pair_precision"]) for r in res["runs"]
    )
    # The second seed reuses the first one's generated images.
    assert (tmp_path / "seed1" / "train" / "data").is_symlink()


def test_half_precision_section_runs_where_a_gpu_would(monkeypatch):
    """The GPU path of the half-precision rows, exercised on the CPU (tiny shapes)."""
    from mlx_caption.bench import encoder

    monkeypatch.setattr(encoder, "half_precision_note", lambda: None)
    row = encoder.bench_half("tiny", 2, cfg=TINY, timing=timing.TimingOptions(repeats=1))
    assert row["dtype"] == "float16" and "skipped" not in row
    assert row["mlx_images_per_s"] > 0 and row["torch_images_per_s"] > 0 and row["ratio"] > 0
