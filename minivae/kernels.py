"""Fused CuPy kernels: on a GPU, a few NumPy-style lines of the library as one kernel launch each.

A training step at small batches is bound by launches, not arithmetic (`benchmarks/count_ops.py`):
every array operation is one kernel, whatever its size. Each function here does in one elementwise
kernel what the library's NumPy lines do in several, and is called only where those lines stand, on
CuPy arrays (`use(xp)`); NumPy always runs the lines themselves, which stay the reference a reader
follows. The CuPy tests check each kernel against those lines.

    col2im                       zeros + kh*kw strided adds  ->  1 kernel (same adds, same order)
    relu                         compare + multiply          ->  1 kernel (bit for bit)
    bce_with_logits_elements     13 elementwise operations   ->  1 kernel
    kl_normal_elements           8 elementwise operations    ->  1 kernel
    adam                         Adam's three lines          ->  1 kernel (the same formula)

Each call site reads `if kernels.use(xp): return kernels.<name>(...)` above the lines it stands for.
MINIVAE_FUSED=0 in the environment turns every kernel off, as does `with minivae.kernels.off():` for a
block (the benchmark's kernels on/off comparison, the tests' reference).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from minivae.backend import get_array_module

ENABLED = os.environ.get("MINIVAE_FUSED", "1") != "0"


def use(xp: Any) -> bool:
    """True when the fused kernels should run: on CuPy (any array module but NumPy), unless turned off."""
    return ENABLED and xp is not np


@contextlib.contextmanager
def off() -> Iterator[None]:
    """The block runs without the kernels: the library's own lines on every backend."""
    global ENABLED
    saved, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = saved


@functools.cache
def _kernel(name: str) -> Any:
    """Build (once) the CuPy ElementwiseKernel `name`; CuPy compiles it on its first call."""
    import cupy  # noqa: PLC0415  (only ever called for CuPy arrays)

    params, body = _SOURCES[name]
    return cupy.ElementwiseKernel(*params, body, f"minivae_{name}")


_SOURCES = {
    # xt[c, h, w, n] = sum over the (a, b) kernel offsets that reach (h, w) of cols[c, a, b, r, q, n],
    # h = a + sh r, w = b + sw q: each output pixel gathers its own terms (no atomics), in the order
    # col2im's loop adds them (a, then b, ascending), starting from 0: the same float sums.
    "col2im": (
        (
            "raw T cols, int32 n_, int32 h_, int32 w_, int32 ho, int32 wo, "
            "int32 kh, int32 kw, int32 sh, int32 sw",
            "T xt",
        ),
        """
        const int n = i % n_;
        const int w = (i / n_) % w_;
        const int h = (i / ((ptrdiff_t)n_ * w_)) % h_;
        const ptrdiff_t c = i / ((ptrdiff_t)n_ * w_ * h_);
        T acc = 0;
        for (int a = h % sh; a < kh && a <= h; a += sh) {
            const int r = (h - a) / sh;
            if (r >= ho) continue;
            for (int b = w % sw; b < kw && b <= w; b += sw) {
                const int q = (w - b) / sw;
                if (q >= wo) continue;
                acc += cols[((((c * kh + a) * kw + b) * ho + r) * (ptrdiff_t)wo + q) * n_ + n];
            }
        }
        xt = acc;
        """,
    ),
    # ReLU's forward: mask = x > 0, y = x * mask (x * 1 or x * 0, as NumPy multiplies by a bool)
    "relu": (("T x", "T y, bool mask"), "mask = x > (T)0; y = x * (T)mask;"),
    # BCE on logits and its gradient, the formulas of losses._bce_elements and bce_with_logits:
    # pos = max(x, 0), neg = min(x, 0) (as x - pos, so a NaN logit stays NaN), one_plus_e = 1 + e^-|x|,
    # elem = pos - x t + log(one_plus_e),  grad = (sigmoid(x) - t) * scale,  sigmoid = e^neg / one_plus_e
    "bce": (
        ("T x, T t, T scale", "T elem, T grad"),
        """
        const T pos = x > (T)0 ? x : (T)0;
        const T neg = x - pos;
        const T one_plus_e = exp(neg - pos) + (T)1;
        elem = pos - x * t + log(one_plus_e);
        grad = (exp(neg) / one_plus_e - t) * scale;
        """,
    ),
    # beta KL(N(mu, exp(logvar)) || N(0, 1)) per unit and its gradients, losses.kl_normal's formulas:
    # var_m1 = exp(logvar) - 1, elem = (var_m1 + mu^2 - logvar) / 2, dmu = bs mu, dlogvar = bs var_m1 / 2,
    # bs = beta * the reduction's scale
    "kl": (
        ("T mu, T logvar, T bs", "T elem, T dmu, T dlogvar"),
        """
        const T var_m1 = exp(logvar) - (T)1;
        elem = (T)0.5 * (var_m1 + mu * mu - logvar);
        dmu = bs * mu;
        dlogvar = ((T)0.5 * bs) * var_m1;
        """,
    ),
    # Adam's update, nn.optim.Adam's three lines: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
    # p -= step * m / (sqrt(v) * inv_sqrt_bc2 + eps) with step = lr / bc1 and inv_sqrt_bc2 = 1 / sqrt(bc2).
    # 1 - b1 and 1 - b2 come in computed in double precision, as the NumPy lines compute them: in float32,
    # 1 - 0.999f is 0.00099999 instead of 0.001, a 1e-5 relative error in v.
    "adam": (
        ("T g, T b1, T one_minus_b1, T b2, T one_minus_b2, T inv_sqrt_bc2, T eps, T step", "T p, T m, T v"),
        """
        m = b1 * m + one_minus_b1 * g;
        v = b2 * v + one_minus_b2 * g * g;
        p -= step * m / (sqrt(v) * inv_sqrt_bc2 + eps);
        """,
    ),
}


def col2im(cols: Any, x_shape: tuple[int, int, int, int], kh: int, kw: int, sh: int, sw: int) -> Any:
    """nn.conv.col2im as one kernel: cols (C*kh*kw, Ho*Wo*N) -> x (N, C, H, W), batch-last in memory
    (a transposed view of (C, H, W, N)), as the loop returns it."""
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    xt = xp.empty((c, h, w, n), dtype=cols.dtype)
    sizes = (np.int32(v) for v in (n, h, w, ho, wo, kh, kw, sh, sw))
    _kernel("col2im")(xp.ascontiguousarray(cols), *sizes, xt)
    return xt.transpose(3, 0, 1, 2)


def relu(x: Any) -> tuple[Any, Any]:
    """(x * (x > 0), x > 0) in one kernel: ReLU's output and the mask its backward keeps."""
    return _kernel("relu")(x)


def bce_with_logits_elements(logits: Any, target: Any, scale: float) -> tuple[Any, Any]:
    """(elementwise BCE, (sigmoid(logits) - target) * scale) in one kernel."""
    return _kernel("bce")(logits, target, scale)


def kl_normal_elements(mu: Any, logvar: Any, beta_scale: float) -> tuple[Any, Any, Any]:
    """(elementwise KL, dmu, dlogvar) in one kernel, the gradients times beta_scale (beta times the
    reduction's d(value)/d(element))."""
    return _kernel("kl")(mu, logvar, beta_scale)


def adam(
    p: Any, g: Any, m: Any, v: Any, b1: float, b2: float, bc1: float, bc2: float, lr: float, eps: float
) -> None:
    """nn.optim.Adam's update of p, m and v in place, in one kernel that reads g, p, m, v once and writes
    p, m, v once. bc1 = 1 - b1^t and bc2 = 1 - b2^t are the bias corrections."""
    _kernel("adam")(g, b1, 1 - b1, b2, 1 - b2, 1 / math.sqrt(bc2), eps, lr / bc1, p, m, v)
