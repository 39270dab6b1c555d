"""The IWAE bound, rate and distortion, and active units, on a small model trained for a moment."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needs_cupy

from minivae.analysis.evaluate import active_units, evaluate
from minivae.analysis.likelihood import image_noise, iwae_bound, log_importance_weights, logsumexp
from minivae.models import mlp_vae
from minivae.nn.losses import bce_with_logits, vae_loss
from minivae.training.config import TrainConfig
from minivae.training.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_ready):
    """An MLP VAE (hidden 64, latent 4, float64) after one epoch on 320 MNIST images; 100 test images."""
    cfg = TrainConfig(
        latent=4,
        hidden=64,
        epochs=1,
        batch_size=32,
        train_limit=320,
        test_limit=100,
        val_fraction=0.0,
        dtype="float64",
        tsne_points=0,
    )
    model, data, _ = train(cfg, tmp_path_factory.mktemp("lik") / "run", progress=False)
    return model, data.x_test, data.y_test


def test_k1_is_the_one_sample_elbo_with_the_same_noise(trained):
    """L_1 = log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma eps, eps from the image's stream."""
    model, x, _ = trained
    got = iwae_bound(model, x, k=1, seed=3)
    eps = np.stack(
        [image_noise(3, i, 0, 1, model.latent, np.float64)[0] for i in range(len(x))]
    )  # (N, latent)
    logits, mu, logvar = model.forward(x, eps=eps)
    z = mu + np.exp(0.5 * logvar) * eps
    log_px_z = -bce_with_logits(logits, x, "none")[0].sum(axis=(1, 2, 3))
    log_pz = -0.5 * (z**2 + np.log(2 * np.pi)).sum(1)  # the densities written out, not simplified
    log_qz = -0.5 * (((z - mu) ** 2) / np.exp(logvar) + logvar + np.log(2 * np.pi)).sum(1)
    np.testing.assert_allclose(got, log_px_z + log_pz - log_qz, rtol=1e-10)
    # the same noise in the closed-form-KL ELBO (what evaluate reports): the same reconstruction term, a
    # KL that differs by a zero-mean Monte Carlo error, so the means agree within a few standard errors
    recon = bce_with_logits(logits, x, "none")[0].sum(axis=(1, 2, 3))
    kl = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(1)
    diff = got - (-(recon + kl))
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(len(diff)), diff.mean()
    out = vae_loss(logits, x, mu, logvar)
    assert -float(out.total) == pytest.approx(float(-(recon + kl).mean()), rel=1e-12)


def test_iwae_bound_rises_with_k_and_exceeds_the_elbo(trained):
    model, x, y = trained
    elbo = evaluate(model, x, y, seed=0).metrics["elbo_nats"]
    bounds = {k: iwae_bound(model, x, k).mean() for k in (1, 10, 100)}
    assert bounds[1] < bounds[10] < bounds[100], bounds
    assert bounds[100] > elbo, (bounds, elbo)
    assert bounds[1] == pytest.approx(elbo, abs=3.0)  # the same expectation: E[L_1] = ELBO
    # per image too, L_k for nested samples is not guaranteed to rise, but on average it must
    per_image = iwae_bound(model, x, 100) - iwae_bound(model, x, 1)
    assert (per_image > 0).mean() > 0.8


def test_iwae_independent_of_chunking(trained):
    """Each image's samples come from its own stream, so blocks of any size give the same numbers."""
    model, x, _ = trained
    x = x[:7]
    a = iwae_bound(model, x, 50, max_rows=8192)  # all 7 images x 50 samples in one block
    b = iwae_bound(model, x, 50, max_rows=13)  # 1 image x 13 samples at a time
    np.testing.assert_allclose(a, b, rtol=1e-12)
    # and L_10 is the bound of the first 10 of those 50 samples
    eps = np.stack([image_noise(0, i, 0, 50, model.latent, np.float64) for i in range(7)], axis=1)
    logw = log_importance_weights(model, x, eps)
    np.testing.assert_allclose(iwae_bound(model, x, 10), logsumexp(logw[:, :10]) - np.log(10), rtol=1e-12)
    np.testing.assert_allclose(a, logsumexp(logw) - np.log(50), rtol=1e-12)


def test_logsumexp_is_stable():
    a = np.array([[1000.0, 1000.0], [-1000.0, -1000.0 + np.log(3)]])
    np.testing.assert_allclose(logsumexp(a), [1000 + np.log(2), -1000 + np.log(4)], rtol=1e-14)


def test_rate_plus_distortion_is_minus_the_elbo(trained):
    model, x, y = trained
    m = evaluate(model, x, y).metrics
    assert m["rate_nats"] == m["kl_nats"] and m["distortion_nats"] == m["recon_nats"]
    assert m["rate_nats"] + m["distortion_nats"] == pytest.approx(-m["elbo_nats"], rel=1e-12)
    assert m["neg_elbo"] == pytest.approx(-m["elbo_nats"], rel=1e-12)
    assert sum(m["kl_per_unit_nats"]) == pytest.approx(m["rate_nats"], rel=1e-4)  # rounded to 5 decimals
    m = evaluate(model, x, y, iwae_k=20).metrics
    assert m["iwae_k"] == 20 and m["iwae_nll"] == pytest.approx(-m["iwae_log_px"])
    assert m["iwae_log_px"] > m["elbo_nats"]


def test_active_units_on_constructed_encoders(rng):
    """Units whose mean ignores the image are inactive; units that follow it are active."""
    model = mlp_vae(latent=5, hidden=16, rng=rng, dtype="float64")
    w = model.fc_mu.params["weight"]  # (5, 16)
    w[[0, 2]] = 0.0  # mu_0, mu_2 = their biases: the same for every image
    model.fc_mu.params["bias"][[0, 2]] = [1.5, -0.7]  # a constant far from 0 is still inactive
    w[[1, 3, 4]] *= 50.0  # mu_1, mu_3, mu_4 vary strongly with the image
    x = rng.random((64, 1, 28, 28))
    ev = evaluate(model, x, np.arange(64) % 10)
    var = np.array(ev.metrics["latent_unit_variance"])
    assert ev.metrics["active_units"] == 3
    assert ev.metrics["active_unit_mask"] == [False, True, False, True, True]
    assert var[[0, 2]].max() < 1e-20 and var[[1, 3, 4]].min() > 0.01
    # the threshold itself: variances just above and below 0.01
    mu = np.stack([np.array([-1.0, 1.0] * 50) * s for s in (0.11, 0.09, 0.0)], axis=1)  # var = s^2
    count, values = active_units(mu)
    assert count == 1
    np.testing.assert_allclose(values, [0.0121, 0.0081, 0.0], rtol=1e-12)


@needs_cupy
def test_iwae_numpy_and_cupy_agree(trained):
    import cupy

    model, x, _ = trained
    a = iwae_bound(model, x[:20], 30)
    gpu = model.to(cupy)
    try:
        b = iwae_bound(gpu, cupy.asarray(x[:20]), 30)
    finally:
        model.to(np)
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_blocks_fit_the_memory_they_are_given():
    """rows_that_fit: MEMORY_SHARE of the available bytes over one decoded row's bytes, capped at
    MAX_ROWS, at least 1; a row of the Burda model (decoder 200, 200, 784; float32) is about 26 kB."""
    from minivae.analysis.likelihood import MAX_ROWS, MEMORY_SHARE, row_bytes, rows_that_fit
    from minivae.models import build_model

    model = build_model("mlp", 50, hidden=[200, 200], activation="tanh")
    per_row = row_bytes(model)
    assert per_row == 4 * (2 * (200 + 200 + 784) + 5 * 784 + 4 * 50) + 8
    assert rows_that_fit(model, available=10**12) == MAX_ROWS
    assert rows_that_fit(model, available=1000) == 1
    budget = 200 * per_row / MEMORY_SHARE
    assert rows_that_fit(model, available=int(budget)) == 200


def test_a_burda_style_run_trains_on_the_bound_and_evaluates_the_whole_test_set(
    tmp_path, capsys, mnist_ready
):
    """`minivae train --preset burda` cut down to seconds, with --objective iwae --k 3; then `evaluate
    --iwae-k 20 --test-limit 0` over a --test-limit run: every test image, the bound, the active units."""
    import json

    from minivae.cli import main

    out = tmp_path / "run"
    args = ["train", "--preset", "burda", "--hidden", "16", "16", "--latent", "4", "--epochs", "2",
            "--train-limit", "200", "--test-limit", "100", "--objective", "iwae", "--k", "3",
            "--tsne-points", "0", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert "lr" in header
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [float(r.split(",")[header.index("lr")]) for r in rows] == pytest.approx(
        [1e-3, 1e-3 * 10 ** (-1 / 7)]
    )
    capsys.readouterr()
    assert main(["evaluate", str(out), "--iwae-k", "20", "--test-limit", "0", "--quiet"]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_images"] == 10_000 and m["iwae_k"] == 20 and m["iwae_stderr"] > 0
    assert f"{m['active_units']} of 4 latent units active" in printed and "10000 images" in printed
    report = (out / "report.md").read_text()
    assert "hidden layers 16 x 16 (tanh)" in report and "the IWAE bound with k = 3 samples" in report
    assert "Adam eps 0.0001, lr 0.001 x 10^(-i/7) for 3^i epochs" in report
