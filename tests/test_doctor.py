"""The BLAS loader's control knobs and `mlx-caption doctor`, run in fresh subprocesses."""

import json
import os
import subprocess
import sys

import pytest

from mlx_caption import backend
from mlx_caption.cli import main


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_doctor_json_reports_device_blas_and_speed(capsys):
    assert main(["doctor", "--json", "--matmul-size", "256"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["mlx"]
    assert "cpu" in report["device"] or "gpu" in report["device"]
    assert report["matmul_float32_gflops"] > 0
    assert report["blas"]["loaded_by_mlx_caption"] == backend.status().loaded
    assert isinstance(report["advice"], list)


def test_blas_off_leaves_reference_blas():
    out = _python(
        "import mlx_caption; from mlx_caption import backend; print(backend.status().reason)",
        MLX_CAPTION_BLAS="off",
    )
    assert out.returncode == 0, out.stderr
    assert "disabled" in out.stdout


def test_explicit_bad_path_warns_and_keeps_going():
    out = _python(
        "import mlx_caption; from mlx_caption import backend; print(backend.status().loaded)",
        MLX_CAPTION_BLAS="/nonexistent/libblas.so",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    assert "could not be loaded" in out.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the loader only acts on Linux")
def test_warns_when_mlx_core_was_imported_first():
    out = _python(
        "import mlx.core; import mlx_caption; from mlx_caption import backend; print(backend.status().reason)"
    )
    assert out.returncode == 0, out.stderr
    assert "too late" in out.stdout
    assert "too late" in out.stderr


def test_advice_names_missing_pieces():
    report = {
        "device": "Device(cpu, 0)",
        "blas": {"loaded_by_mlx_caption": None},
        "mlx_data": None,
        "torch": None,
        "transformers": None,
        "java": {"available": False},
        "streamlit": None,
    }
    from mlx_caption.commands.doctor import advice

    tips = " ".join(advice(report))
    assert "mlx-data" in tips and "torch" in tips and "Java" in tips and "Streamlit" in tips
    if sys.platform == "linux":
        assert "libopenblas0-pthread" in tips
