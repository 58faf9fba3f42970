"""scripts/device_bench.sh without a GPU: it joins split wheels, installs them, says there is
no GPU, runs its CPU checks and exits 0."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_bench.sh"


def _wheel(folder: Path) -> Path:
    """A minimal valid wheel of a package named ``split_probe``."""
    name, version = "split_probe", "0.1"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "JOINED = True\n" + "# padding\n" * 400,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, text in files.items():
            zf.writestr(arcname, text)
    return path


def test_no_gpu_path_joins_installs_and_exits_zero(tmp_path):
    wheels, site, out = tmp_path / "whl", tmp_path / "site", tmp_path / "out"
    wheels.mkdir()
    whole = _wheel(wheels).read_bytes()
    (wheels / "split_probe-0.1-py3-none-any.whl").unlink()
    size = len(whole) // 3 + 1  # arrives in three parts, as a 45 MiB split would
    for i, suffix in enumerate(("part-aa", "part-ab", "part-ac")):
        (wheels / f"split_probe-0.1-py3-none-any.whl.{suffix}").write_bytes(
            whole[i * size : (i + 1) * size]
        )
    env = {**os.environ, "WHEELS": str(wheels), "SITE": str(site), "PYTHON": sys.executable}
    run = subprocess.run(
        ["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no GPU here" in run.stderr
    assert (wheels / "split_probe-0.1-py3-none-any.whl").read_bytes() == whole
    assert (site / "split_probe" / "__init__.py").read_text().startswith("JOINED = True")
    report = json.loads((out / "device_bench.json").read_text())
    assert report["steps"]["total"]["status"] == "no GPU"
    assert report["steps"]["cpu_checks"]["status"] == "ok"
    assert report["devices"]["mlx_gpu"] is False
    assert (out / "bench_tiny.md").is_file() and (out / "device_bench.log").is_file()
