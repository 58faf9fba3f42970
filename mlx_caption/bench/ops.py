"""Op-level experiments behind the library's CPU fast paths, and candidates not yet taken.

Each experiment times the library's current op against the alternative on the shapes the
ViT and decoder actually run (interleaved, median of repeats) and checks they agree:

- ``softmax``: ``mx.softmax`` against ``activations.fast_softmax`` on attention scores;
- ``attention core``: ``mx.fast.scaled_dot_product_attention`` against matmul +
  ``fast_softmax`` + matmul (what ``vit.Attention`` runs on the CPU);
- ``quick_gelu``: ``x * mx.sigmoid(1.702 x)`` against ``activations.fast_quick_gelu``, and
  its backward pass (autodiff through the polynomial against an explicit derivative);
- ``fusion depth``: a degree-10 polynomial in one compiled function (Horner, 20 ops deep),
  split by hand, and in Estrin form: MLX fuses at most 11 ops per chain;
- ``kernel boundary``: the softmax's exponentials eagerly (two hand-cut kernels) and inside
  an outer ``mx.compile`` with and without ``activations.kernel_boundary`` between them;
- ``cross-entropy value and gradient``: ``nn.losses.cross_entropy`` against
  ``train.loss.cross_entropy`` over a caption batch's logits, compiled as in training;
- ``attention chunks``: softmax then weighted sum over the whole batch (the former core)
  against the library's core over the whole batch and per chunk (``CHUNK_BYTES``);
- ``patch embedding``: ``mx.conv2d`` against the library's reshape + matmul;
- ``conv stem gradient``: one 3x3 stride-2 stem layer's forward + backward (input and
  kernel), through autodiff of ``mx.conv2d``, autodiff of the im2col form (nine strided
  views, one matmul), and ``models.layers.conv.conv3x3_stride2`` (hand-written col2im);
- ``layer norm``: ``mx.fast.layer_norm`` against a compiled hand-written one (no gain: kept);
- ``blas threads``: the ViT forward with OpenBLAS on 1 thread against all cores, and the
  batch split over two CPU streams with one BLAS thread each;
- ``checkpoint memory``: peak memory of an encoder fine-tuning step with and without
  gradient checkpointing, compiled and not.

``mlx-caption bench --ops`` writes ``ops.json`` and ``ops.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_caption import backend
from mlx_caption.bench.timing import measure_interleaved, ratio
from mlx_caption.models.clip import CLIPVisionConfig

VIT_B32 = "clip-vit-base-patch32"


def _compare(
    name: str,
    shape: str,
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    check: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Time the variants (the first is the baseline); optionally their max abs difference."""
    t = measure_interleaved(fns, warmup=2, repeats=repeats)
    names = list(fns)
    base = t[names[0]].median
    row: dict[str, Any] = {
        "experiment": name,
        "shape": shape,
        "ms": {k: 1000 * v.median for k, v in t.items()},
        "speedup": {k: ratio(base, v.median) for k, v in t.items()},
    }
    if check:
        a, b = fns[check[0]](), fns[check[1]]()
        row["max_abs_diff"] = mx.abs(a - b).max().item()
    return row


def softmax_rows(batch: int, tokens: int, heads: int = 12, repeats: int = 9) -> list[dict]:
    """Softmax and the attention core on ``(batch, heads, tokens, tokens)`` scores."""
    from mlx_caption.models.layers.activations import fast_softmax

    shape = f"B={batch} H={heads} T={tokens} hd=64"
    q, k, v = (mx.random.normal((batch, heads, tokens, 64)) for _ in range(3))
    scores = (q * 0.125) @ k.swapaxes(-1, -2)
    mx.eval(q, k, v, scores)
    return [
        _compare(
            "softmax",
            shape,
            {
                "mx.softmax": lambda: mx.softmax(scores, axis=-1, precise=True),
                "fast_softmax": lambda: fast_softmax(scores),
            },
            repeats,
            ("mx.softmax", "fast_softmax"),
        ),
        _compare(
            "attention core",
            shape,
            {
                "mx.fast.sdpa": lambda: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125),
                "matmul+fast_softmax": lambda: fast_softmax((q * 0.125) @ k.swapaxes(-1, -2)) @ v,
            },
            repeats,
            ("mx.fast.sdpa", "matmul+fast_softmax"),
        ),
    ]


def activation_row(rows: int, width: int = 3072, repeats: int = 9) -> dict:
    from mlx_caption.models.layers.activations import fast_quick_gelu

    h = mx.random.normal((rows, width)) * 3
    mx.eval(h)
    return _compare(
        "quick_gelu",
        f"({rows}, {width})",
        {
            "x*sigmoid(1.702x)": lambda: h * mx.sigmoid(1.702 * h),
            "fast_quick_gelu": lambda: fast_quick_gelu(h),
        },
        repeats,
        ("x*sigmoid(1.702x)", "fast_quick_gelu"),
    )


def fusion_depth_row(rows: int, width: int = 3072, repeats: int = 9) -> dict:
    """One degree-10 polynomial as Horner (20 deep), Estrin (7 deep), and Horner split in two.

    MLX's compiler fuses at most 11 element-wise ops in a chain (``max_compile_depth``);
    past that it cuts the chain wherever the limit falls, which costs far more than the
    extra pass over memory a hand-placed cut costs.
    """
    import math

    c = [1.0 / math.factorial(k) for k in range(11)]

    def horner(t, coeffs):
        p = coeffs[-1]
        for k in reversed(coeffs[:-1]):
            p = p * t + k
        return p

    @mx.compile
    def deep(t):
        return horner(t, c)

    @mx.compile
    def estrin(t):
        t2 = t * t
        t4 = t2 * t2
        low = (c[0] + c[1] * t) + (c[2] + c[3] * t) * t2
        mid = (c[4] + c[5] * t) + (c[6] + c[7] * t) * t2
        return low + (mid + ((c[8] + c[9] * t) + c[10] * t2) * t4) * t4

    @mx.compile
    def upper(t):
        return horner(t, c[5:])

    @mx.compile
    def lower(t, u):
        return horner(t, c[:5]) + u * (t * t) * (t * t) * t

    x = mx.random.uniform(0, 1, (rows, width))
    mx.eval(x)
    return _compare(
        "fusion depth",
        f"degree-10 polynomial on ({rows}, {width})",
        {
            "Horner, one function": lambda: deep(x),
            "Horner, split in two": lambda: lower(x, upper(x)),
            "Estrin, one function": lambda: estrin(x),
        },
        repeats,
        ("Horner, one function", "Estrin, one function"),
    )


def quick_gelu_vjp_row(rows: int, width: int = 3072, repeats: int = 5) -> dict:
    """Backward of quick_gelu inside ``mx.compile``: the library's (hand-cut kernels, explicit
    derivative), autodiff of the exact sigmoid form, and autodiff of the one-function fast
    form the library used before (``_fast_quick_gelu_impl``)."""
    import math

    from mlx_caption.models.layers.activations import _fast_quick_gelu_impl, fast_quick_gelu

    c = [1.0 / math.factorial(k) for k in range(5)]

    @mx.compile
    def poly(x):
        t = mx.abs(x) * (1.702 / 64)
        t2 = t * t
        return (c[0] + c[1] * t) + (c[2] + c[3] * t) * t2 + c[4] * t2 * t2

    @mx.compile
    def exp_neg(p):  # exp(-1.702 |x|) = (1 / poly)^64
        e = 1.0 / p
        for _ in range(6):
            e = e * e
        return e

    @mx.compile
    def value(x, e):
        return 0.5 * (x + mx.abs(x) * (1.0 - e) / (1.0 + e))

    @mx.compile
    def grad(x, e, g):
        inv = 1.0 / (1.0 + e)  # sigmoid(1.702|x|); s (1 - s) = e inv^2 for either sign
        s = mx.where(x >= 0, inv, e * inv)
        return g * (s + 1.702 * x * e * inv * inv)

    @mx.custom_function
    def explicit(x):
        return value(x, exp_neg(poly(x)))

    @explicit.vjp
    def _explicit_vjp(x, g, out):
        return grad(x, exp_neg(poly(x)), g)

    def backward(fn):
        return mx.compile(lambda x, g: mx.vjp(fn, [x], [g])[1][0])

    h = mx.random.normal((rows, width)) * 3
    g = mx.random.normal((rows, width))
    mx.eval(h, g)
    fns = {
        "autodiff of the one-function fast form": backward(mx.compile(_fast_quick_gelu_impl)),
        "autodiff of x*sigmoid(1.702x)": backward(lambda x: x * mx.sigmoid(1.702 * x)),
        "library fast_quick_gelu (explicit VJP)": backward(fast_quick_gelu),
        "explicit VJP, rebuilt here": backward(explicit),
    }
    calls = {k: (lambda f=f: f(h, g)) for k, f in fns.items()}
    return _compare(
        "quick_gelu backward",
        f"({rows}, {width})",
        calls,
        repeats,
        ("autodiff of x*sigmoid(1.702x)", "library fast_quick_gelu (explicit VJP)"),
    )


def kernel_boundary_row(rows: int, width: int, repeats: int = 5) -> dict:
    """The softmax's exponentials (two hand-cut kernels) called eagerly, and inside an outer
    ``mx.compile`` with and without the boundary between the kernels: compiled callers inline
    the pieces and re-fuse them unless something unfusable separates them."""
    from mlx_caption.models.layers import activations

    scores = mx.random.normal((rows, width)) * 3
    row_max = mx.max(scores, axis=-1, keepdims=True)
    mx.eval(scores, row_max)

    def pieces(boundary):
        poly = activations._softmax_poly(scores, row_max)
        return activations._softmax_invert_square(boundary(poly))

    outer_plain = mx.compile(lambda: pieces(lambda p: p))
    outer_cut = mx.compile(lambda: pieces(activations.kernel_boundary))
    return _compare(
        "kernel boundary",
        f"exp(s - max) on ({rows}, {width})",
        {
            "eager (two kernels)": lambda: pieces(lambda p: p),
            "outer compile, no boundary": outer_plain,
            "outer compile, boundary": outer_cut,
        },
        repeats,
        ("eager (two kernels)", "outer compile, boundary"),
    )


def cross_entropy_row(rows: int, vocab: int = 8192, repeats: int = 5) -> dict:
    """Value and gradient of the caption loss over ``(rows, vocab)`` logits, compiled as in the
    training step: ``nn.losses.cross_entropy`` against ``train.loss.cross_entropy``."""
    from mlx_caption.train.loss import cross_entropy

    logits = mx.random.normal((rows, vocab)) * 3
    targets = mx.random.randint(0, vocab, (rows,))
    mx.eval(logits, targets)

    def grad_of(loss):
        return mx.compile(mx.grad(lambda x: loss(x).sum()))

    mlx_loss = grad_of(lambda x: nn.losses.cross_entropy(x, targets, label_smoothing=0.1))
    fast_loss = grad_of(lambda x: cross_entropy(x, targets, 0.1)[0])
    return _compare(
        "cross-entropy value and gradient",
        f"({rows}, {vocab}) logits",
        {
            "nn.losses.cross_entropy": lambda: mlx_loss(logits),
            "train.loss": lambda: fast_loss(logits),
        },
        repeats,
        ("nn.losses.cross_entropy", "train.loss"),
    )


def attention_chunks_row(batch: int, tokens: int, heads: int = 12, repeats: int = 5) -> dict:
    """The CPU attention core over the whole batch at once against per-chunk (the library's
    ``CHUNK_BYTES``), and the core of a softmax over the whole batch as before."""
    from mlx_caption.models.layers import attention
    from mlx_caption.models.layers.activations import fast_softmax

    q, k, v = (mx.random.normal((batch, heads, tokens, 64)) for _ in range(3))
    mx.eval(q, k, v)

    def with_chunk_bytes(size):
        def run():
            saved, attention.CHUNK_BYTES = attention.CHUNK_BYTES, size
            try:
                return attention.scaled_dot_product_attention(q, k, v, 0.125)
            finally:
                attention.CHUNK_BYTES = saved

        return run

    return _compare(
        "attention chunks",
        f"B={batch} H={heads} T={tokens} hd=64",
        {
            "softmax then weighted sum, whole batch": lambda: (
                fast_softmax((q * 0.125) @ k.swapaxes(-1, -2)) @ v
            ),
            "library core, whole batch": with_chunk_bytes(1 << 40),
            "library core, chunked": with_chunk_bytes(attention.CHUNK_BYTES),
        },
        repeats,
        ("softmax then weighted sum, whole batch", "library core, chunked"),
    )


def patch_row(batch: int, cfg: CLIPVisionConfig, repeats: int = 5) -> dict:
    from mlx_caption.models.layers.stems import PatchEmbedding

    pe = PatchEmbedding(3, cfg.hidden_size, cfg.patch_size)
    x = mx.random.normal((batch, cfg.image_size, cfg.image_size, 3))
    mx.eval(pe.parameters(), x)
    d = cfg.hidden_size
    return _compare(
        "patch embedding",
        f"B={batch} {cfg.image_size}px p={cfg.patch_size} D={d}",
        {
            "mx.conv2d": lambda: mx.conv2d(x, pe.weight, stride=cfg.patch_size).reshape(
                batch, -1, d
            ),
            "reshape+matmul": lambda: pe(x),
        },
        repeats,
        ("mx.conv2d", "reshape+matmul"),
    )


def conv_grad_row(batch: int, side: int, channels: int, repeats: int = 5) -> dict:
    """Forward + backward of a stem layer, ``channels`` -> ``2 * channels`` at ``side`` px."""
    from mlx_caption.models.layers.conv import _im2col, conv3x3_stride2

    x = mx.random.normal((batch, side, side, channels))
    w = mx.random.normal((2 * channels, 3, 3, channels)) * 0.1
    probe = mx.random.normal((batch, side // 2, side // 2, 2 * channels))
    mx.eval(x, w, probe)

    def grads(conv):
        fn = mx.compile(mx.grad(lambda x, w: (conv(x, w) * probe).sum(), argnums=(0, 1)))
        return lambda: mx.concatenate([g.reshape(-1) for g in fn(x, w)])  # input, kernel

    def im2col(x, w):
        return _im2col(x) @ w.reshape(w.shape[0], -1).T

    return _compare(
        "conv stem gradient",
        f"B={batch} {side}px {channels}->{2 * channels}",
        {
            "autodiff mx.conv2d": grads(lambda x, w: mx.conv2d(x, w, stride=2, padding=1)),
            "autodiff im2col": grads(im2col),
            "conv3x3_stride2": grads(conv3x3_stride2),
        },
        repeats,
        ("autodiff mx.conv2d", "conv3x3_stride2"),
    )


def layer_norm_rows(rows: int, width: int = 768, repeats: int = 9) -> list[dict]:
    """LayerNorm forward, and forward + backward: MLX's, compiled by hand, and the library's
    (:mod:`~mlx_caption.models.layers.norm`: row means as matmuls, gradient written out)."""
    from mlx_caption.models.layers.norm import layer_norm

    x = mx.random.normal((rows, width))
    w, b = mx.random.normal((width,)), mx.random.normal((width,))
    dy = mx.random.normal((rows, width))
    mx.eval(x, w, b, dy)

    @mx.compile
    def manual(x):
        mean = x.mean(-1, keepdims=True)
        xc = x - mean
        return xc * mx.rsqrt((xc * xc).mean(-1, keepdims=True) + 1e-5) * w + b

    def with_grad(norm: Callable) -> Callable[[], Any]:
        grad = mx.compile(mx.grad(lambda x, w, b: (norm(x, w, b, 1e-5) * dy).sum(), (0, 1, 2)))
        return lambda: mx.eval(grad(x, w, b))

    forward = _compare(
        "layer norm",
        f"({rows}, {width})",
        {
            "mx.fast.layer_norm": lambda: mx.fast.layer_norm(x, w, b, 1e-5),
            "compiled by hand": lambda: manual(x),
            "mlx_caption": lambda: layer_norm(x, w, b, 1e-5),
        },
        repeats,
        ("mx.fast.layer_norm", "mlx_caption"),
    )
    backward = _compare(
        "layer norm forward + backward",
        f"({rows}, {width})",
        {"mx.fast.layer_norm": with_grad(mx.fast.layer_norm), "mlx_caption": with_grad(layer_norm)},
        repeats,
    )
    return [forward, backward]


def blas_threads_row(vit: nn.Module, batch: int, repeats: int = 3) -> dict:
    """ViT forward: BLAS on all cores, on one, and the batch split over two CPU streams."""
    import os

    if backend.blas_thread_count() is None:
        return {"experiment": "blas threads", "skipped": "no OpenBLAS/MKL loaded by mlx_caption"}
    cores = os.cpu_count() or 1
    size = vit.config.input_size
    x = mx.random.normal((batch, size, size, 3))
    streams = [mx.new_stream(mx.cpu) for _ in range(2)]

    # Each variant evaluates inside its thread setting (backend.blas_threads restores it).
    def run(threads: int):
        def go():
            with backend.blas_threads(threads):
                out = vit(x).last_hidden_state
                mx.eval(out)
            return out

        return go

    def split():
        half = batch // 2
        outs = []
        with backend.blas_threads(1):
            for s, part in zip(streams, (x[:half], x[half:]), strict=True):
                with mx.stream(s):
                    outs.append(vit(part).last_hidden_state)
            mx.eval(*outs)
        return mx.concatenate(outs)

    return _compare(
        "blas threads",
        f"ViT B={batch}",
        {
            f"1 stream, BLAS {cores} threads": run(cores),
            "1 stream, BLAS 1 thread": run(1),
            "2 streams, BLAS 1 thread each": split,
        },
        repeats,
    )


def checkpoint_memory_row(model: Any, batch: int) -> dict:
    """Peak MB of a fine-tuning step, with/without gradient checkpointing, compiled or not."""
    from mlx_caption.bench.train import _batch, _release, _step

    pixels, tokens = _batch(model, batch, 20, 0)
    pixels = mx.array(pixels)
    model.train()
    model.unfreeze_encoder()
    out = {}
    try:
        for compiled in (False, True):
            for ckpt in (False, True):
                model.encoder.grad_checkpoint = ckpt
                step = _step(
                    model, from_features=False, compile=compiled, images=batch, cpu_streams=1
                )
                step(pixels, tokens)
                _release()
                step(pixels, tokens)
                del step
                label = f"{'compiled' if compiled else 'uncompiled'}, checkpoint {ckpt}"
                out[label] = mx.get_peak_memory() / 2**20
    finally:
        model.encoder.grad_checkpoint = False
        model.freeze_encoder()
        model.eval()
    return {"experiment": "checkpoint memory", "shape": f"batch {batch}", "peak_mb": out}


def run_ops(quick: bool = False, tiny: bool = False) -> dict[str, Any]:
    """All experiments on ViT-B/32 and B/16 shapes (or tiny ones for tests)."""
    from mlx_caption.bench.encoder import TINY, build_pair, encoder_config
    from mlx_caption.bench.models import TINY_DECODER, build_captioner

    reps = 3 if (quick or tiny) else 9
    if tiny:
        b32, b16, cfg, decoder, batch = (2, 17), (2, 17), TINY, TINY_DECODER, 2
    else:
        b32, b16, cfg, decoder, batch = (32, 50), (8, 197), encoder_config(VIT_B32), "tiny", 16
    rows = softmax_rows(*b32, repeats=reps) + softmax_rows(*b16, repeats=reps)
    rows.append(activation_row(b32[0] * b32[1], cfg.intermediate_size, reps))
    rows.append(quick_gelu_vjp_row(b32[0] * b32[1], cfg.intermediate_size, max(2, reps // 2)))
    rows.append(fusion_depth_row(b32[0] * b32[1], cfg.intermediate_size, reps))
    rows.append(kernel_boundary_row(*((16, 64) if tiny else (2560, 8192)), repeats=reps))
    rows.append(cross_entropy_row(*((16, 64) if tiny else (2560, 8192)), repeats=reps))
    rows.append(attention_chunks_row(*b16, heads=4 if tiny else 12, repeats=reps))
    rows.append(patch_row(b32[0], cfg, reps))
    # The demo's second stem layer (32 images, 64 px -> 32 px -> 16 px, 24 -> 48 channels).
    rows.append(conv_grad_row(*((2, 8, 4) if tiny else (32, 32, 24)), repeats=reps))
    rows += layer_norm_rows(b32[0] * b32[1], cfg.hidden_size, reps)
    vit, _ = build_pair(cfg, bridge=False)
    rows.append(blas_threads_row(vit, batch, repeats=max(2, reps // 3)))
    model, _ = build_captioner(cfg, decoder, bridge=False)
    rows.append(checkpoint_memory_row(model, batch))
    return {"experiments": rows}


def ops_markdown(result: dict[str, Any]) -> str:
    """The experiments as markdown."""
    lines = [
        "# Op-level experiments (CPU)",
        "",
        "| experiment | shape | variant | ms | speedup vs first | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for row in result["experiments"]:
        if "skipped" in row:
            notes.append(f"- {row['experiment']}: skipped ({row['skipped']})")
            continue
        if "peak_mb" in row:
            notes.append(
                f"- {row['experiment']} ({row['shape']}): "
                + ", ".join(f"{k}: {v:.0f} MB" for k, v in row["peak_mb"].items())
            )
            continue
        diff = row.get("max_abs_diff")
        for i, (variant, ms) in enumerate(row["ms"].items()):
            lines.append(
                f"| {row['experiment'] if i == 0 else ''} | {row['shape'] if i == 0 else ''} "
                f"| {variant} | {ms:.2f} | {row['speedup'][variant]:.2f}x "
                f"| {'' if diff is None or i == 0 else f'{diff:.1e}'} |"
            )
    return "\n".join(lines + [""] + notes) + "\n"
