"""Given the same weights, each layer gives PyTorch's outputs and gradients (float64).

Runs only where PyTorch is installed (pip install -e '.[torch]'); minivae itself never imports it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install -e '.[torch]' to compare")

from minivae.nn import Conv2d, ConvTranspose2d, LeakyReLU, Linear, ReLU, Sigmoid, Tanh, ZeroPad2d  # noqa: E402
from minivae.nn.losses import bce_with_logits, kl_normal  # noqa: E402
from minivae.nn.optim import SGD, Adam  # noqa: E402

CASES = [
    (lambda r: Linear(6, 4, rng=r, dtype="float64"), lambda: torch.nn.Linear(6, 4), (5, 6)),
    (
        lambda r: Conv2d(3, 4, 3, stride=2, padding=1, rng=r, dtype="float64"),
        lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1),
        (2, 3, 7, 8),
    ),
    (
        lambda r: ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, rng=r, dtype="float64"),
        lambda: torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1),
        (2, 3, 5, 4),
    ),
    (
        lambda r: ConvTranspose2d(3, 2, 4, stride=3, rng=r, dtype="float64"),
        lambda: torch.nn.ConvTranspose2d(3, 2, 4, stride=3),
        (2, 3, 3, 4),
    ),
    (lambda r: ZeroPad2d((0, -1, 2, -1)), lambda: torch.nn.ZeroPad2d((0, -1, 2, -1)), (2, 2, 5, 5)),
    (lambda r: ReLU(), lambda: torch.nn.ReLU(), (4, 5)),
    (lambda r: LeakyReLU(0.1), lambda: torch.nn.LeakyReLU(0.1), (4, 5)),
    (lambda r: Sigmoid(), lambda: torch.nn.Sigmoid(), (4, 5)),
    (lambda r: Tanh(), lambda: torch.nn.Tanh(), (4, 5)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_layer_matches_pytorch(case):
    make, make_torch, shape = CASES[case]
    rng = np.random.default_rng(case)
    ours, theirs = make(rng), make_torch().double()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(ours.params[name]))
    x = rng.standard_normal(shape)
    y = ours.forward(x)
    xt = torch.from_numpy(x).requires_grad_()
    yt = theirs(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx = ours.backward(dy)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours.grads[name], p.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_init_defaults_match_pytorch_bounds():
    lin = torch.nn.Linear(37, 5)
    ours = Linear(37, 5)
    assert abs(float(lin.weight.detach().abs().max()) - float(np.abs(ours.params["weight"]).max())) < 0.02


def test_losses_match_pytorch():
    rng = np.random.default_rng(0)
    logits, t = rng.standard_normal((4, 6)) * 5, rng.random((4, 6))
    v, g = bce_with_logits(logits, t, "mean")
    lt = torch.from_numpy(logits).requires_grad_()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(lt, torch.from_numpy(t))
    ref.backward()
    np.testing.assert_allclose(v, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(g, lt.grad.numpy(), rtol=1e-12)
    mu, lv = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    kl, _, _ = kl_normal(mu, lv, reduction="sum")
    q = torch.distributions.Normal(torch.from_numpy(mu), torch.from_numpy(np.exp(0.5 * lv)))
    p = torch.distributions.Normal(0.0, 1.0)
    np.testing.assert_allclose(kl, torch.distributions.kl_divergence(q, p).sum().item(), rtol=1e-12)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_optimizers_match_pytorch(kind):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4))
    g = np.zeros_like(w)
    wt = torch.from_numpy(w.copy()).requires_grad_()
    if kind == "adam":
        ours, theirs = Adam([("w", w, g)], lr=0.01), torch.optim.Adam([wt], lr=0.01)
    else:
        ours, theirs = SGD([("w", w, g)], lr=0.01, momentum=0.9), torch.optim.SGD([wt], lr=0.01, momentum=0.9)
    for _ in range(5):
        grad = rng.standard_normal(w.shape)
        g[...] = grad
        wt.grad = torch.from_numpy(grad.copy())
        ours.step()
        theirs.step()
    np.testing.assert_allclose(w, wt.detach().numpy(), rtol=1e-12)
