"""The IWAE objective (minivae.nn.iwae): its hand-derived gradient against finite differences, k = 1
against the ELBO, the bound against the ELBO and against itself as k grows, float32 stability, and a
tiny training that lowers it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minivae.analysis.likelihood import log_importance_weights, logsumexp
from minivae.models import build_model
from minivae.nn.gradcheck import check_iwae
from minivae.nn.iwae import iwae_loss, softmax0
from minivae.nn.losses import vae_loss
from minivae.nn.optim import Adam
from minivae.training.loop import train_step

LATENT = 3


def small_model(dtype="float64", seed=1, hidden=(6, 5)):
    """The Burda layout (two tanh layers, the decoder mirroring them) at toy sizes."""
    return build_model("mlp", LATENT, hidden=list(hidden), activation="tanh", seed=seed, dtype=dtype)


def images(rng, n, dtype="float64"):
    return (0.05 + 0.9 * rng.random((n, 1, 28, 28))).astype(dtype)  # inside [0, 1] when nudged by h


def grads(model):
    return {name: g.copy() for name, _, g in model.named_parameters()}


@pytest.mark.parametrize("k", [1, 2, 5])
def test_iwae_gradient_matches_finite_differences(k, rng):
    """Every parameter, float64: decoder, the prior's pull on z, the reparameterization, log q's term."""
    model = small_model()
    x, eps = images(rng, 3), rng.standard_normal((k, 3, LATENT))
    errors = check_iwae(model, x, eps, per_param=30)
    assert len(errors) == len(list(model.named_parameters()))
    assert max(errors.values()) <= 1e-6, errors


def test_k1_with_fixed_noise_is_the_one_sample_elbo(rng):
    """k = 1: the decoder's gradients are the ELBO's exactly (the KL does not reach the decoder), and
    every gradient is the ELBO's once its analytic KL is replaced by the one-sample KL at the same z,
    KL_1 = 1/2 sum_j (z_j^2 - eps_j^2 - logvar_j), whose gradients the chain rule gives directly:
    d/dmu = z, d/dlogvar = 1/2 z sigma eps - 1/2 (per image, over the batch of N)."""
    model, x = small_model(), images(rng, 4)
    eps = rng.standard_normal((4, LATENT))
    logits, mu, logvar = model.forward(x, eps=eps[None])
    out = iwae_loss(logits, x, mu, logvar, eps[None])
    model.backward(out.dlogits, out.dmu, out.dlogvar, out.dz)
    got = grads(model)

    logits, mu, logvar = model.forward(x, eps=eps)
    elbo = vae_loss(logits, x, mu, logvar, beta=1.0, form="elbo")
    model.backward(elbo.dlogits, elbo.dmu, elbo.dlogvar)
    analytic_kl = grads(model)
    for name in got:
        if name.startswith("decoder."):
            np.testing.assert_allclose(got[name], analytic_kl[name], rtol=1e-12, atol=1e-15, err_msg=name)

    std = np.exp(0.5 * logvar)
    z = mu + std * eps
    n = len(x)
    model.backward(elbo.dlogits, z / n, (0.5 * z * std * eps - 0.5) / n)
    one_sample_kl = grads(model)
    for name in got:
        np.testing.assert_allclose(got[name], one_sample_kl[name], rtol=1e-10, atol=1e-13, err_msg=name)
    kl_1 = 0.5 * (z * z - eps * eps - logvar).sum(axis=1).mean()
    assert float(out.total) == pytest.approx(float(elbo.recon) + kl_1, rel=1e-12)
    assert float(out.recon) == pytest.approx(float(elbo.recon), rel=1e-12)


def test_bound_is_the_evaluators_log_weights(rng):
    """The training loss's bound per image is likelihood.py's log-sum-exp of its log weights, same eps."""
    model, x = small_model(), images(rng, 5)
    eps = rng.standard_normal((7, 5, LATENT))
    logits, mu, logvar = model.forward(x, eps=eps)
    out = iwae_loss(logits, x, mu, logvar, eps)
    logw = log_importance_weights(model, x, eps)  # (N, k)
    expected = logsumexp(logw, axis=1) - math.log(7)
    assert -float(out.total) == pytest.approx(float(expected.mean()), rel=1e-12)
    np.testing.assert_allclose(out.weights.T, np.exp(logw - logsumexp(logw, axis=1)[:, None]), rtol=1e-10)


def bound_per_image(model, x, k, rng, reps):
    """L_k of each image, `reps` independent draws of the k noises: (reps, N)."""
    out = []
    for _ in range(reps):
        eps = rng.standard_normal((k, len(x), LATENT))
        logits, mu, logvar = model.forward(x, eps=eps)
        out.append(log_importance_weights(model, x, eps, mu, logvar))  # (N, k)
    return np.stack([logsumexp(w, axis=1) - math.log(k) for w in out])


def test_bound_exceeds_the_elbo_and_rises_with_k(rng):
    """E[L_1] = ELBO <= E[L_5] <= E[L_50]: each gap's mean over 20 images x 30 draws exceeds 4 standard
    errors (of that mean), and E[L_1] agrees with the analytic-KL ELBO within 4."""
    model, x = small_model(seed=4), (rng.random((20, 1, 28, 28)) < 0.3).astype("float64")
    elbo = []
    for _ in range(30):
        logits, mu, logvar = model.forward(x, rng=np.random.default_rng(rng.integers(1 << 30)))
        elbo.append(-float(vae_loss(logits, x, mu, logvar).total))
    l1, l5, l50 = (bound_per_image(model, x, k, rng, 30).mean(axis=1) for k in (1, 5, 50))  # (30,) each

    def gap(a, b):  # mean of a - b and its standard error over the 30 draws
        d = np.asarray(a) - np.asarray(b)
        return d.mean(), d.std(ddof=1) / math.sqrt(len(d))

    for a, b in ((l5, elbo), (l50, l5), (l5, l1)):
        mean, se = gap(a, b)
        assert mean > 4 * se > 0, (mean, se)
    mean, se = gap(l1, elbo)
    assert abs(mean) < 4 * se, (mean, se)


def test_float32_is_stable_where_exp_log_w_underflows(rng):
    """Log weights of about -700 nats (exp(log w) is 0 in float32 below -104, and below -745 in
    float64): the loss and its gradients are finite, the importance weights sum to 1, and they agree
    with the same computation in float64."""
    m64, m32 = small_model("float64", seed=2), small_model("float32", seed=2)
    for (_, p64, _), (_, p32, _) in zip(m64.named_parameters(), m32.named_parameters()):
        p64 *= 3.0
        p32[...] = p64  # large weights: logits of tens, log p(x|z) of hundreds of nats
    x = (rng.random((4, 1, 28, 28)) < 0.5).astype("float64")
    eps = rng.standard_normal((5, 4, LATENT))
    results = {}
    for name, model, dt in (("64", m64, "float64"), ("32", m32, "float32")):
        logits, mu, logvar = model.forward(x.astype(dt), eps=eps.astype(dt))
        out = iwae_loss(logits, x.astype(dt), mu, logvar, eps.astype(dt))
        model.backward(out.dlogits, out.dmu, out.dlogvar, out.dz)
        results[name] = (out, grads(model))
    out32, g32 = results["32"]
    assert float(out32.total) > 500 and np.isfinite(float(out32.total))
    np.testing.assert_allclose(out32.weights.sum(axis=0), 1.0, rtol=1e-6)
    assert float(out32.total) == pytest.approx(float(results["64"][0].total), rel=1e-5)
    for name, g in g32.items():
        assert np.isfinite(g).all(), name
        scale = np.abs(results["64"][1][name]).max()
        assert np.abs(g - results["64"][1][name]).max() <= 1e-3 * scale, name


def test_softmax0_is_exact_at_the_extremes():
    """Log weights near -1e4 (exp gives 0 in float32): the softmax and the logsumexp from the maximum."""
    w, lse = softmax0(np.array([[-1e4, 0.0], [-1e4 - 1.0, -800.0]], dtype="float32"))  # exact in float32
    np.testing.assert_allclose(w[:, 0], [1 / (1 + math.exp(-1)), 1 / (1 + math.e)], rtol=1e-6)
    np.testing.assert_allclose(w[:, 1], [1.0, 0.0])
    assert float(lse[0]) == pytest.approx(-1e4 + math.log1p(math.exp(-1)), abs=1e-3)


def test_tiny_iwae_training_lowers_its_own_loss(rng):
    """60 Adam steps of the k = 5 bound on 40 binary images: the bound on those images, measured with
    fixed noise before and after, improves by a clear margin."""
    model = build_model("mlp", 4, hidden=[32, 32], activation="tanh", seed=0)
    x = (rng.random((40, 1, 28, 28)) < 0.2).astype("float32")
    probe = rng.standard_normal((5, 40, 4)).astype("float32")

    def loss() -> float:
        logits, mu, logvar = model.forward(x, eps=probe)
        return float(iwae_loss(logits, x, mu, logvar, probe).total)

    before = loss()
    opt = Adam(model.named_parameters(), lr=3e-3, eps=1e-4)
    for step in range(60):
        eps = np.random.default_rng(step).standard_normal((5, 40, 4)).astype("float32")
        out, applied = train_step(model, opt, x, eps, 1.0, "elbo", objective="iwae")
        assert applied and math.isfinite(out.total)
    after = loss()
    assert after < before - 50, (before, after)  # from about 545 nats (random logits) to under 495
