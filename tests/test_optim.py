"""Adam and SGD against their closed-form first steps."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
from conftest import needs_cupy

from minivae.backend import to_numpy
from minivae.nn.optim import SGD, Adam, adam_in_blocks


def test_adam_first_step_is_lr_times_sign(xp):
    """At t = 1, m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps) ~ lr * sign(g)."""
    w0, g0 = np.array([1.0, -2.0, 3.0]), np.array([0.5, -4.0, 1e-3])
    w, g = xp.array(w0), xp.array(g0)  # copies: the update is in place
    Adam([("w", w, g)], lr=0.1).step()
    np.testing.assert_allclose(to_numpy(w), w0 - 0.1 * g0 / (np.abs(g0) + 1e-8), rtol=1e-14)


def test_adam_two_steps_closed_form(xp):
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-8
    w, g = xp.asarray([0.3]), xp.zeros(1)
    opt = Adam([("w", w, g)], lr=lr)
    g1, g2 = 0.2, -0.7
    g[...] = g1
    opt.step()
    g[...] = g2
    opt.step()
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    step2 = lr / (1 - b1**2) * m / (np.sqrt(v / (1 - b2**2)) + eps)
    np.testing.assert_allclose(to_numpy(w), 0.3 - lr * g1 / (abs(g1) + eps) - step2, rtol=1e-12)


def test_keras_epsilon_damps_tiny_gradients(xp):
    """Keras adds eps = 1e-7 to the uncorrected sqrt(v): at step 1 the effective eps is 1e-7/sqrt(1e-3)."""
    g = xp.asarray([1e-6])
    w_torch, w_keras = xp.zeros(1), xp.zeros(1)
    Adam([("w", w_torch, g)], lr=1.0, eps=1e-7).step()
    Adam([("w", w_keras, g)], lr=1.0, eps=1e-7, keras_epsilon=True).step()
    w_torch, w_keras = to_numpy(w_torch), to_numpy(w_keras)
    np.testing.assert_allclose(-w_torch, 1e-6 / (1e-6 + 1e-7), rtol=1e-12)
    np.testing.assert_allclose(-w_keras, 1e-6 / (1e-6 + 1e-7 / np.sqrt(1e-3)), rtol=1e-12)
    assert -w_keras < 0.25 < 0.9 < -w_torch


def adam_lines(p, g, m, v, b1, b2, bc1, bc2, lr, eps):
    """Adam._update's three lines, as the class writes them."""
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * (g * g)
    p -= lr / bc1 * m / (np.sqrt(v) / math.sqrt(bc2) + eps)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("block", [1, 7, 64, 32768])
def test_adam_in_blocks_is_the_three_lines_bit_for_bit(dtype, block):
    """The CPU's update (in place, slice by slice) against the three lines over six steps, gradients of
    magnitudes 1e-8 to 10, a size (3 x 41 = 123) that no block but 1 divides: every bit of p, m, v equal."""
    rng = np.random.default_rng(block)
    p0 = rng.standard_normal((3, 41)).astype(dtype)
    ours, ref = [[p0.copy(), np.zeros_like(p0), np.zeros_like(p0)] for _ in range(2)]
    for t in range(1, 7):
        g = (rng.standard_normal(p0.shape) * 10.0 ** rng.integers(-8, 2, p0.shape)).astype(dtype)
        scalars = (0.9, 0.999, 1 - 0.9**t, 1 - 0.999**t, 1e-2, 1e-7)
        adam_in_blocks(ours[0], g, ours[1], ours[2], *scalars, block=block)
        adam_lines(ref[0], g, ref[1], ref[2], *scalars)
    for a, b in zip(ours, ref):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ours[0], p0)


def test_adam_updates_a_strided_parameter_where_it_lies():
    """A parameter that is a strided view (a flat view of it would be a copy) takes the three lines, in
    place: the entries between its strides stay untouched; adam_in_blocks itself refuses it."""
    base = np.ones((4, 6))
    p, g = base[:, ::2], np.full((4, 3), 0.5)
    Adam([("p", p, g)], lr=0.1).step()
    ref, m, v = np.ones((4, 3)), np.zeros((4, 3)), np.zeros((4, 3))
    adam_lines(ref, g, m, v, 0.9, 0.999, 1 - 0.9, 1 - 0.999, 0.1, 1e-8)  # t = 1
    np.testing.assert_array_equal(base[:, ::2], ref)
    np.testing.assert_array_equal(base[:, 1::2], 1.0)
    assert not np.array_equal(ref, np.ones((4, 3)))
    with pytest.raises(ValueError, match="C-contiguous"):
        adam_in_blocks(p, g, np.zeros((4, 3)), np.zeros((4, 3)), 0.9, 0.999, 0.1, 0.001, 0.1, 1e-8)


@needs_cupy
@pytest.mark.parametrize("keras", [False, True])
def test_fused_cupy_adam_equals_the_step_by_step_formula(keras):
    """CuPy's one-kernel Adam (minivae.kernels.adam) against Adam's three lines, float32, over five steps."""
    import cupy

    from minivae import kernels

    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((64, 33)).astype(np.float32)
    ws, gs, opts = [], [], []
    for fused in (True, False):
        w, g = cupy.asarray(w0), cupy.zeros_like(cupy.asarray(w0))
        ws.append(w)
        gs.append(g)
        opts.append((Adam([("w", w, g)], lr=1e-2, eps=1e-7, keras_epsilon=keras), fused))
    for _ in range(5):
        grad = cupy.asarray(rng.standard_normal(w0.shape).astype(np.float32) * 10.0 ** rng.integers(-8, 2))
        for g, (opt, fused) in zip(gs, opts):
            g[...] = grad
            with contextlib.nullcontext() if fused else kernels.off():
                opt.step()
    np.testing.assert_allclose(to_numpy(ws[0]), to_numpy(ws[1]), rtol=1e-5, atol=1e-7)
    assert not np.allclose(to_numpy(ws[0]), w0)


def test_sgd_momentum_closed_form():
    w, g = np.array([1.0]), np.zeros(1)
    opt = SGD([("w", w, g)], lr=0.1, momentum=0.9)
    for grad in (1.0, 2.0):
        g[...] = grad
        opt.step()
    np.testing.assert_allclose(w, 1.0 - 0.1 * 1.0 - 0.1 * (0.9 * 1.0 + 2.0), rtol=1e-14)


def test_updates_in_place_and_state_round_trip(xp):
    """A fresh Adam given another's weights and state_dict continues exactly as the original would."""
    w, g = xp.ones(3), xp.asarray([0.5, -0.2, 0.1])
    ident = id(w)
    opt = Adam([("w", w, g)], lr=0.1)
    opt.step()
    assert id(w) == ident and float(w[0]) < 1.0
    w2 = w.copy()
    opt2 = Adam([("w", w2, g)], lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.t == 1
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(np.asarray(w.tolist()), np.asarray(w2.tolist()))


def test_bad_learning_rate():
    with pytest.raises(ValueError, match="learning rate"):
        Adam([], lr=0)


def _three_steps(xp, flat: bool, kind: str):
    """A small MLP VAE after three steps of the given optimizer, and the optimizer."""
    from minivae.models import build_model
    from minivae.nn.losses import vae_loss

    model = build_model("mlp", 3, hidden=16, seed=0, dtype="float64").to(xp)
    flat_arrays = model.flatten_parameters() if flat else None
    params = model.named_parameters()
    opt = (
        SGD(params, lr=0.05, momentum=0.9, flat=flat_arrays)
        if kind == "sgd"
        else Adam(params, lr=1e-2, eps=1e-7, keras_epsilon=kind == "adam-keras", flat=flat_arrays)
    )
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.random((5, 1, 28, 28)))
    for t in range(3):
        eps = xp.asarray(np.random.default_rng(t).standard_normal((5, 3)))
        logits, mu, logvar = model.forward(x, eps=eps)
        out = vae_loss(logits, x, mu, logvar)
        model.backward(out.dlogits, out.dmu, out.dlogvar)
        opt.step()
    return model, opt


@pytest.mark.parametrize("kind", ["adam", "adam-keras", "sgd"])
def test_flat_update_equals_the_per_parameter_update(kind, xp):
    """One update over the flattened model gives the same weights and state, bit for bit, as one update
    per parameter (the update is elementwise), and the state saves under the same names."""
    m_flat, o_flat = _three_steps(xp, True, kind)
    m_each, o_each = _three_steps(xp, False, kind)
    for k, v in m_each.state_dict().items():
        np.testing.assert_array_equal(m_flat.state_dict()[k], v, err_msg=k)
    s_flat, s_each = o_flat.state_dict(), o_each.state_dict()
    assert sorted(s_flat) == sorted(s_each)
    for k in s_each:
        np.testing.assert_array_equal(s_flat[k], s_each[k], err_msg=k)
    # the layers' parameters are views of the flat array: the optimizer's one update reached them
    flat_p, flat_g = m_flat.flat
    assert flat_p.size == m_flat.num_parameters()
    np.testing.assert_array_equal(
        to_numpy(flat_p[:5]), to_numpy(m_flat.encoder.layers[1].params["weight"]).ravel()[:5]
    )


def test_flat_state_round_trip_continues_identically(xp):
    """A flat optimizer loaded from another's state_dict writes into its views and continues the same."""
    model, opt = _three_steps(xp, True, "adam")
    twin, twin_opt = _three_steps(xp, True, "adam")
    twin_opt.load_state_dict(opt.state_dict())
    assert twin_opt.flat_state["exp_avg"] is not opt.flat_state["exp_avg"]
    np.testing.assert_array_equal(
        to_numpy(twin_opt.flat_state["exp_avg"]), to_numpy(opt.flat_state["exp_avg"])
    )


def test_flatten_keeps_values_and_to_undoes_it():
    from minivae.models import build_model

    model = build_model("conv", 4, seed=0)
    before = model.state_dict()
    flat_p, flat_g = model.flatten_parameters()
    assert flat_p.dtype == np.float32 and flat_g.shape == flat_p.shape
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    model.fc_mu.params["weight"][0, 0] = 42.0  # a write through the layer's view lands in the flat array
    assert 42.0 in flat_p
    model.to(np, "float64")
    assert model.flat is None and model.fc_mu.params["weight"].dtype == np.float64
    with pytest.raises(ValueError, match="different number of entries"):
        Adam(model.named_parameters(), flat=(flat_p[:10], flat_g[:10]))


def test_training_flattens_on_the_gpu_only(xp):
    """make_optimizer lays the parameters end to end on CuPy (fewer launches), not on NumPy (cache)."""
    from minivae.models import build_model
    from minivae.training.config import TrainConfig
    from minivae.training.loop import make_optimizer

    model = build_model("mlp", 3, hidden=8).to(xp)
    opt = make_optimizer(TrainConfig(), model)
    assert (model.flat is not None) == (xp is not np)
    assert (opt.flat is not None) == (xp is not np)
