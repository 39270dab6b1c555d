"""Losses: gradient checks, exactness at extreme logits, the KL's zero, and the two loss forms."""

from __future__ import annotations

import numpy as np
import pytest

from minivae.nn.gradcheck import check_function
from minivae.nn.losses import REDUCTIONS, bce_with_logits, effective_beta, kl_normal, mse, vae_loss

TOL = 1e-6


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_gradient(reduction, xp, rng):
    logits, target = xp.asarray(rng.standard_normal((3, 5)) * 3), xp.asarray(rng.random((3, 5)))
    weights = xp.asarray(rng.standard_normal((3, 5)))  # projects "none" onto a scalar

    def f(logits):
        v, _ = bce_with_logits(logits, target, reduction)
        return (v * weights).sum() if reduction == "none" else v

    _, g = bce_with_logits(logits, target, reduction)
    g = g * weights if reduction == "none" else g
    assert check_function(f, {"logits": logits}, {"logits": g})["logits"] <= TOL


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum"])
def test_mse_gradient(reduction, xp, rng):
    pred, target = xp.asarray(rng.standard_normal((4, 3))), xp.asarray(rng.standard_normal((4, 3)))
    _, g = mse(pred, target, reduction)
    assert (
        check_function(lambda pred: mse(pred, target, reduction), {"pred": pred}, {"pred": g})["pred"] <= TOL
    )


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum"])
def test_kl_gradient(reduction, xp, rng):
    mu, logvar = xp.asarray(rng.standard_normal((4, 3))), xp.asarray(rng.standard_normal((4, 3)))
    _, dmu, dlogvar = kl_normal(mu, logvar, beta=0.7, reduction=reduction)
    errs = check_function(
        lambda mu, logvar: kl_normal(mu, logvar, 0.7, reduction),
        {"mu": mu, "logvar": logvar},
        {"mu": dmu, "logvar": dlogvar},
    )
    assert max(errs.values()) <= TOL


def test_bce_finite_and_exact_at_extreme_logits():
    logits = np.array([[-1e4, 1e4, -1e4, 1e4, 0.0]])
    target = np.array([[0.0, 1.0, 1.0, 0.0, 1.0]])
    value, grad = bce_with_logits(logits, target, "none")
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value[0], [0.0, 0.0, 1e4, 1e4, np.log(2.0)], rtol=1e-15)
    np.testing.assert_allclose(grad[0], [0.0, 0.0, -1.0, 1.0, -0.5], rtol=1e-15)


def test_bce_gradient_float32_matches_float64_sigmoid():
    """d/dx = sigmoid(x) - t, with sigmoid(x) = exp(min(x, 0)) / (1 + exp(-|x|)) in float32: within one
    float32 epsilon of the float64 value everywhere, and within 2 epsilons relative to it while sigmoid(x)
    is a normal float32 (min(x, 0) goes into exp alone, so nothing rounds at the scale of |x|)."""
    x = np.linspace(-100, 100, 20001).astype(np.float32)
    _, grad = bce_with_logits(x, np.zeros_like(x), "sum")  # t = 0: the gradient is sigmoid(x)
    assert grad.dtype == np.float32
    s = np.exp(-np.logaddexp(0.0, -x.astype(np.float64)))  # float64 sigmoid
    eps, tiny = float(np.finfo(np.float32).eps), float(np.finfo(np.float32).tiny)
    assert np.abs(grad - s).max() <= eps
    normal = s > tiny
    rel = np.abs(grad - s)[normal] / s[normal]
    assert rel.max() <= 2.0 * eps


def test_bce_value_float32_matches_float64():
    """The float32 BCE, log(1 + e) form, against float64 over logits in [-100, 100] and targets 0, 1/2
    and 1: within (|x| + 1) float32 epsilons (max(x, 0) - x t rounds at the scale of |x|)."""
    x = np.linspace(-100, 100, 20001).astype(np.float32)
    eps = float(np.finfo(np.float32).eps)
    for t in (0.0, 0.5, 1.0):
        target = np.full_like(x, t)
        value, _ = bce_with_logits(x, target, "none")
        x64 = x.astype(np.float64)
        exact = np.maximum(x64, 0) - x64 * t + np.log1p(np.exp(-np.abs(x64)))
        assert value.dtype == np.float32
        assert (np.abs(value - exact) / ((np.abs(x64) + 1.0) * eps)).max() <= 1.0


def test_bce_matches_the_probability_formula(rng):
    logits, t = rng.standard_normal(50) * 4, rng.random(50)
    s = 1 / (1 + np.exp(-logits))
    naive = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    np.testing.assert_allclose(bce_with_logits(logits, t, "none")[0], naive, rtol=1e-12)


def test_kl_zero_at_standard_normal():
    mu = logvar = np.zeros((3, 4))
    value, dmu, dlogvar = kl_normal(mu, logvar, beta=3.0)
    assert value == 0.0 and np.all(dmu == 0) and np.all(dlogvar == 0)


def test_kl_positive_and_closed_form(rng):
    mu, logvar = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    value, _, _ = kl_normal(mu, logvar, reduction="sum")
    var = np.exp(logvar)
    expected = np.sum(np.log(1 / np.sqrt(var)) + (var + mu**2) / 2 - 0.5)  # KL of N(mu, var) to N(0, 1)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert value > 0


@pytest.mark.parametrize("form", ["elbo", "seed"])
def test_vae_loss_gradients(form, rng):
    logits, x = rng.standard_normal((3, 1, 4, 4)), rng.random((3, 1, 4, 4))
    mu, logvar = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    out = vae_loss(logits, x, mu, logvar, beta=0.5, form=form)
    errs = check_function(
        lambda logits, mu, logvar: vae_loss(logits, x, mu, logvar, 0.5, form).total,
        {"logits": logits, "mu": mu, "logvar": logvar},
        {"logits": out.dlogits, "mu": out.dmu, "logvar": out.dlogvar},
    )
    assert max(errs.values()) <= TOL
    np.testing.assert_allclose(out.total, out.recon + 0.5 * out.kl, rtol=1e-14)


@pytest.mark.parametrize("latent", [5, 10, 15, 20])
def test_seed_form_is_elbo_with_an_effective_beta(latent, rng):
    """784 x (seed loss with beta_seed) = ELBO-units loss with beta = 2 * 784 * beta_seed / latent."""
    logits, x = rng.standard_normal((4, 1, 28, 28)), rng.random((4, 1, 28, 28))
    mu, logvar = rng.standard_normal((4, latent)), rng.standard_normal((4, latent))
    seed = vae_loss(logits, x, mu, logvar, beta=0.0005, form="seed")
    beta = effective_beta("seed", 0.0005, latent)
    elbo = vae_loss(logits, x, mu, logvar, beta=beta, form="elbo")
    np.testing.assert_allclose(784 * seed.total, elbo.total, rtol=1e-12)
    assert effective_beta("elbo", 0.3, latent) == 0.3


def test_effective_beta_values():
    """The numbers the issue quotes: about 0.157, 0.078, 0.052, 0.039 for latents 5, 10, 15, 20."""
    got = [round(effective_beta("seed", 0.0005, k), 3) for k in (5, 10, 15, 20)]
    assert got == [0.157, 0.078, 0.052, 0.039]


def test_unknown_reduction_and_form():
    with pytest.raises(ValueError, match="reduction"):
        mse(np.zeros(2), np.zeros(2), "avg")
    with pytest.raises(ValueError, match="loss form"):
        vae_loss(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 1)), np.zeros((1, 1)), form="keras")
