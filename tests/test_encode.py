"""`mlx-caption encode`: token grids of image files in a safetensors file."""

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from clip_fixtures import save_hf_clip
from PIL import Image
from safetensors import safe_open

from mlx_caption.cli import main
from mlx_caption.data.preprocess import preprocess_paths
from mlx_caption.loading import convert, load_encoder

REPO = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (48 + 8 * i, 80, 3), dtype=np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


def test_encode_writes_grids_in_order(tmp_path, capsys):
    src = save_hf_clip(tmp_path / "src", kind="vision_proj", geometry="tiny")
    convert(src, tmp_path / "enc")
    paths = make_images(tmp_path / "imgs", 5)
    out = tmp_path / "feats.safetensors"
    args = ["encode", "--weights", str(tmp_path / "enc"), *paths, "--out", str(out)]
    assert main([*args, "--batch-size", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["last_hidden_state"] == [5, 17, 32] and summary["pooler_output"] == [5, 32]
    with safe_open(str(out), framework="numpy") as f:
        assert json.loads(f.metadata()["images"]) == paths
        hidden = f.get_tensor("last_hidden_state")
        pooled = f.get_tensor("pooler_output")
    assert hidden.dtype == np.float32 and pooled.dtype == np.float32
    model = load_encoder(tmp_path / "enc")
    ref = model(mx.array(preprocess_paths(paths, model.config.preprocess)))
    assert np.abs(hidden - np.array(ref.last_hidden_state)).max() < 1e-5
    assert np.abs(pooled - np.array(ref.pooler_output)).max() < 1e-5


def test_encode_rejects_non_image(tmp_path, capsys):
    src = save_hf_clip(tmp_path / "src", kind="vision", geometry="tiny")
    convert(src, tmp_path / "enc")
    paths = make_images(tmp_path / "imgs", 1)
    bogus = tmp_path / "imgs" / "readme.txt"
    bogus.write_text("hello")
    out = tmp_path / "feats.safetensors"
    code = main(
        ["encode", "--weights", str(tmp_path / "enc"), paths[0], str(bogus), "--out", str(out)]
    )
    assert code == 2
    assert "readme.txt" in capsys.readouterr().err
    assert not out.exists()


def test_encode_subprocess_exit_code(tmp_path):
    src = save_hf_clip(tmp_path / "src", kind="vision", geometry="tiny")
    convert(src, tmp_path / "enc")
    bogus = tmp_path / "bad.jpg"
    bogus.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = subprocess.run(
        [sys.executable, "-m", "mlx_caption.cli", "encode", "--weights", str(tmp_path / "enc"),
         str(bogus), "--out", str(tmp_path / "o.safetensors")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "bad.jpg" in result.stderr
