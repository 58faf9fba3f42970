"""scripts/install_system_deps.sh: --test refuses to go on without Java or Chromium; plain does not.

Run where it installs nothing: a fake ``uname`` says Darwin, so the script only checks what is
there, and a fake ``java`` decides whether Java works.
"""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_system_deps.sh"
CHROMIUM = Path("/usr/bin/chromium")  # where the script (and tests/test_browser.py) look


def _run(tmp_path: Path, *args: str, java_works: bool) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in [("uname", "echo Darwin"), ("java", f"exit {0 if java_works else 1}")]:
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_test_mode_fails_without_java(tmp_path):
    result = _run(tmp_path, "--test", java_works=False)
    assert result.returncode == 1
    assert "the tests need a working java" in result.stderr


@pytest.mark.parametrize("java_works", [False, True])
def test_plain_mode_does_not_need_what_only_tests_use(tmp_path, java_works):
    result = _run(tmp_path, java_works=java_works)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_test_mode_needs_chromium_too(tmp_path):
    result = _run(tmp_path, "--test", java_works=True)
    if CHROMIUM.exists():
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert f"the tests need {CHROMIUM}" in result.stderr
