"""Checkpoint conversion: every source layout, idempotence, atomic writes, refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from clip_fixtures import make_hf_clip, save_hf_clip, torch_vision_forward

from mlx_caption import bridge
from mlx_caption import loading as conv
from mlx_caption.cli import main
from mlx_caption.errors import UserError
from mlx_caption.files import sha256_file
from mlx_caption.loading import load_model as load_converted
from mlx_caption.models.clip import CLIPVisionModel

REPO = Path(__file__).resolve().parents[1]


def parity(folder: Path, torch_model) -> float:
    vit = load_converted(folder)
    size = vit.config.image_size
    pixels = np.random.default_rng(5).standard_normal((2, size, size, 3)).astype(np.float32)
    ref = torch_vision_forward(torch_model, pixels)
    out = vit(mx.array(pixels))
    diffs = [
        np.abs(np.array(out.last_hidden_state) - ref["last_hidden_state"]).max(),
        np.abs(np.array(out.pooler_output) - ref["pooler_output"]).max(),
    ]
    if "image_embeds" in ref:
        diffs.append(np.abs(np.array(out.image_embeds) - ref["image_embeds"]).max())
    return float(max(diffs))


def test_clip_model_pytorch_bin(tmp_path):
    src = save_hf_clip(tmp_path / "src", kind="clip", seed=3, safe_serialization=False)
    assert (src / "pytorch_model.bin").is_file()
    record = conv.convert(src, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "convert.json",
        "model.safetensors",
    ]
    weights = mx.load(str(out / "model.safetensors"))
    assert not any(k.startswith(("text_model", "vision_model", "logit")) for k in weights)
    assert "visual_projection.weight" in weights
    assert weights["embeddings.patch_embedding.weight"].shape == (32, 32, 32, 3)  # OHWI
    assert record["inputs"].keys() == {
        "config.json",
        "pytorch_model.bin",
        "preprocessor_config.json",
    }
    assert record["output"]["model.safetensors"] == sha256_file(out / "model.safetensors")
    assert parity(out, make_hf_clip("clip", seed=3)) < 1e-4


def test_vision_with_projection_sharded_safetensors(tmp_path):
    src = save_hf_clip(
        tmp_path / "src", kind="vision_proj", seed=4, geometry="B/16", max_shard_size="60KB"
    )
    assert (src / "model.safetensors.index.json").is_file()
    assert len(list(src.glob("model-*.safetensors"))) > 1
    conv.convert(src, tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["projection_dim"] == 16 and cfg["patch_size"] == 16
    assert parity(tmp_path / "out", make_hf_clip("vision_proj", seed=4, geometry="B/16")) < 1e-4


def test_vision_model_without_projection_and_preprocessor(tmp_path):
    pre = {"size": {"shortest_edge": 256}, "resample": 2, "image_mean": [0.5, 0.5, 0.5]}
    src = save_hf_clip(tmp_path / "src", kind="vision", seed=6, preprocessor=pre)
    conv.convert(src, tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["projection_dim"] is None
    assert cfg["preprocess"]["resize_shortest_edge"] == 256
    assert cfg["preprocess"]["crop_size"] == 224
    assert cfg["preprocess"]["resample"] == "bilinear"
    assert cfg["preprocess"]["image_mean"] == [0.5, 0.5, 0.5]
    assert parity(tmp_path / "out", make_hf_clip("vision", seed=6)) < 1e-4


def test_idempotent_and_reconvert(tmp_path):
    src = save_hf_clip(tmp_path / "src", kind="vision_proj", seed=7)
    conv.convert(src, tmp_path / "a")
    conv.convert(src, tmp_path / "b")
    conv.convert(tmp_path / "a", tmp_path / "c")  # an already converted folder
    conv.convert(tmp_path / "c", tmp_path / "c")  # in place
    blobs = {n: (tmp_path / n / "model.safetensors").read_bytes() for n in "abc"}
    assert blobs["a"] == blobs["b"] == blobs["c"]
    assert json.loads((tmp_path / "c" / "config.json").read_text()) == json.loads(
        (tmp_path / "a" / "config.json").read_text()
    )
    record = json.loads((tmp_path / "c" / "convert.json").read_text())
    assert record["source_kind"] == "converted" and record["original_source"] == str(src)
    # sanitize is idempotent on the raw tensors too.
    raw = {k: np.array(v) for k, v in mx.load(str(src / "model.safetensors")).items()}
    once = CLIPVisionModel.sanitize(raw)
    twice = CLIPVisionModel.sanitize(once)
    assert once.keys() == twice.keys()
    assert all(np.array_equal(once[k], twice[k]) for k in once)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_half_precision(tmp_path):
    src = save_hf_clip(tmp_path / "src", kind="vision", seed=8)
    conv.convert(src, tmp_path / "out", dtype="float16")
    weights = mx.load(str(tmp_path / "out" / "model.safetensors"))
    assert all(v.dtype == mx.float16 for v in weights.values())
    assert json.loads((tmp_path / "out" / "convert.json").read_text())["dtype"] == "float16"
    vit = load_converted(tmp_path / "out")
    assert vit.embeddings.class_embedding.dtype == mx.float16


def test_verify_cli(tmp_path, capsys):
    src = save_hf_clip(tmp_path / "src", kind="vision_proj", seed=9)
    code = main(
        ["convert", "--model", str(src), "--out", str(tmp_path / "out"), "--verify", "--json"]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= record["verify_max_abs_diff"] < 1e-4


def test_verify_failure_leaves_nothing(tmp_path, monkeypatch, capsys):
    src = save_hf_clip(tmp_path / "src", kind="vision", seed=10)
    conv.convert(src, tmp_path / "out")
    before = (tmp_path / "out" / "model.safetensors").read_bytes()

    def broken(ckpt, folder, dtype):
        raise UserError("verification failed: max abs difference 1 against transformers")

    monkeypatch.setattr(bridge, "verify_conversion", broken)
    code = main(["convert", "--model", str(src), "--out", str(tmp_path / "out"), "--verify"])
    assert code == 2 and "verification failed" in capsys.readouterr().err
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert main(["convert", "--model", str(src), "--out", str(tmp_path / "new"), "--verify"]) == 2
    assert not (tmp_path / "new").exists()


def test_verify_compares_with_the_source_checkpoint(tmp_path, capsys):
    """A key-mapping error (two same-shaped tensors swapped, as a converter bug would leave
    them) passes a check that rebuilds torch from the converted weights; --verify loads the
    source checkpoint with transformers instead, and refuses it."""
    src = save_hf_clip(tmp_path / "src", kind="vision", seed=12)
    conv.convert(src, tmp_path / "out")
    path = tmp_path / "out" / "model.safetensors"
    weights = dict(mx.load(str(path)))
    a, b = "encoder.layers.0.mlp.fc1.weight", "encoder.layers.1.mlp.fc1.weight"
    weights[a], weights[b] = weights[b], weights[a]
    mx.save_safetensors(str(path), weights)
    again = ["convert", "--model", str(tmp_path / "out"), "--verify"]
    assert main([*again, "--out", str(tmp_path / "again")]) == 2
    assert "verification failed" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()
    # The same folder before the swap verifies against the same source.
    conv.convert(src, tmp_path / "out")
    assert main([*again, "--out", str(tmp_path / "again"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["original_source"] == str(src) and record["verify_max_abs_diff"] < 1e-4


def _expect_refusal(capsys, args, *fragments):
    assert main(["convert", *args]) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err


def test_refusals(tmp_path, capsys):
    out = str(tmp_path / "out")
    _expect_refusal(capsys, ["--model", str(tmp_path / "nowhere"), "--out", out], "not found")

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    _expect_refusal(
        capsys, ["--model", str(bert), "--out", out], "unsupported architecture", "bert", "clip"
    )

    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    _expect_refusal(capsys, ["--model", str(empty), "--out", out], "no weights")

    src = save_hf_clip(tmp_path / "src", kind="vision", seed=11)
    blob = (src / "model.safetensors").read_bytes()

    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "config.json").write_bytes((src / "config.json").read_bytes())
    (trunc / "model.safetensors").write_bytes(blob[: len(blob) - 1000])
    _expect_refusal(capsys, ["--model", str(trunc), "--out", out], "truncated", "model.safetensors")

    (trunc / "model.safetensors").write_bytes(b"\x00" * 64)
    _expect_refusal(capsys, ["--model", str(trunc), "--out", out], "corrupt")

    weights = {k: np.array(v) for k, v in mx.load(str(src / "model.safetensors")).items()}
    missing = {k: mx.array(v) for k, v in weights.items() if "layers.1.mlp.fc2.bias" not in k}
    mx.save_safetensors(str(trunc / "model.safetensors"), missing)
    _expect_refusal(capsys, ["--model", str(trunc), "--out", out], "missing tensor", "fc2.bias")

    wrong = {k: mx.array(v) for k, v in weights.items()}
    wrong["encoder.layers.0.mlp.fc1.weight"] = mx.zeros((65, 32))
    mx.save_safetensors(str(trunc / "model.safetensors"), wrong)
    _expect_refusal(capsys, ["--model", str(trunc), "--out", out], "fc1.weight", "(65, 32)")

    # A config that disagrees with the tensors is caught the same way.
    cfg = json.loads((src / "config.json").read_text())
    cfg["hidden_size"] = 48
    (trunc / "config.json").write_text(json.dumps(cfg))
    (trunc / "model.safetensors").write_bytes(blob)
    _expect_refusal(capsys, ["--model", str(trunc), "--out", out], "shape")

    not_ours = tmp_path / "precious"
    not_ours.mkdir()
    (not_ours / "notes.txt").write_text("keep me")
    _expect_refusal(capsys, ["--model", str(src), "--out", str(not_ours)], "not touching")
    assert (not_ours / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "out").exists()


def test_pytorch_bin_without_torch(tmp_path, monkeypatch):
    src = save_hf_clip(tmp_path / "src", kind="vision", safe_serialization=False)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(UserError, match="torch extra"):
        conv.convert(src, tmp_path / "out")


def test_hub_id_download_is_filtered(tmp_path, monkeypatch):
    src = save_hf_clip(tmp_path / "src", kind="vision")
    calls = []

    def fake_snapshot(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(src)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    conv.convert("someone/tiny-clip", tmp_path / "out")
    assert calls[0][0] == "someone/tiny-clip"
    assert "model.safetensors" in calls[0][1] and "*.bin" not in calls[0][1]
    assert not any("h5" in p or "msgpack" in p for p in calls[0][1])
    record = json.loads((tmp_path / "out" / "convert.json").read_text())
    assert record["source_kind"] == "hub"


def test_script_runs_as_subprocess(tmp_path):
    src = save_hf_clip(tmp_path / "src", kind="vision")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "convert" / "clip_to_mlx.py"), "--model", str(src),
         "--out", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["dtype"] == "float32"
    bad = subprocess.run(
        [sys.executable, str(REPO / "convert" / "clip_to_mlx.py"), "--model",
         str(tmp_path / "missing"), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "not found" in bad.stderr
