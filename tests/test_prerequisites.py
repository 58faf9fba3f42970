"""tests/prerequisites.py: a missing prerequisite skips here and fails under CI=true."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prerequisites import in_ci

TESTS_DIR = Path(__file__).resolve().parent

# One test per form of the helper, each needing something this machine cannot have.
NEEDY_TESTS = """
import pytest
from prerequisites import require, require_module, requires


@pytest.fixture
def unicorn():
    raise AssertionError("the fixture ran although its prerequisite is missing")


@requires(False, "a unicorn")
def test_marked(unicorn):
    pass


def test_required():
    require(False, "a dragon")


def test_module_required():
    require_module("no_such_module_here", "the griffin extra")


@requires(True, "nothing")
def test_met():
    require(True, "nothing")
"""


def _run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_needy.py").write_text(NEEDY_TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    # -p prerequisites: the hooks conftest.py imports for the repository's own tests.
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    cmd += ["-p", "prerequisites", "--rootdir", str(tmp_path), "test_needy.py"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_missing_prerequisites_skip_with_a_reason_outside_ci(tmp_path):
    result = _run_pytest(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 3 skipped" in result.stdout
    for what in ("a unicorn is missing", "a dragon is missing", "the griffin extra"):
        assert what in result.stdout


def test_missing_prerequisites_fail_under_ci(tmp_path):
    result = _run_pytest(tmp_path, ci="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout and "skipped" not in result.stdout
    assert "2 failed" in result.stdout and "1 error" in result.stdout  # the mark fails at set-up
    for what in ("a unicorn", "a dragon", "the griffin extra"):
        assert f"{what} is missing" in result.stdout
    assert result.stdout.count("CI=true requires it") == 3
    assert "the fixture ran" not in result.stdout


@pytest.mark.parametrize(
    "value, expected",
    [("true", True), ("True", True), ("1", True), ("yes", True), ("false", False), ("", False)],
)
def test_in_ci_reads_the_ci_variable(monkeypatch, value, expected):
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected
    monkeypatch.delenv("CI")
    assert in_ci() is False
