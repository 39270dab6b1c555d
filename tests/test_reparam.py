"""The reparameterization: its gradients, and the statistics of its samples."""

from __future__ import annotations

import numpy as np
import pytest

from minivae.backend import default_rng
from minivae.nn.gradcheck import check_function
from minivae.nn.reparam import Reparameterize


def test_reparam_gradients(xp, rng):
    mu, logvar = xp.asarray(rng.standard_normal((4, 3))), xp.asarray(rng.standard_normal((4, 3)))
    eps, dz = xp.asarray(rng.standard_normal((4, 3))), xp.asarray(rng.standard_normal((4, 3)))
    r = Reparameterize()
    r.forward(mu, logvar, eps)
    dmu, dlogvar = r.backward(dz)
    errs = check_function(
        lambda mu, logvar: (Reparameterize().forward(mu, logvar, eps) * dz).sum(),
        {"mu": mu, "logvar": logvar},
        {"mu": dmu, "logvar": dlogvar},
    )
    assert max(errs.values()) <= 1e-6


def test_sample_mean_and_variance(xp):
    """z ~ N(mu, exp(logvar)): logvar is a log-variance, not a log-std (numpy-ml's sampler mixed them)."""
    n = 200_000
    mu = xp.asarray(np.array([[-1.5, 0.0, 2.0]]).repeat(n, 0))
    logvar = xp.asarray(np.array([[np.log(0.25), 0.0, np.log(4.0)]]).repeat(n, 0))
    z = Reparameterize().forward(mu, logvar, rng=default_rng(0, xp))
    mean, var = z.mean(axis=0), z.var(axis=0)
    # standard errors: sd/sqrt(n) for the mean, var*sqrt(2/n) for the variance; allow 5 of them
    np.testing.assert_allclose(np.asarray(mean.tolist()), [-1.5, 0.0, 2.0], atol=5 * 2.0 / np.sqrt(n))
    np.testing.assert_allclose(np.asarray(var.tolist()), [0.25, 1.0, 4.0], rtol=5 * np.sqrt(2 / n))


def test_zero_noise_is_the_mean(rng):
    mu, logvar = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    np.testing.assert_array_equal(Reparameterize().forward(mu, logvar, np.zeros((2, 3))), mu)


def test_no_eps_and_no_rng_says_what_to_pass(rng):
    mu = rng.standard_normal((2, 3)).astype(np.float32)
    with pytest.raises(TypeError, match=r"eps, an array shaped like mu.*rng, a generator"):
        Reparameterize().forward(mu, mu)


def test_float64_eps_keeps_float32(xp, rng):
    mu = xp.asarray(rng.standard_normal((4, 3)).astype(np.float32))
    eps = xp.asarray(rng.standard_normal((4, 3)))  # float64
    r = Reparameterize()
    z = r.forward(mu, mu, eps)
    assert z.dtype == np.float32 and r.noise.dtype == np.float32
    dmu, dlogvar = r.backward(xp.ones_like(mu))
    assert dmu.dtype == dlogvar.dtype == np.float32
