"""What a test needs from the machine: skip with the reason here, fail under CI.

A developer's machine may lack Java, Chromium, an optional extra or ``../shared/data``; the
tests that need them skip and say why. CI (``CI=true``) installs all of it, so there a missing
piece is a broken set-up: the test fails and names what is missing rather than passing as a
quiet skip.

Three forms::

    require(shutil.which("java") is not None, "java")      # in a test, fixture or module
    torch = require_module("torch", "the [torch] extra")    # like pytest.importorskip
    @requires(metrics.java_available(), "a working java")   # a mark, checked before fixtures

The mark form needs this module's hooks, which ``conftest.py`` imports.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

MARK = "requires"


def in_ci() -> bool:
    """Whether this run is CI's: ``CI`` set to ``true``, ``1`` or ``yes`` (any case)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _missing_message(what: str, detail: str = "") -> str:
    return f"{what} is missing" + (f" ({detail})" if detail else "")


def missing(what: str, detail: str = "") -> NoReturn:
    """Stop the calling test (or test module) because ``what`` is missing: fail under CI."""
    __tracebackhide__ = True  # report the test that needs it, not this line
    message = _missing_message(what, detail)
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require(available: bool, what: str) -> None:
    """Go on if ``available``; otherwise :func:`missing` (skip, or fail under CI)."""
    __tracebackhide__ = True
    if not available:
        missing(what)


def require_module(name: str, what: str | None = None) -> ModuleType:
    """Import and return module ``name``; where it cannot be imported, :func:`missing`."""
    __tracebackhide__ = True
    try:
        return importlib.import_module(name)
    except ImportError as err:
        error = str(err)
    missing(what or name, error)  # outside the except: no chained traceback in the report


def requires(available: bool, what: str) -> pytest.MarkDecorator:
    """Mark form of :func:`require`: checked at set-up, before the test's fixtures run."""
    if available or in_ci():
        return getattr(pytest.mark, MARK)(available=available, what=what)
    # A plain skip mark, so the report points at the test rather than at the hook below.
    return pytest.mark.skip(reason=_missing_message(what))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARK}(available, what): see tests/prerequisites.py")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # tryfirst: a missing prerequisite must stop the test before its fixtures try to use it.
    for mark in item.iter_markers(MARK):
        require(mark.kwargs["available"], mark.kwargs["what"])
