"""The BLAS loader actually put an optimized BLAS under MLX when one is installed."""

import os
import platform
import resource
import subprocess
import sys

import numpy as np
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


@pytest.mark.parametrize("preset", [None, "25"])
def test_openblas_idle_threads_sleep_soon_unless_the_user_says(preset):
    """The loader shortens OpenBLAS's spin before sleeping, in the environment OpenBLAS reads
    when it loads; a value already set is kept."""
    if not backend.status().loaded:
        pytest.skip("no optimized BLAS loaded here")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    code = "import os, mlx_caption; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == (preset or backend.OPENBLAS_THREAD_TIMEOUT), out.stderr


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


# Which library the global symbol scope gives a symbol to: what a library that looks a BLAS
# function up there (torch's sgemm_, MLX's cblas_sgemm) binds to.
_OWNERS = """
import ctypes, json, sys
import mlx_caption
from mlx_caption import backend
import torch, mlx.core as mx

class DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

scope = ctypes.CDLL(None)
def owner(symbol):
    info = DlInfo()
    scope.dladdr(ctypes.cast(getattr(scope, symbol), ctypes.c_void_p), ctypes.byref(info))
    return info.fname.decode()

a = torch.ones(64, 64)
print(json.dumps({"sgemm_": owner("sgemm_"), "cblas_sgemm": owner("cblas_sgemm"),
                  "loaded": backend.status().loaded, "kept": backend.status().torch_blas_kept,
                  "torch": float((a @ a)[0, 0]), "mlx": (mx.ones((64, 64)) @ mx.ones((64, 64)))[0, 0].item()}))
"""


def test_torch_imported_after_keeps_its_own_blas():
    """torch imported after mlx_caption still finds its own sgemm_ (MKL, inside libtorch_cpu)
    first, while MLX's cblas_sgemm is the optimized BLAS mlx_caption loaded: with OpenBLAS
    first in the global scope, torch ran on it, 1.5-2.3x slower."""
    import importlib.util
    import json

    if importlib.util.find_spec("torch") is None or not backend.status().loaded:
        pytest.skip("needs torch and an optimized BLAS")
    out = subprocess.run(
        [sys.executable, "-c", _OWNERS], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found["kept"] and found["kept"].endswith("libtorch_cpu.so")
    assert found["sgemm_"].endswith("libtorch_cpu.so"), found
    assert found["cblas_sgemm"] == found["loaded"], found
    assert found["torch"] == found["mlx"] == 64.0


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


def test_split_eval_queues_marked_stages_in_step_and_slices_by_tokens(monkeypatch):
    """Each slice of about ROWS_PER_STREAM token rows a stream runs its parts' graphs with
    their marked stages queued together, stage k of every part before stage k + 1 of any,
    and the result equals the function on the whole batch."""
    import mlx.core as mx

    w = mx.random.normal((8, 8), key=mx.random.key(0)) * 0.3
    x = mx.random.normal((10, 3, 8), key=mx.random.key(1))

    def blocks(h):
        for _ in range(3):
            h = mx.tanh(h @ w) + h
            backend.mark_stage(h)
        return h

    queued = []
    async_eval = mx.async_eval
    monkeypatch.setattr(
        mx, "async_eval", lambda arrays: queued.append(arrays) or async_eval(arrays)
    )
    monkeypatch.setattr(backend, "ROWS_PER_STREAM", 6)  # 6 // 3 tokens: 2 rows a stream
    out = backend.split_eval(blocks, x, parts=2, tokens=3)
    np.testing.assert_allclose(np.array(out), np.array(blocks(x)), atol=1e-5)
    # 10 rows in slices of at most 4 (2 streams x 2 rows), near-equal: 3, 3 and 4 (not 4, 4
    # and 2). Each slice queues its 3 stages, every stage over both parts.
    assert [len(stage) for stage in queued] == [2] * 9
    sizes = [[part.shape[0] for part in stage] for stage in queued]
    assert sizes == [[1, 2]] * 6 + [[2, 2]] * 3
    # 32 rows of 10-row slices: four of 8, four rows a stream each.
    queued.clear()
    monkeypatch.setattr(backend, "ROWS_PER_STREAM", 15)  # 15 // 3 tokens: 5 rows a stream
    x32 = mx.random.normal((32, 3, 8), key=mx.random.key(2))
    out = backend.split_eval(blocks, x32, parts=2, tokens=3)
    assert [[part.shape[0] for part in stage] for stage in queued] == [[4, 4]] * 12
    np.testing.assert_allclose(np.array(out), np.array(blocks(x32)), atol=1e-5)
    # The whole batch in one slice when tokens are few: the same values.
    queued.clear()
    out = backend.split_eval(blocks, x, parts=2)
    assert [stage[0].shape[0] for stage in queued] == [5] * 3
    np.testing.assert_allclose(np.array(out), np.array(blocks(x)), atol=1e-5)


def test_mark_stage_does_nothing_outside_split_eval():
    import mlx.core as mx

    backend.mark_stage(mx.ones(2))  # no error, nothing kept
    assert backend._STAGES.get() is None
    with pytest.raises(RuntimeError):
        backend.split_eval(lambda a: (_ for _ in ()).throw(RuntimeError("boom")), mx.ones((4, 2)))
    assert backend._STAGES.get() is None  # cleared after an exception


# Allocates a 64 MiB array twice and prints the page faults of the second allocation.
_REFAULT = """
import resource, mlx_caption
import mlx.core as mx
x = mx.ones((16, 1 << 20)); mx.eval(x)
y = x + 1; mx.eval(y); del y
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
y = x + 2; mx.eval(y)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)
def test_freed_memory_is_reused_without_page_faults():
    def refaults(setting: str) -> int:
        env = {**os.environ, backend.MALLOC_ENV_VAR: setting}
        out = subprocess.run(
            [sys.executable, "-c", _REFAULT], env=env, capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    pages = 64 * 2**20 // resource.getpagesize()
    assert refaults("") < pages // 100  # the freed block came back from the heap
    assert refaults("system") > pages // 2  # glibc's default: a fresh mmap, faulted page by page
    assert backend.malloc_status() == "freed memory kept for reuse"


def test_every_encoder_block_is_a_stage_of_split_eval(monkeypatch):
    import mlx.core as mx

    from mlx_caption.models.clip import CLIPVisionConfig
    from mlx_caption.models.registry import build_encoder

    cfg = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    model = build_encoder(cfg)
    model.eval()
    pixels = mx.random.normal((4, 32, 32, 3), key=mx.random.key(0))
    queued = []
    async_eval = mx.async_eval
    monkeypatch.setattr(
        mx, "async_eval", lambda arrays: queued.append(arrays) or async_eval(arrays)
    )
    out = backend.split_eval(lambda p: model(p).last_hidden_state, pixels, parts=2, tokens=17)
    assert [len(stage) for stage in queued] == [2, 2, 2]  # 3 blocks, 2 parts each
    np.testing.assert_allclose(np.array(out), np.array(model(pixels).last_hidden_state), atol=1e-5)
