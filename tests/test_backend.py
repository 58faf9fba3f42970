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


def test_split_eval_equals_one_stream():
    import mlx.core as mx

    w = mx.random.normal((24, 16), key=mx.random.key(0))

    def fn(x):
        h = x @ w
        return mx.maximum(h, 0.0).sum(axis=-1, keepdims=True) * h, h.mean(axis=-1)

    x = mx.random.normal((5, 7, 24), key=mx.random.key(1))
    threads = backend.blas_thread_count()
    whole = fn(x)
    for parts in (1, 2, 3, 9):
        split = backend.split_eval(fn, x, parts=parts)
        assert isinstance(split, tuple) and split[0].shape == (5, 7, 16)
        for a, b in zip(split, whole, strict=True):
            assert mx.allclose(a, b, atol=1e-5).item()
    assert backend.blas_thread_count() == threads  # restored after the split
    one = backend.split_eval(lambda a: a * 2.0, x[:1])
    assert mx.array_equal(one, x[:1] * 2.0).item()
