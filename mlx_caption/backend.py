"""Device choice and a fast BLAS for MLX on Linux CPUs.

The ``mlx[cpu]`` wheel links the reference (netlib) BLAS, an order of magnitude slower than
an optimized one for float32 matmuls (``mlx-caption doctor`` measures both). Loading OpenBLAS
or MKL with ``RTLD_GLOBAL`` *before* ``mlx.core`` is first imported makes the dynamic linker
resolve MLX's ``cblas_sgemm`` to the optimized library instead. That has to happen before the first
``import mlx.core`` anywhere in the process, so :func:`setup` runs from
``mlx_caption/__init__.py`` ahead of every other import.

Control it with ``MLX_CAPTION_BLAS``: a path to a shared library, or ``off`` to leave the
reference BLAS in place. OpenBLAS's idle threads are told to sleep sooner than its default
(``OPENBLAS_THREAD_TIMEOUT``, unless set already): see :func:`setup`. Nothing is loaded on macOS (Accelerate is already used) or when a
GPU build of MLX (``mlx-cuda``) is installed. Where torch is installed, its CPU library is
loaded first, so that a torch imported later keeps its own BLAS (:func:`keep_torch_blas`).

:func:`setup` also has glibc's malloc keep freed memory for reuse (:func:`keep_freed_memory`,
``MLX_CAPTION_MALLOC=system`` to leave glibc's defaults): MLX's CPU allocator has no buffer
cache, so without it every large intermediate array is page-faulted afresh.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import glob
import importlib.metadata
import importlib.util
import os
import platform
import sys
import sysconfig
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

ENV_VAR = "MLX_CAPTION_BLAS"
MALLOC_ENV_VAR = "MLX_CAPTION_MALLOC"
# log2 of the cycles OpenBLAS's idle threads spin before sleeping (see setup); a value the
# user sets in the environment wins.
OPENBLAS_THREAD_TIMEOUT = "20"
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_INT_MAX = 2**31 - 1


@dataclass
class BlasStatus:
    """What :func:`setup` did, reported by ``mlx-caption doctor``."""

    loaded: str | None = None  # path of the library we loaded, if any
    reason: str = "not attempted"
    candidates: list[str] = field(default_factory=list)
    # torch's CPU library, loaded first so that torch keeps its own BLAS (keep_torch_blas)
    torch_blas_kept: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


_status = BlasStatus()
_handle: ctypes.CDLL | None = None
_malloc_status = "not attempted"


def _gpu_build_installed() -> bool:
    for dist in ("mlx-cuda", "mlx-cuda-12", "mlx-cuda-13", "mlx_cuda"):
        try:
            importlib.metadata.version(dist)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


def blas_candidates() -> list[str]:
    """Optimized BLAS libraries found in the usual system and virtualenv locations, best first."""
    multiarch = f"{platform.machine()}-linux-gnu"
    prefixes = [
        sys.prefix,
        sysconfig.get_config_var("prefix") or "",
        os.environ.get("CONDA_PREFIX", ""),
    ]
    patterns = []
    # OpenBLAS with pthreads first (Debian's libopenblas0-pthread), then any OpenBLAS, then MKL.
    for root in (
        f"/usr/lib/{multiarch}",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
        "/opt/OpenBLAS/lib",
    ):
        patterns += [
            f"{root}/openblas-pthread/libopenblas.so*",
            f"{root}/libopenblasp*.so*",
            f"{root}/libopenblas.so*",
            f"{root}/openblas-openmp/libopenblas.so*",
        ]
    for prefix in filter(None, prefixes):
        patterns += [f"{prefix}/lib/libopenblas*.so*", f"{prefix}/lib/libmkl_rt.so*"]
    patterns += [
        "/opt/intel/oneapi/mkl/latest/lib/intel64/libmkl_rt.so*",
        f"/usr/lib/{multiarch}/libmkl_rt.so*",
    ]
    found: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            real = os.path.realpath(path)
            if os.path.isfile(real) and real not in found:
                found.append(real)
    return found


def keep_freed_memory() -> str:
    """Have glibc's malloc keep freed blocks for reuse instead of handing them back to the OS.

    MLX's CPU allocator is plain ``malloc``/``free``, with no buffer cache (its Metal and CUDA
    allocators have one). glibc serves every block above its mmap threshold (32 MiB at most)
    with a fresh ``mmap`` and unmaps it on ``free``, so each large intermediate (a ViT-B's MLP
    activations at batch 32, a training step's logits) was page-faulted and zeroed by the
    kernel on every use, on one core. With mmap off and the trim threshold at its maximum,
    freed blocks stay in the heap and are reused; the process keeps its high-water mark of
    memory, as the GPU allocators' caches do. Applies to the whole process (torch's CPU
    tensors too). Linux with glibc only; ``MLX_CAPTION_MALLOC=system`` leaves the defaults.
    Returns what was done, for ``mlx-caption doctor``.
    """
    global _malloc_status
    if _malloc_status != "not attempted":
        return _malloc_status
    choice = os.environ.get(MALLOC_ENV_VAR, "").strip().lower()
    if choice == "system":
        _malloc_status = f"glibc defaults ({MALLOC_ENV_VAR}=system)"
    elif sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        _malloc_status = "glibc defaults (not a glibc system)"
    else:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
        _malloc_status = "freed memory kept for reuse" if ok else "glibc refused mallopt"
    return _malloc_status


def malloc_status() -> str:
    """What :func:`keep_freed_memory` did."""
    return _malloc_status


def keep_torch_blas() -> str | None:
    """Load torch's CPU library (when torch is installed and not imported yet) before an
    optimized BLAS goes into the global symbol scope, and return its path.

    ``libtorch_cpu`` carries its own BLAS (MKL in the x86 wheels) and looks up ``sgemm_``
    through the global scope first. With OpenBLAS loaded there before it, a torch imported
    after ``mlx_caption`` ran its matmuls on OpenBLAS instead: its ViT encoders 1.5-1.7x
    slower on 2 cores (OpenBLAS's threads and torch's OpenMP threads fighting over them),
    its beam search 2.3x slower. Loaded first, torch binds to itself, and MLX still finds
    OpenBLAS's ``cblas_sgemm`` (torch exports no CBLAS). Costs about 0.3 s of import time
    where torch is installed.
    """
    if "torch" in sys.modules:
        return None  # loaded already, so bound to its own BLAS
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "lib", "libtorch_cpu.so")
    if not os.path.isfile(path):
        return None
    try:
        ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
    except OSError:
        return None
    return path


def setup() -> BlasStatus:
    """Load an optimized BLAS globally if this is a Linux CPU build of MLX, and keep freed
    memory for reuse (:func:`keep_freed_memory`). Safe to call twice."""
    global _status, _handle
    keep_freed_memory()
    if _handle is not None or _status.reason != "not attempted":
        return _status
    choice = os.environ.get(ENV_VAR, "").strip()
    if sys.platform != "linux":
        _status = BlasStatus(reason=f"not needed on {sys.platform}")
        return _status
    if choice.lower() in ("off", "0", "none", "false"):
        _status = BlasStatus(reason=f"disabled by {ENV_VAR}={choice}")
        return _status
    if _gpu_build_installed() and not choice:
        _status = BlasStatus(reason="GPU build of MLX installed; matmuls run on the GPU")
        return _status
    if "mlx.core" in sys.modules:
        warnings.warn(
            "mlx.core was imported before mlx_caption, too late to load an optimized BLAS; "
            "import mlx_caption first for fast CPU matmuls.",
            RuntimeWarning,
            stacklevel=3,
        )
        _status = BlasStatus(reason="too late: mlx.core was imported first")
        return _status
    candidates = [choice] if choice else blas_candidates()
    errors = []
    # OpenBLAS's idle threads spin for 2**28 cycles (about 0.1 s) after each matmul before
    # they sleep, holding a core that MLX's work on a second CPU stream needs (split_eval's,
    # the training step's). 2**20 cycles is well under a millisecond: back-to-back matmuls
    # still find them awake.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)
    torch_blas = keep_torch_blas() if candidates else None
    for path in candidates:
        try:
            _handle = ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
        except OSError as err:
            errors.append(f"{path}: {err}")
            continue
        _status = BlasStatus(
            loaded=path, reason="loaded", candidates=candidates, torch_blas_kept=torch_blas
        )
        return _status
    if choice:
        reason = f"{ENV_VAR}={choice} could not be loaded: {'; '.join(errors)}"
        warnings.warn(reason, RuntimeWarning, stacklevel=3)
    else:
        reason = "no optimized BLAS found (apt install libopenblas0-pthread)"
    _status = BlasStatus(reason=reason, candidates=candidates)
    return _status


def status() -> BlasStatus:
    """The outcome of :func:`setup`."""
    return _status


def _blas_thread_calls():
    """(get, set) of the loaded BLAS's thread count (OpenBLAS or MKL), or None."""
    if _handle is None:
        return None
    for get, put in (
        ("openblas_get_num_threads", "openblas_set_num_threads"),
        ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads"),
    ):
        try:
            return getattr(_handle, get), getattr(_handle, put)
        except AttributeError:
            continue
    return None


def blas_thread_count() -> int | None:
    """Threads the BLAS that :func:`setup` loaded uses now; None when there is none to set."""
    calls = _blas_thread_calls()
    return None if calls is None else int(calls[0]())


@contextlib.contextmanager
def blas_threads(n: int):
    """Run the block with the BLAS that :func:`setup` loaded on ``n`` threads.

    For work split over several CPU streams: each stream's matmuls then take one share of
    the cores instead of all of them. Does nothing when no BLAS was loaded (macOS,
    GPU builds, ``MLX_CAPTION_BLAS=off``).
    """
    calls = _blas_thread_calls()
    if calls is None:
        yield
        return
    get, put = calls
    before = int(get())
    put(max(1, int(n)))
    try:
        yield
    finally:
        put(before)


# Each thread's CPU streams: MLX's streams belong to the thread that made them (a stream
# made on one thread is unknown on another: the web page captions on streamlit's threads).
_STREAMS = threading.local()

# While split_eval builds its parts' graphs: the stage ends each part marks (mark_stage).
_STAGES: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "mlx_caption_stages", default=None
)


def mark_stage(x: Any) -> None:
    """Note ``x`` as the end of a stage of the graph :func:`split_eval` is building (every
    encoder marks each block's output): the parts' stages are then evaluated in step. Does
    nothing anywhere else (training, compiled functions, one part)."""
    stages = _STAGES.get()
    if stages is not None:
        stages.append(x)


# While split_eval runs a function on one image: the CPU streams its encoder's blocks split
# that image's tokens over (VisionEncoder.run_blocks).
_TOKEN_STREAMS: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "mlx_caption_token_streams", default=None
)


def token_streams() -> list | None:
    """The CPU streams to split one image's tokens over, inside :func:`split_eval` on one
    image; None anywhere else."""
    return _TOKEN_STREAMS.get()


def cpu_streams(count: int) -> list:
    """``count`` CPU streams (the default one first), created once per thread and reused."""
    import mlx.core as mx

    streams = getattr(_STREAMS, "streams", None)
    if streams is None:
        streams = _STREAMS.streams = [mx.default_stream(mx.cpu)]
    while len(streams) < count:
        streams.append(mx.new_stream(mx.cpu))
    return streams[:count]


def default_parts() -> int:
    """CPU streams to spread element-wise work over: one per core, at most two (the
    training step's ``cpu_streams: auto``, the loss's row split)."""
    return max(1, min(2, os.cpu_count() or 1))


def row_ranges(rows: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` row ranges of near-equal size (at most one per
    row, one when ``parts <= 1``): how work is split over CPU streams."""
    parts = max(1, min(parts, rows))
    edges = [rows * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def threads_per_part(parts: int) -> int:
    """BLAS threads for each of ``parts`` CPU streams running at once: a share of the cores."""
    return max(1, (os.cpu_count() or parts) // parts)


# Token rows each CPU stream takes per call of split_eval: with about a thousand (four
# 257-token images, sixteen 50-token ones) an encoder forward on two streams measured fastest;
# with four times as many, slower than one stream (the blocks' working sets outgrow the
# caches). benchmarks/README.md has the figures.
ROWS_PER_STREAM = 1024


def split_eval(
    fn: Callable[..., Any], *batched: Any, parts: int | None = None, tokens: int = 1
) -> Any:
    """``fn(*batched)`` evaluated, with the batch (axis 0 of every input) split over CPU streams.

    MLX runs each CPU op on one thread (only its matmuls use the BLAS's threads), so on a
    multi-core CPU an encoder forward leaves cores idle through layer norms, activations and
    the attention core. Here the batch is cut into ``parts`` chunks (default: one per core,
    at most two, :func:`default_parts`), each run on its own CPU stream with a share of the
    BLAS's threads: every op then has a core. ``tokens`` is what one row of the batch holds
    (an encoder's tokens per image): the batch goes through in equal slices of at most about
    :data:`ROWS_PER_STREAM` token rows per stream. Stages that ``fn`` marks
    (:func:`mark_stage`: an encoder's blocks) are evaluated in step across the parts.

    One image is split by its tokens instead, where that pays (many tokens for the width):
    the encoder's blocks run each share of them on a stream (:func:`token_streams`,
    ``models.layers.blocks.blocks_over_token_streams``), the rest of ``fn`` as it is.

    The outputs (an array or a tuple/list/dict of arrays) are concatenated back along axis 0.
    For inference: the result is evaluated here, and nothing may differentiate through it.
    On a GPU, or with one part, it is ``fn`` evaluated.
    """
    import mlx.core as mx
    from mlx.utils import tree_map

    parts = default_parts() if parts is None else parts
    rows = batched[0].shape[0]
    if parts <= 1 or rows < 2 or on_gpu():
        split_tokens = parts > 1 and rows == 1 and not on_gpu()
        token = _TOKEN_STREAMS.set(cpu_streams(parts) if split_tokens else None)
        try:
            out = fn(*batched)
            mx.eval(out)
        finally:
            _TOKEN_STREAMS.reset(token)
        return out
    # Slices of at most `step` rows, all of near-equal size: 32 ViT-B/16 images (step 10) go
    # as 8, 8, 8, 8, not 10, 10, 10, 2, whose last slice left one image per stream.
    step = parts * max(1, round(ROWS_PER_STREAM / max(1, tokens)))
    outs = []  # every slice's parts in row order, joined once at the end
    for start, stop in row_ranges(rows, -(-rows // step)):
        outs += _split_slice(fn, [x[start:stop] for x in batched], parts)
    if len(outs) == 1:
        return outs[0]
    out = tree_map(lambda *chunks: mx.concatenate(chunks, axis=0), *outs)
    mx.eval(out)
    return out


def _split_slice(fn: Callable[..., Any], batched: list, parts: int) -> list:
    """One slice of :func:`split_eval`: its rows over ``parts`` streams, stages in step; the
    parts' evaluated outputs in row order."""
    import mlx.core as mx

    ranges = row_ranges(batched[0].shape[0], parts)
    outs, staged = [], []
    with blas_threads(threads_per_part(len(ranges))):
        for (start, stop), stream in zip(ranges, cpu_streams(len(ranges)), strict=True):
            marks: list = []
            token = _STAGES.set(marks)
            try:
                with mx.stream(stream):
                    outs.append(fn(*(x[start:stop] for x in batched)))
            finally:
                _STAGES.reset(token)
            staged.append(marks)
        # Every part's k-th stage queued together, stage after stage. Queued as one graph,
        # MLX runs one part's graph to its end before it starts the other's: the streams take
        # turns instead of running at once (a ViT forward on two streams then took 1.4x the
        # time of one).
        for k in range(max(map(len, staged))):
            mx.async_eval([marks[k] for marks in staged if k < len(marks)])
        staged.clear()
        mx.eval(outs)
    return outs


def blas_in_use() -> list[str]:
    """Shared libraries mapped into this process whose name says BLAS or MKL (Linux only)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return []
    keys = ("blas", "mkl")
    return sorted(
        p for p in libs if p.startswith("/") and any(k in os.path.basename(p).lower() for k in keys)
    )


def on_gpu() -> bool:
    """True when MLX's default device is a GPU (Metal or CUDA)."""
    import mlx.core as mx

    return mx.default_device().type == mx.DeviceType.gpu


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Measured float32 ``n x n`` matmul throughput on the default device, median of repeats."""
    import mlx.core as mx

    a = mx.random.normal((n, n))
    b = mx.random.normal((n, n))
    mx.eval(a @ b)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - start)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e9
