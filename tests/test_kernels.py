"""minivae.kernels: each fused CuPy kernel against the library lines it stands for (on a GPU), and the
switch that turns them off (everywhere)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest
from conftest import needs_cupy
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae import kernels
from minivae.backend import to_numpy
from minivae.nn import ReLU
from minivae.nn.conv import batch_last, col2im
from minivae.nn.losses import REDUCTIONS, _scale, bce_with_logits, kl_normal
from minivae.nn.optim import Adam


@pytest.fixture
def unfused():
    """A function that runs fn(*args) with the kernels off: the library's own lines, on any backend."""

    def run(fn, *args):
        with kernels.off():
            return fn(*args)

    return run


def test_numpy_never_takes_the_kernels_and_off_turns_them_off_for_a_block():
    assert kernels.ENABLED  # on unless MINIVAE_FUSED=0: the suite runs the kernels where there is CuPy
    assert not kernels.use(np) and kernels.use(object())  # any array module but NumPy: CuPy
    with pytest.raises(RuntimeError), kernels.off():
        assert not kernels.use(object())
        raise RuntimeError
    assert kernels.use(object())  # back on, even after an exception


def test_minivae_fused_0_turns_the_kernels_off():
    import os
    import subprocess
    import sys

    code = "from minivae import kernels; print(kernels.ENABLED, kernels.use(object()))"
    for value, expect in (("0", "False False"), ("1", "True True")):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "MINIVAE_FUSED": value},
            capture_output=True,
            text=True,
        )
        assert out.stdout.split() == expect.split(), out.stderr


@needs_cupy
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    out=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    extra=st.tuples(st.integers(0, 2), st.integers(0, 2)),
)
def test_col2im_kernel_equals_the_loop_bit_for_bit(n, c, k, s, out, extra):
    """The kernel adds each pixel's terms in the loop's order, from 0: the same float32 sums exactly.
    `extra` rows and columns past the last window (as a stride leaves) must come out zero."""
    import cupy

    (kh, kw), (sh, sw), (ho, wo) = k, s, out
    h, w = (ho - 1) * sh + kh + extra[0] % sh, (wo - 1) * sw + kw + extra[1] % sw
    cols = np.random.default_rng(n + 10 * c).standard_normal((c * kh * kw, n * ho * wo)).astype(np.float32)
    fused = kernels.col2im(cupy.asarray(cols), (n, c, h, w), kh, kw, sh, sw)
    with kernels.off():
        loop = col2im(cupy.asarray(cols), (n, c, h, w), kh, kw, sh, sw)
    assert fused.shape == (n, c, h, w) and fused.strides == loop.strides  # batch-last, as the loop's
    np.testing.assert_array_equal(to_numpy(fused), to_numpy(loop))
    np.testing.assert_array_equal(to_numpy(fused), col2im(cols, (n, c, h, w), kh, kw, sh, sw))


@needs_cupy
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_kernel_equals_the_two_lines_bit_for_bit(dtype, unfused):
    """Zeros keep their sign and NaN stays NaN, as x * (x > 0) gives them."""
    import cupy

    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(dtype)
    x.flat[:3] = [0.0, -0.0, np.nan]
    xc = batch_last(cupy.asarray(x))  # laid out (C, H, W, N), as the convolutions return it
    fused, ref = ReLU(), ReLU()
    y, y_ref = fused.forward(xc), unfused(ref.forward, xc)
    np.testing.assert_array_equal(to_numpy(y), to_numpy(y_ref))
    assert np.array_equal(np.signbit(to_numpy(y)), np.signbit(to_numpy(y_ref)))
    np.testing.assert_array_equal(to_numpy(fused.mask), to_numpy(ref.mask))
    dy = cupy.ones_like(xc)
    np.testing.assert_array_equal(to_numpy(fused.backward(dy)), to_numpy(ref.backward(dy)))


@needs_cupy
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_kernel_matches_the_elementwise_lines(reduction, unfused):
    """float32 value and gradient of the kernel against the library's lines on the same GPU: the value
    within (|x| + 1) epsilons per element (as against float64), the gradient within 2 epsilons."""
    import cupy

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((8, 1, 28, 28)) * 20).astype(np.float32)
    x.flat[:3] = [0.0, 100.0, -100.0]
    t = rng.random(x.shape).astype(np.float32)
    xc, tc = cupy.asarray(x), cupy.asarray(t)
    value, grad = bce_with_logits(xc, tc, reduction)
    ref_value, ref_grad = unfused(bce_with_logits, xc, tc, reduction)
    eps = np.finfo(np.float32).eps
    if reduction == "none":
        assert np.all(np.abs(to_numpy(value) - to_numpy(ref_value)) <= (np.abs(x) + 1) * eps)
    else:  # the same reduction kernel over elements that differ by an epsilon or so
        np.testing.assert_allclose(to_numpy(value), to_numpy(ref_value), rtol=1e-5)
    scale = _scale(x.shape, reduction)  # grad = (sigmoid(x) - t) * scale, |sigmoid(x) - t| <= 1
    np.testing.assert_allclose(to_numpy(grad), to_numpy(ref_grad), rtol=0, atol=2 * eps * scale)
    nan_value, nan_grad = bce_with_logits(
        cupy.asarray([[np.nan]], dtype=np.float32), tc[:1, 0, 0, :1], "none"
    )
    assert np.isnan(to_numpy(nan_value)).all() and np.isnan(to_numpy(nan_grad)).all()


@needs_cupy
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kl_kernel_matches_the_elementwise_lines(reduction, unfused):
    """float32 KL value and gradients of the kernel against the library's lines on the same GPU."""
    import cupy

    rng = np.random.default_rng(2)
    mu, logvar = (cupy.asarray((rng.standard_normal((16, 15)) * 3).astype(np.float32)) for _ in range(2))
    fused, ref = kl_normal(mu, logvar, 0.7, reduction), unfused(kl_normal, mu, logvar, 0.7, reduction)
    for a, b in zip(fused, ref):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-6 * float(abs(b).max()))


# ------------------------------------------------------------------ the kernel bodies, on the CPU
# Without a GPU (as in CI) the bodies above would go untested. Each is C++ too: compiled inside a loop
# over i, with the variables CuPy's ElementwiseKernel would declare (a raw array indexed flat, each
# other argument's i-th element or a scalar, each output's i-th element as a reference), it runs on the
# CPU and is held to the library's NumPy lines.

CXX = shutil.which("c++") or shutil.which("g++")


def run_body_on_cpu(
    name: str, tmp_path, size: int, *args: Any, out_dtypes: tuple, out_init: tuple = ()
) -> tuple[np.ndarray, ...]:
    """Kernel `name` of minivae.kernels over i in [0, size), on the CPU: its outputs as flat arrays.
    out_init: the outputs' values before the kernel runs (for a kernel that updates them in place)."""
    (ins, outs), body = kernels._SOURCES[name]
    dtype = next(a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f")
    ctype = {"float32": "float", "float64": "double"}[dtype.name]
    params, decls, cargs, arrays = [], [], [], []  # arrays: kept alive while the C code reads them
    for spec, a in zip(ins.split(","), args):
        *raw, ty, var = spec.split()
        t = {"T": ctype, "int32": "int", "bool": "bool"}[ty]
        if raw or isinstance(a, np.ndarray):
            params.append(f"const {t}* {'' if raw else '_p_'}{var}")
            decls.append("" if raw else f"const {t} {var} = _p_{var}[i];")
            arrays.append(np.ascontiguousarray(a))
            cargs.append(arrays[-1].ctypes.data_as(ctypes.c_void_p))
        else:
            params.append(f"{t} {var}")
            cargs.append({"float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int}[t](a))
    results = []
    for spec, dt in zip(outs.split(","), out_dtypes):
        ty, var = spec.split()
        t = {"T": ctype, "bool": "bool"}[ty]
        params.append(f"{t}* _p_{var}")
        decls.append(f"{t}& {var} = _p_{var}[i];")
        init = out_init[len(results)] if out_init else None
        results.append(np.empty(size, dtype=dt) if init is None else np.array(init, dtype=dt).reshape(-1))
        cargs.append(results[-1].ctypes.data_as(ctypes.c_void_p))
    src = tmp_path / f"{name}_{ctype}.cpp"
    src.write_text(
        "#include <cmath>\n#include <cstddef>\nusing std::exp; using std::log;\n"
        f'extern "C" void run({", ".join(params)}, std::ptrdiff_t size) {{\n  typedef {ctype} T;\n'
        f"  for (std::ptrdiff_t i = 0; i < size; ++i) {{ {' '.join(decls)}\n{body}\n  }}\n}}\n"
    )
    lib = src.with_suffix(".so")
    subprocess.run(
        [CXX, "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True
    )
    ctypes.CDLL(str(lib)).run(*cargs, ctypes.c_ssize_t(size))
    return tuple(results)


@pytest.mark.skipif(CXX is None, reason="no C++ compiler to run the kernel bodies on the CPU")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_bodies_run_on_the_cpu_equal_the_library_lines(dtype, tmp_path):
    """col2im (strides 1 to 3, windows that do and do not fill the input) and ReLU bit for bit; BCE, KL and
    Adam within float32 rounding of the NumPy lines (C++'s exp and log are not NumPy's)."""
    rng = np.random.default_rng(3)
    for n, c, kh, kw, sh, sw, ho, wo, extra in [(2, 3, 3, 3, 2, 2, 4, 5, 1), (1, 2, 3, 2, 1, 3, 3, 2, 0),
                                               (3, 1, 4, 1, 3, 1, 2, 6, 2), (2, 2, 1, 1, 2, 2, 3, 3, 1)]:  # fmt: skip
        h, w = (ho - 1) * sh + kh + extra % sh, (wo - 1) * sw + kw + extra % sw
        cols = rng.standard_normal((c * kh * kw, n * ho * wo)).astype(dtype)
        ints = [np.int32(v) for v in (n, h, w, ho, wo, kh, kw, sh, sw)]
        (xt,) = run_body_on_cpu("col2im", tmp_path, c * n * h * w, cols, *ints, out_dtypes=(dtype,))
        loop = col2im(cols, (n, c, h, w), kh, kw, sh, sw).transpose(1, 2, 3, 0)  # (C, H, W, N)
        np.testing.assert_array_equal(xt.reshape(c, h, w, n), loop)  # the same adds in the same order
    x = rng.standard_normal(500).astype(dtype)
    x[:3] = [0.0, -0.0, np.nan]
    y, mask = run_body_on_cpu("relu", tmp_path, x.size, x, out_dtypes=(dtype, np.bool_))
    np.testing.assert_array_equal(mask, x > 0)
    np.testing.assert_array_equal(y, x * (x > 0))
    assert np.array_equal(np.signbit(y), np.signbit(x * (x > 0)))
    eps = np.finfo(dtype).eps
    logits, t = (rng.standard_normal(2000) * 30).astype(dtype), rng.random(2000).astype(dtype)
    logits[:3] = [0.0, 100.0, -100.0]
    elem, grad = run_body_on_cpu("bce", tmp_path, logits.size, logits, t, 0.25, out_dtypes=(dtype, dtype))
    ref_elem, ref_grad = bce_with_logits(logits, t, "none")
    assert np.all(np.abs(elem - ref_elem) <= 2 * (np.abs(logits) + 1) * eps)
    np.testing.assert_allclose(grad, ref_grad * 0.25, rtol=0, atol=2 * eps)
    mu, logvar = ((rng.standard_normal(300) * 3).astype(dtype) for _ in range(2))
    elem, dmu, dlogvar = run_body_on_cpu("kl", tmp_path, mu.size, mu, logvar, 0.7, out_dtypes=(dtype,) * 3)
    ref = kl_normal(mu, logvar, 1.0, "none")  # beta 1, "none": the elements and unscaled gradients
    for got, want in zip((elem, dmu, dlogvar), (ref[0], 0.7 * ref[1], 0.7 * ref[2])):
        np.testing.assert_allclose(got, want, rtol=8 * eps, atol=8 * eps * float(np.abs(want).max()))
    p, m, v = rng.standard_normal(400).astype(dtype), np.zeros(400, dtype), np.zeros(400, dtype)
    opt = Adam([("p", p.copy(), np.zeros_like(p))], lr=1e-2, eps=1e-7)
    for t in range(1, 4):
        g = (rng.standard_normal(400) * 10.0 ** rng.integers(-6, 2, 400)).astype(dtype)
        b1, b2 = opt.betas
        scalars = (b1, 1 - b1, b2, 1 - b2, 1 / np.sqrt(1 - b2**t), 1e-7, 1e-2 / (1 - b1**t))
        p, m, v = run_body_on_cpu(
            "adam", tmp_path, p.size, g, *scalars, out_dtypes=(dtype,) * 3, out_init=(p, m, v)
        )
        opt.named[0][2][...] = g
        opt.step()  # the NumPy lines
        state = opt.state["p"]
        for got, want in zip((p, m, v), (opt.named[0][1], state["exp_avg"], state["exp_avg_sq"])):
            np.testing.assert_allclose(got, want, rtol=8 * eps, atol=8 * eps * float(np.abs(want).max()))
