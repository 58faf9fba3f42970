"""Activations that are fast on the CPU and exact to about 1e-6.

MLX's CPU ``exp``/``sigmoid``/``erf``/``tanh`` are scalar libm calls: on the ViT's MLP
activations a plain ``sigmoid`` costs more than the matmul feeding it. The forms below use
only abs, multiply, add and divide, which MLX's compiled CPU kernels fuse and vectorise.
On a GPU the plain MLX functions are used.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from mlx_caption import backend

# exp(t) ~ 1 + t + t^2/2 + t^3/6 + t^4/24 on t = 1.702 |x| / 64, then inverted and squared six
# times: exp(-1.702 |x|) = (1 / exp(t))^64. Max abs error of quick_gelu < 1e-6 (tested).
_EXP_COEFFS = [1.0 / math.factorial(k) for k in range(5)]
_SQUARINGS = 6


def _fast_exp_neg(y: mx.array) -> mx.array:
    """``exp(-y)`` for ``y >= 0``: polynomial exp on ``y / 64``, inverted, squared 6 times."""
    t = y * (1.0 / 2**_SQUARINGS)
    p = _EXP_COEFFS[-1]
    for c in reversed(_EXP_COEFFS[:-1]):
        p = p * t + c
    e = 1.0 / p
    for _ in range(_SQUARINGS):
        e = e * e
    return e


def _fast_quick_gelu_impl(x: mx.array) -> mx.array:
    """``x * sigmoid(1.702 x)`` from abs, multiply, add and divide only.

    Why: MLX's CPU ``exp``/``sigmoid`` are scalar libm calls (sigmoid on the ViT's MLP
    activations costs more than the matmul feeding it), and inside ``mx.compile``d CPU
    kernels ``round``/``floor``, ``minimum``/``maximum`` and comparisons keep GCC from
    vectorising the loop, while integer casts and bit-casts (the usual ``2**n`` exponent
    trick) split the fusion into several kernels: that version measured no faster than
    ``mx.sigmoid`` here. Every op below vectorises and fuses.

    Uses ``x * sigmoid(1.702 x) == (x + |x| (1 - e) / (1 + e)) / 2`` with
    ``e = exp(-1.702 |x|)`` in (0, 1], so nothing overflows: for huge ``|x|`` the
    polynomial goes to inf and ``e`` to 0, the exact limits. NaN propagates.
    """
    a = mx.abs(x)
    e = _fast_exp_neg(1.702 * a)
    return 0.5 * (x + a * (1.0 - e) / (1.0 + e))


# The same computation as three compiled kernels cut by hand, each within MLX's fusion limit
# of 11 chained ops (the ~23-deep function above is otherwise cut wherever the limit falls),
# and with the derivative written out: autodiff through the polynomial and the squarings made
# the backward pass several times slower than this one, slower even than plain sigmoid's
# (``bench --ops``, "quick_gelu backward").
_QG_COEFFS = _EXP_COEFFS


def _exp_poly64(y: mx.array) -> mx.array:
    """``exp(y / 64)`` by its degree-4 polynomial in Estrin form (5 ops deep, for fusing)."""
    c = _QG_COEFFS
    t = y * (1.0 / 2**_SQUARINGS)
    t2 = t * t
    return (c[0] + c[1] * t) + (c[2] + c[3] * t) * t2 + c[4] * (t2 * t2)


@mx.compile
def _quick_gelu_poly(x: mx.array) -> mx.array:
    """``exp(1.702 |x| / 64)``."""
    return _exp_poly64(mx.abs(x) * 1.702)


def _inverse_power(p: mx.array, squarings: int) -> mx.array:
    """``(1 / p) ** (2 ** squarings)`` by repeated squaring."""
    e = 1.0 / p
    for _ in range(squarings):
        e = e * e
    return e


def kernel_boundary(x: mx.array) -> mx.array:
    """``x`` unchanged, but never fused with what comes before or after it.

    The hand-cut chains here are separate compiled kernels when called eagerly, but under an
    outer ``mx.compile`` (the training step, ``generate``'s step) or a gradient transform a
    compiled function's graph is inlined, and the outer compiler fuses the whole chain and
    cuts it wherever its depth limit falls, which ran several times slower than the hand
    cuts. ``mx.contiguous`` is never fused, so it keeps each cut where it was placed; on an
    array that is already contiguous it copies nothing.
    """
    return mx.contiguous(x)


# ``exp(-1.702 |x|) = (1 / p)^64`` with ``p = _quick_gelu_poly(x)``.
_quick_gelu_exp = mx.compile(functools.partial(_inverse_power, squarings=_SQUARINGS))


@mx.compile
def _quick_gelu_value(x: mx.array, e: mx.array) -> mx.array:
    return 0.5 * (x + mx.abs(x) * (1.0 - e) / (1.0 + e))


@mx.compile
def _quick_gelu_grad(x: mx.array, e: mx.array, cotangent: mx.array) -> mx.array:
    # d/dx x s(1.702 x) = s + 1.702 x s (1 - s); with inv = 1 / (1 + e), s = inv for x >= 0
    # and e inv below, and s (1 - s) = e inv^2 either way.
    inv = 1.0 / (1.0 + e)
    s = mx.where(x >= 0, inv, e * inv)
    return cotangent * (s + 1.702 * x * e * inv * inv)


def _single(primals):
    # With a single input MLX passes the primal itself and expects a single cotangent back.
    return primals[0] if isinstance(primals, (list, tuple)) else primals


def _gate_exp(poly: Callable, x: mx.array) -> mx.array:
    """``exp(-|z|)`` from ``poly(x) = exp(|z| / 64)``, each piece its own kernel."""
    return kernel_boundary(_quick_gelu_exp(kernel_boundary(poly(x))))


def _sigmoid_gate(poly: Callable, grad: Callable) -> Callable:
    """``x * sigmoid(z(x))`` as a custom function: ``poly(x)`` is ``exp(|z| / 64)``, and
    ``grad(x, exp(-|z|), cotangent)`` the hand-written derivative. Each piece is its own
    compiled kernel (see above); only this wrapper is shared."""

    @mx.custom_function
    def activation(x: mx.array) -> mx.array:
        return _quick_gelu_value(x, _gate_exp(poly, x))

    @activation.vjp
    def activation_vjp(primals, cotangent, output):
        x = _single(primals)
        return grad(x, _gate_exp(poly, x), cotangent)

    return activation


# ``x * sigmoid(1.702 x)``, fast on the CPU (see :func:`_fast_quick_gelu_impl`).
fast_quick_gelu = _sigmoid_gate(_quick_gelu_poly, _quick_gelu_grad)


# Abramowitz & Stegun 7.1.26: erf(z) = 1 - poly(1 / (1 + P z)) exp(-z^2) for z >= 0, with
# absolute error below 1.5e-7.
_AS_P = 0.3275911
_AS_COEFFS = [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429]


def _fast_gelu_impl(x: mx.array) -> mx.array:
    """Exact (erf) GELU from abs, multiply, add and divide, for the same reason as above.

    ``x Phi(x) == (x + |x| erf(|x| / sqrt 2)) / 2``; max abs error vs erf GELU < 1e-6.
    """
    a = mx.abs(x)
    z = a * 0.7071067811865476
    t = 1.0 / (1.0 + _AS_P * z)
    q = _AS_COEFFS[-1]
    for c in reversed(_AS_COEFFS[:-1]):
        q = q * t + c
    erf = 1.0 - q * t * _fast_exp_neg(z * z)
    return 0.5 * (x + a * erf)


# As three+one hand-cut kernels with an explicit derivative, like fast_quick_gelu: the
# backward pass of the one-function form was slower than nn.gelu_approx's.
_INV_SQRT_2PI = 0.3989422804014327


@mx.compile
def _gelu_erf_poly(x: mx.array) -> mx.array:
    """``exp(x^2 / 2 / 64)``: with the inversion and squarings, ``exp(-x^2 / 2)``."""
    return _exp_poly64(x * x * 0.5)


@mx.compile
def _gelu_erf_qt(x: mx.array) -> mx.array:
    """A&S's ``poly(t) t`` with ``t = 1 / (1 + P |x| / sqrt 2)``; erf = 1 - qt exp(-x^2/2)."""
    c = _AS_COEFFS
    t = 1.0 / (1.0 + (_AS_P * 0.7071067811865476) * mx.abs(x))
    t2 = t * t
    return ((c[0] + c[1] * t) + (c[2] + c[3] * t) * t2 + c[4] * (t2 * t2)) * t


@mx.compile
def _gelu_erf_value(x: mx.array, qt: mx.array, e: mx.array) -> mx.array:
    return 0.5 * (x + mx.abs(x) * (1.0 - qt * e))


@mx.compile
def _gelu_erf_grad(x: mx.array, qt: mx.array, e: mx.array, cotangent: mx.array) -> mx.array:
    # d/dx x Phi(x) = Phi(x) + x phi(x); Phi = (1 + sign(x) erf) / 2, phi = e / sqrt(2 pi).
    erf = 1.0 - qt * e
    phi_cdf = 0.5 + mx.where(x >= 0, 0.5 * erf, -0.5 * erf)
    return cotangent * (phi_cdf + x * e * _INV_SQRT_2PI)


def _gelu_erf_parts(x: mx.array) -> tuple[mx.array, mx.array]:
    return kernel_boundary(_gelu_erf_qt(x)), _gate_exp(_gelu_erf_poly, x)


@mx.custom_function
def fast_gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, fast on the CPU (see :func:`_fast_gelu_impl`)."""
    return _gelu_erf_value(x, *_gelu_erf_parts(x))


@fast_gelu.vjp
def _fast_gelu_vjp(primals, cotangent, output):
    x = _single(primals)
    return _gelu_erf_grad(x, *_gelu_erf_parts(x), cotangent)


def quick_gelu(x: mx.array) -> mx.array:
    """CLIP's ``quick_gelu``: the fast polynomial form on the CPU, MLX's own on a GPU."""
    if backend.on_gpu():
        return nn.gelu_fast_approx(x)
    return fast_quick_gelu(x)


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU: the fast polynomial form on the CPU, MLX's own on a GPU."""
    if backend.on_gpu():
        return nn.gelu(x)
    return fast_gelu(x)


_GELU_A = 1.5957691216057308  # 2 * sqrt(2 / pi)
_GELU_B = _GELU_A * 0.044715


def _fast_gelu_tanh_impl(x: mx.array) -> mx.array:
    """tanh-approximation GELU, ``0.5 x (1 + tanh(u))``, from the same vectorising ops.

    ``0.5 x (1 + tanh(u)) == x sigmoid(z)`` with ``z = 2u = x (A + B x^2)``; ``z`` has the
    sign of ``x``, so ``x sigmoid(z) == (x + |x| (1 - e) / (1 + e)) / 2`` with
    ``e = exp(-|z|)``. Max abs error vs ``nn.gelu_approx`` about 1e-6 (tested).
    """
    a = mx.abs(x)
    e = _fast_exp_neg(a * (_GELU_A + _GELU_B * x * x))
    return 0.5 * (x + a * (1.0 - e) / (1.0 + e))


# Cut by hand with an explicit derivative, like fast_quick_gelu (the one-function form's
# forward pass was several times slower than fast_quick_gelu's on the same array, its
# backward slower than nn.gelu_approx's).
@mx.compile
def _gelu_tanh_poly(x: mx.array) -> mx.array:
    """``exp(|z| / 64)`` with ``z = x (A + B x^2)``."""
    return _exp_poly64(mx.abs(x) * (_GELU_A + _GELU_B * (x * x)))


@mx.compile
def _gelu_tanh_grad(x: mx.array, e: mx.array, cotangent: mx.array) -> mx.array:
    # d/dx x s(z) = s + x s (1 - s) dz/dx, s = sigmoid(z), z with the sign of x.
    inv = 1.0 / (1.0 + e)
    s = mx.where(x >= 0, inv, e * inv)
    return cotangent * (s + x * e * inv * inv * (_GELU_A + (3.0 * _GELU_B) * (x * x)))


# tanh-approximation GELU, fast on the CPU (see :func:`_fast_gelu_tanh_impl`).
fast_gelu_tanh = _sigmoid_gate(_gelu_tanh_poly, _gelu_tanh_grad)


def gelu_tanh(x: mx.array) -> mx.array:
    """tanh-approximation GELU (the decoder's): fast form on the CPU, MLX's own on a GPU."""
    if backend.on_gpu():
        return nn.gelu_approx(x)
    return fast_gelu_tanh(x)


# By their Hugging Face ``hidden_act`` names ("gelu_new" and "gelu_pytorch_tanh" are both the
# tanh approximation).
ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
}


# Softmax needs exp with *relative* accuracy over the whole row, so a longer polynomial and
# fewer squarings than _fast_exp_neg: exp(-y) = (1 / exp(y / 16))^16, exp by its degree-10
# Taylor polynomial. Relative error ~3e-6 for y <= 16 (below that e^-y < 1.2e-7 and only the
# absolute error matters); y = inf gives exactly 0, so masked (-inf) scores work.
#
# Two compiled kernels, not one: MLX fuses at most 11 element-wise ops in a chain, and a
# deeper chain is cut wherever the limit falls (one 25-deep function ran several times slower
# than the same ops split by hand into the two below). The polynomial is evaluated in Estrin
# form (depth 7 instead of Horner's 20) for the same reason.
_SOFTMAX_COEFFS = [1.0 / math.factorial(k) for k in range(11)]
_SOFTMAX_SQUARINGS = 4


@mx.compile
def _softmax_poly(scores: mx.array, row_max: mx.array) -> mx.array:
    """``exp((row_max - scores) / 16)`` by its degree-10 Taylor polynomial (Estrin)."""
    c = _SOFTMAX_COEFFS
    t = (row_max - scores) * (1.0 / 2**_SOFTMAX_SQUARINGS)
    t2 = t * t
    t4 = t2 * t2
    low = (c[0] + c[1] * t) + (c[2] + c[3] * t) * t2
    mid = (c[4] + c[5] * t) + (c[6] + c[7] * t) * t2
    high = (c[8] + c[9] * t) + c[10] * t2
    return low + (mid + high * t4) * t4


_softmax_invert_square = mx.compile(functools.partial(_inverse_power, squarings=_SOFTMAX_SQUARINGS))


def softmax_numerators(scores: mx.array, row_max: mx.array) -> mx.array:
    """``exp(scores - row_max)`` for ``scores <= row_max``."""
    return _softmax_invert_square(kernel_boundary(_softmax_poly(scores, row_max)))


@mx.compile
def _softmax_normalize(e: mx.array, total: mx.array) -> mx.array:
    return e * (1.0 / total)


@mx.compile
def _softmax_grad(p: mx.array, cotangent: mx.array) -> mx.array:
    return p * (cotangent - mx.sum(cotangent * p, axis=-1, keepdims=True))


@mx.custom_function
def fast_softmax(scores: mx.array) -> mx.array:
    """Softmax over the last axis from multiply/add/divide only (max abs error ~1e-6).

    ``mx.softmax`` on the CPU is a scalar ``exp`` per element, several times slower than this
    on a ViT's attention scores, and the attention core is a large share of a ViT's forward
    pass at 197+ tokens (``bench --ops``, "softmax"). The gradient is the
    usual ``p * (g - sum(g * p))``, written out so the backward pass does not differentiate
    the polynomial.
    """
    e = softmax_numerators(scores, mx.max(scores, axis=-1, keepdims=True))
    return _softmax_normalize(e, mx.sum(e, axis=-1, keepdims=True))


@fast_softmax.vjp
def _fast_softmax_vjp(primals, cotangent, output):
    # With a single input MLX passes the primal itself and expects a single cotangent back.
    return _softmax_grad(output, cotangent)


def softmax(scores: mx.array) -> mx.array:
    """Softmax over the last axis: the fast form on the CPU (float32), MLX's own elsewhere."""
    if backend.on_gpu() or scores.dtype != mx.float32:
        return mx.softmax(scores, axis=-1, precise=True)
    return fast_softmax(scores)
