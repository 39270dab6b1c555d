"""The vectorised convolutions against the plain-loop references, and PyTorch's size formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae.nn import Conv2d, ConvTranspose2d, col2im, im2col
from minivae.nn.conv import (
    batch_last,
    conv_output_size,
    conv_transpose_output_size,
    conv_transpose_stride1,
    im2col_loop,
)
from minivae.nn.module import pad2d
from minivae.nn.reference import (
    conv2d_loop,
    conv2d_loop_backward,
    conv_transpose2d_loop,
    conv_transpose2d_loop_backward,
)

TOL = 1e-10


@st.composite
def conv_cases(draw):
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, k - 1))
    size = draw(st.integers(max(1, k - 2 * p), 7))
    return dict(
        n=draw(st.integers(1, 3)),
        cin=draw(st.integers(1, 3)),
        cout=draw(st.integers(1, 3)),
        h=size,
        w=draw(st.integers(max(1, k - 2 * p), 7)),
        k=k,
        s=s,
        p=p,
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_conv2d_matches_loop(c):
    rng = np.random.default_rng(c["seed"])
    layer = Conv2d(c["cin"], c["cout"], c["k"], stride=c["s"], padding=c["p"], rng=rng, dtype="float64")
    x = rng.standard_normal((c["n"], c["cin"], c["h"], c["w"]))
    y = layer.forward(x)
    ho, wo = (conv_output_size(v, c["k"], c["s"], c["p"]) for v in (c["h"], c["w"]))
    assert y.shape == (c["n"], c["cout"], ho, wo)
    w, b = layer.params["weight"], layer.params["bias"]
    np.testing.assert_allclose(y, conv2d_loop(x, w, b, c["s"], c["p"]), rtol=0, atol=TOL)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    dx_ref, dw_ref, db_ref = conv2d_loop_backward(x, w, c["s"], c["p"], dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(layer.grads["weight"], dw_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(layer.grads["bias"], db_ref, rtol=0, atol=TOL)


@pytest.mark.parametrize("k,p,s", [(1, 1, 1), (3, 3, 1), (3, 4, 1), (2, 3, 1), (3, 4, 2)])
def test_conv2d_padding_wider_than_the_kernel(k, p, s):
    """padding >= kernel size (allowed by PyTorch): the stride-1 backward then crops dy instead of padding it."""
    rng = np.random.default_rng(k * 10 + p)
    layer = Conv2d(3, 2, k, stride=s, padding=p, rng=rng, dtype="float64")
    x = rng.standard_normal((2, 3, 5, 4))
    y = layer.forward(x)
    w, b = layer.params["weight"], layer.params["bias"]
    np.testing.assert_allclose(y, conv2d_loop(x, w, b, s, p), rtol=0, atol=TOL)
    dy = rng.standard_normal(y.shape)
    dx_ref, dw_ref, _ = conv2d_loop_backward(x, w, s, p, dy)
    np.testing.assert_allclose(layer.backward(dy), dx_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(layer.grads["weight"], dw_ref, rtol=0, atol=TOL)


@pytest.mark.parametrize("k,p", [(1, 1), (3, 3), (3, 4), (2, 3)])
def test_conv_transpose2d_stride1_padding_wider_than_the_kernel(k, p):
    """padding >= kernel size at stride 1: the flipped-kernel form (conv_transpose_stride1) then crops x
    by p - (k - 1) instead of padding it; it and the layer both match the loops."""
    rng = np.random.default_rng(k * 10 + p)
    layer = ConvTranspose2d(2, 3, k, padding=p, rng=rng, dtype="float64")
    x = rng.standard_normal((2, 2, 2 * p + 2, 2 * p + 1))
    y = layer.forward(x)
    w, b = layer.params["weight"], layer.params["bias"]
    np.testing.assert_allclose(y, conv_transpose2d_loop(x, w, b, 1, p, 0), rtol=0, atol=TOL)
    y_flip = conv_transpose_stride1(x, w, (p, p)) + b.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(y_flip, conv_transpose2d_loop(x, w, b, 1, p, 0), rtol=0, atol=TOL)
    dy = rng.standard_normal(y.shape)
    dx_ref, dw_ref, _ = conv_transpose2d_loop_backward(x, w, 1, p, 0, dy)
    np.testing.assert_allclose(layer.backward(dy), dx_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(layer.grads["weight"], dw_ref, rtol=0, atol=TOL)


@settings(max_examples=60, deadline=None)
@given(conv_cases(), st.integers(0, 2))
def test_conv_transpose2d_matches_loop(c, op):
    op = min(op, c["s"] - 1)  # PyTorch requires output_padding < stride
    rng = np.random.default_rng(c["seed"])
    layer = ConvTranspose2d(
        c["cin"],
        c["cout"],
        c["k"],
        stride=c["s"],
        padding=c["p"],
        output_padding=op,
        rng=rng,
        dtype="float64",
    )
    x = rng.standard_normal((c["n"], c["cin"], c["h"], c["w"]))
    ho, wo = (conv_transpose_output_size(v, c["k"], c["s"], c["p"], op) for v in (c["h"], c["w"]))
    if ho <= 0 or wo <= 0:
        return  # PyTorch refuses these too
    y = layer.forward(x)
    assert y.shape == (c["n"], c["cout"], ho, wo)
    w, b = layer.params["weight"], layer.params["bias"]
    np.testing.assert_allclose(y, conv_transpose2d_loop(x, w, b, c["s"], c["p"], op), rtol=0, atol=TOL)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    dx_ref, dw_ref, db_ref = conv_transpose2d_loop_backward(x, w, c["s"], c["p"], op, dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(layer.grads["weight"], dw_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(layer.grads["bias"], db_ref, rtol=0, atol=TOL)


@settings(max_examples=40, deadline=None)
@given(conv_cases())
def test_col2im_is_the_adjoint_of_im2col(c):
    """<im2col(x), C> = <x, col2im(C)> for all x, C: col2im is im2col's transpose, hence its backward."""
    rng = np.random.default_rng(c["seed"])
    shape = (c["n"], c["cin"], c["h"] + 2 * c["p"], c["w"] + 2 * c["p"])
    if shape[2] < c["k"] or shape[3] < c["k"]:
        return
    x = rng.standard_normal(shape)
    cols = im2col(x, c["k"], c["k"], c["s"], c["s"])
    other = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * other)
    rhs = np.sum(x * col2im(other, shape, c["k"], c["k"], c["s"], c["s"]))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(conv_cases(), st.sampled_from(["contiguous", "channels_last", "batch_last", "cropped"]))
def test_strided_im2col_equals_the_loop_over_offsets(c, layout):
    """The one-copy window view reads the same entries as the 9 slice copies, whatever x's strides
    (a channels-last array, or a cropped view like the ones pad2d makes)."""
    rng = np.random.default_rng(c["seed"])
    n, cin, h, w = c["n"], c["cin"], c["h"] + 2 * c["p"], c["w"] + 2 * c["p"]
    if h < c["k"] or w < c["k"]:
        return
    if layout == "channels_last":
        x = rng.standard_normal((n, h, w, cin)).transpose(0, 3, 1, 2)
    elif layout == "batch_last":
        x = rng.standard_normal((cin, h, w, n)).transpose(3, 0, 1, 2)
    elif layout == "cropped":
        x = rng.standard_normal((n, cin, h + 2, w + 3))[:, :, 1 : h + 1, 2 : w + 2]
    else:
        x = rng.standard_normal((n, cin, h, w))
    k, s = c["k"], c["s"]
    np.testing.assert_array_equal(im2col(x, k, k, s, s), im2col_loop(x, k, k, s, s))


def is_batch_last(a) -> bool:
    """a (N, C, H, W) is laid out in memory in the order (C, H, W, N), n innermost (possibly a crop of
    such an array, as ConvTranspose2d's padding returns). Every axis here is longer than 1."""
    s_n, s_c, s_h, s_w = a.strides
    return s_n == a.itemsize and s_c > s_h > s_w > s_n


@pytest.mark.parametrize("make", ["conv_s1", "conv_s2", "convt_s2", "convt_s1"])
def test_layers_take_any_layout_and_return_batch_last(make):
    """The same input (N, C, H, W)-contiguous or batch-last gives bit-identical outputs and gradients;
    outputs and input gradients come back batch-last, and batch_last of a batch-last array is a view."""
    rng = np.random.default_rng(7)
    layer = {
        "conv_s1": lambda: Conv2d(3, 4, 3, padding=1, rng=np.random.default_rng(1), dtype="float64"),
        "conv_s2": lambda: Conv2d(3, 4, 3, stride=2, rng=np.random.default_rng(1), dtype="float64"),
        "convt_s2": lambda: ConvTranspose2d(3, 4, 3, stride=2, rng=np.random.default_rng(1), dtype="float64"),
        "convt_s1": lambda: ConvTranspose2d(
            3, 4, 3, padding=1, rng=np.random.default_rng(1), dtype="float64"
        ),
    }[make]
    x = rng.standard_normal((2, 3, 7, 6))
    results = []
    for xin in (x, batch_last(x)):
        a = layer()
        a.needs_input_grad = True
        y = a.forward(xin)
        dy = rng.standard_normal(y.shape) if not results else results[0][3]
        dx = a.backward(dy if not results else batch_last(dy))
        results.append((y, dx, {k: g.copy() for k, g in a.grads.items()}, dy))
        assert is_batch_last(y) and is_batch_last(dx)
    (y0, dx0, g0, _), (y1, dx1, g1, _) = results
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(dx0, dx1)
    for k in g0:
        np.testing.assert_array_equal(g0[k], g1[k])
    xb = batch_last(x)  # a copy of x's values, n innermost
    assert not is_batch_last(x) and is_batch_last(xb) and not np.shares_memory(xb, x)
    assert np.shares_memory(batch_last(xb), xb)  # already batch-last: no copy
    np.testing.assert_array_equal(xb, x)


def test_keras_same_shapes():
    """The seed model's two stride-2 layers: 28 -> 14 and 14 -> 29 (cropped to 28 by the model)."""
    assert conv_output_size(28 + 1, 3, 2, 0) == 14
    assert conv_transpose_output_size(14, 3, 2, 0, 0) == 29
    assert conv_transpose_output_size(14, 3, 2, 1, 1) == 28


@settings(max_examples=30, deadline=None)
@given(conv_cases(), st.sampled_from(["conv", "transpose"]))
def test_a_layer_used_again_matches_a_fresh_one(c, kind):
    """A layer called again (same batch size, then a new one, then the first again) gives exactly what
    a fresh layer with the same weights gives: nothing a call caches leaks into a later one."""
    rng = np.random.default_rng(c["seed"])
    make = Conv2d if kind == "conv" else ConvTranspose2d
    layer = make(c["cin"], c["cout"], c["k"], stride=c["s"], padding=c["p"], rng=rng, dtype="float64")
    shape = (c["cin"], c["h"], c["w"])
    if (
        kind == "transpose"
        and min(conv_transpose_output_size(v, c["k"], c["s"], c["p"], 0) for v in shape[1:]) <= 0
    ):
        return  # PyTorch refuses these sizes
    for n in (c["n"], c["n"], c["n"] + 1, c["n"]):
        x = rng.standard_normal((n, *shape))
        fresh = make(c["cin"], c["cout"], c["k"], stride=c["s"], padding=c["p"], dtype="float64")
        fresh.load_state_dict(layer.state_dict())
        y, y_fresh = layer.forward(x), fresh.forward(x)
        dy = rng.standard_normal(y.shape)
        np.testing.assert_array_equal(y, y_fresh)
        np.testing.assert_array_equal(layer.backward(dy), fresh.backward(dy))
        np.testing.assert_array_equal(layer.grads["weight"], fresh.grads["weight"])


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_a_stride1_input_gradient_is_a_convolution_with_the_flipped_kernel(c):
    """At stride 1 Conv2d.backward takes conv_transpose_stride1(dy, W, p), a convolution of dy with the
    flipped kernel; it equals the general form, col2im(W^T dy) with the padding's gradient dropped."""
    rng = np.random.default_rng(c["seed"])
    k, p = c["k"], c["p"]
    layer = Conv2d(c["cin"], c["cout"], k, padding=p, rng=rng, dtype="float64")
    x = rng.standard_normal((c["n"], c["cin"], c["h"] + k, c["w"] + k))
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    w_mat = layer.params["weight"].reshape(c["cout"], -1)  # (C_out, C_in*k*k)
    dy_mat = dy.transpose(1, 2, 3, 0).reshape(c["cout"], -1)  # (C_out, Ho*Wo*N), im2col's column order
    x_pad_shape = (x.shape[0], x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p)
    general = pad2d(col2im(w_mat.T @ dy_mat, x_pad_shape, k, k, 1, 1), (-p, -p, -p, -p))
    np.testing.assert_allclose(layer.backward(dy), general, rtol=0, atol=TOL)
