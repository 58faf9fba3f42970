"""The BLAS loader actually put an optimized BLAS under MLX when one is installed."""

import os

import pytest

from mlx_caption import backend


def test_openblas_loaded_when_available():
    if os.environ.get(backend.ENV_VAR, "").lower() in ("off", "0", "none", "false"):
        pytest.skip(f"{backend.ENV_VAR} disables the loader")
    if not backend.blas_candidates():
        pytest.skip("no optimized BLAS installed on this machine")
    status = backend.status()
    assert status.loaded, status.reason
    assert status.reason == "loaded"
    mapped = [os.path.realpath(p) for p in backend.blas_in_use()]
    assert os.path.realpath(status.loaded) in mapped


def test_blas_threads_sets_and_restores_the_thread_count():
    before = backend.blas_thread_count()
    if before is None:
        with backend.blas_threads(1):  # a no-op without a loaded BLAS
            pass
        pytest.skip("no OpenBLAS/MKL loaded by mlx_caption")
    if before < 2:
        pytest.skip("the BLAS runs on one thread here: nothing to lower")
    with backend.blas_threads(1):
        assert backend.blas_thread_count() == 1
    assert backend.blas_thread_count() == before
    with pytest.raises(RuntimeError), backend.blas_threads(1):
        raise RuntimeError("restored on the way out")
    assert backend.blas_thread_count() == before
