"""Latent figures: the codes they decode, and the files they write (latent 2 adds the plane and the scatter)."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from minivae.analysis import latent_figures
from minivae.models import mlp_vae


def test_traversal_holds_the_other_units_at_mu():
    mu = np.array([0.5, -1.0, 2.0])
    values = np.linspace(-3, 3, 5)
    z = latent_figures.traversal_codes(mu, [2, 0], values)
    assert z.shape == (2, 5, 3)
    np.testing.assert_array_equal(z[0, :, 2], values)
    np.testing.assert_array_equal(z[0, :, :2], np.broadcast_to(mu[:2], (5, 2)))
    np.testing.assert_array_equal(z[1, :, 0], values)
    np.testing.assert_array_equal(z[1, :, 1:], np.broadcast_to(mu[1:], (5, 2)))


def test_interpolation_ends_at_both_means():
    a, b = np.array([1.0, 2.0]), np.array([-3.0, 0.0])
    z = latent_figures.interpolation_codes(a, b, 5)
    np.testing.assert_array_equal(z[0], a)
    np.testing.assert_array_equal(z[-1], b)
    np.testing.assert_allclose(z[2], (a + b) / 2)


def test_manifold_grid_is_the_priors_quantiles():
    z = latent_figures.manifold_codes(5)
    assert z.shape == (25, 2)
    q = [NormalDist().inv_cdf(p) for p in (0.05, 0.275, 0.5, 0.725, 0.95)]
    np.testing.assert_allclose(z[:5, 0], q, atol=1e-12)  # first row: z_0 rising to the right ...
    np.testing.assert_allclose(z[::5, 1], q[::-1], atol=1e-12)  # ... and z_1 falling down the rows


@pytest.mark.parametrize("latent,expected", [(2, {"traversal", "interpolation", "manifold", "scatter"}),
                                             (3, {"traversal", "interpolation"})])  # fmt: skip
def test_draw_writes_the_figures(latent, expected, tmp_path, rng):
    model = mlp_vae(latent=latent, hidden=16, rng=rng)
    x = rng.random((40, 1, 28, 28)).astype(np.float32)
    labels = np.arange(40) % 10
    mu = np.asarray(model.encode(x)[0], dtype=np.float64)
    figs = latent_figures.draw(model, x, labels, mu, tmp_path)
    assert set(figs) == expected
    for path in figs.values():
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 3000
