"""Gradient checks of every layer (float64 finite differences), on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from minivae.nn import (
    Conv2d,
    ConvTranspose2d,
    Flatten,
    LeakyReLU,
    Linear,
    ReLU,
    Reshape,
    Sequential,
    Sigmoid,
    Tanh,
    ZeroPad2d,
    sigmoid,
)
from minivae.nn.gradcheck import check_layer

TOL = 1e-6  # the bound; correct layers land near 1e-9


def _away_from_kink(x, margin=1e-3):
    """Nudge values off 0, where ReLU's derivative jumps and finite differences straddle the kink."""
    return np.where(np.abs(x) < margin, margin * 3, x)


CASES = {
    "linear": (lambda r: Linear(5, 3, rng=r, dtype="float64"), (4, 5)),
    "linear_nobias": (lambda r: Linear(5, 3, bias=False, rng=r, dtype="float64"), (4, 5)),
    "conv": (lambda r: Conv2d(2, 3, 3, padding=1, rng=r, dtype="float64"), (2, 2, 5, 5)),
    "conv_stride2": (lambda r: Conv2d(2, 3, 3, stride=2, rng=r, dtype="float64"), (2, 2, 7, 6)),
    "conv_rect": (
        lambda r: Conv2d(1, 2, (2, 3), stride=(1, 2), padding=(1, 0), rng=r, dtype="float64"),
        (2, 1, 4, 5),
    ),
    "convT": (lambda r: ConvTranspose2d(2, 3, 3, padding=1, rng=r, dtype="float64"), (2, 2, 4, 4)),
    "convT_s2_op1": (
        lambda r: ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, rng=r, dtype="float64"),
        (2, 2, 3, 4),
    ),
    "relu": (lambda r: ReLU(), (3, 7)),
    "leaky_relu": (lambda r: LeakyReLU(0.2), (3, 7)),
    "sigmoid": (lambda r: Sigmoid(), (3, 7)),
    "tanh": (lambda r: Tanh(), (3, 7)),
    "flatten": (lambda r: Flatten(), (2, 3, 2, 2)),
    "reshape": (lambda r: Reshape(3, 2, 2), (2, 12)),
    "zeropad": (lambda r: ZeroPad2d((1, 0, 2, 1)), (2, 1, 3, 3)),
    "zeropad_crop": (lambda r: ZeroPad2d((0, -1, 1, -2)), (2, 1, 5, 4)),
    "sequential": (
        lambda r: Sequential(
            Conv2d(1, 2, 3, stride=2, padding=1, rng=r, dtype="float64"),
            Tanh(),
            Flatten(),
            Linear(8, 3, rng=r, dtype="float64"),
        ),
        (2, 1, 4, 4),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_layer_gradients(name, xp, rng):
    make, shape = CASES[name]
    layer = make(rng).to(xp)
    x = xp.asarray(_away_from_kink(rng.standard_normal(shape)))
    errors = check_layer(layer, x)
    assert set(errors) == {"input", *(k for k, _, _ in layer.named_parameters())}
    assert max(errors.values()) <= TOL, errors


def test_gradcheck_catches_a_wrong_backward(rng):
    """The check is not vacuous: a backward off by a factor of 1.01 fails it."""

    class BadTanh(Tanh):
        def backward(self, dy):
            return 1.01 * super().backward(dy)

    errors = check_layer(BadTanh(), rng.standard_normal((3, 4)))
    assert errors["input"] > 1e-3


def test_params_and_grads_match(rng):
    layer = Sequential(Conv2d(1, 2, 3, rng=rng), ConvTranspose2d(2, 1, 3, rng=rng), Linear(3, 2, rng=rng))
    for _, p, g in layer.named_parameters():
        assert p.shape == g.shape and p.dtype == g.dtype
    names = [k for k, _, _ in layer.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]


def test_pytorch_shapes(rng):
    assert Linear(5, 3, rng=rng).params["weight"].shape == (3, 5)
    assert Conv2d(2, 4, 3, rng=rng).params["weight"].shape == (4, 2, 3, 3)
    assert ConvTranspose2d(2, 4, 3, rng=rng).params["weight"].shape == (2, 4, 3, 3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept(dtype, rng):
    layer = Sequential(
        Conv2d(1, 2, 3, rng=rng, dtype=dtype), ReLU(), Flatten(), Linear(8, 2, rng=rng, dtype=dtype)
    )
    y = layer.forward(rng.standard_normal((2, 1, 4, 4)).astype(dtype))
    assert y.dtype == np.dtype(dtype)
    assert layer.backward(np.ones_like(y)).dtype == np.dtype(dtype)


def test_sigmoid_exact_in_the_tails():
    x = np.array([-1e4, -745.0, -40.0, 0.0, 40.0, 1e4])
    s = sigmoid(x)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s[2], np.exp(-40.0) / (1 + np.exp(-40.0)), rtol=1e-15)
    assert s[0] == 0.0 and s[-1] == 1.0 and s[3] == 0.5


def test_init_schemes(rng):
    w = Linear(300, 100, init="glorot", rng=rng).params
    bound = np.sqrt(6 / 400)
    assert np.abs(w["weight"]).max() <= bound and np.abs(w["weight"]).max() > 0.95 * bound
    assert np.all(w["bias"] == 0)
    p = Conv2d(4, 8, 3, init="pytorch", rng=rng).params
    bound = 1 / np.sqrt(4 * 9)
    assert np.abs(p["weight"]).max() <= bound and np.abs(p["bias"]).max() <= bound
    assert np.any(p["bias"] != 0)
    with pytest.raises(ValueError, match="unknown init"):
        Linear(2, 2, init="nope")


def test_state_dict_round_trip(rng):
    a = Sequential(Linear(3, 4, rng=rng), Linear(4, 2, rng=rng))
    b = Sequential(Linear(3, 4, rng=rng), Linear(4, 2, rng=rng))
    b.load_state_dict(a.state_dict())
    x = rng.standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    with pytest.raises(ValueError, match="shape"):
        Sequential(Linear(3, 5), Linear(5, 2)).load_state_dict(a.state_dict())
