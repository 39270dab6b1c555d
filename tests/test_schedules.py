"""β schedules: their values at given steps, the capacity loss's gradient, and bad settings refused."""

from __future__ import annotations

import numpy as np
import pytest

from minivae.analysis.report import schedule_text
from minivae.errors import UserError
from minivae.nn.gradcheck import check_function
from minivae.nn.losses import kl_normal, vae_loss
from minivae.training.config import TrainConfig
from minivae.training.schedules import beta_at, capacity_at, final_beta_capacity

E = 10  # steps per epoch in these tables


def cfg(**kw) -> TrainConfig:
    return TrainConfig(epochs=4, beta=2.0, **kw).validate()


@pytest.mark.parametrize("step", [0, 7, 39, 1000])
def test_constant(step):
    assert beta_at(step, E, cfg()) == 2.0
    assert capacity_at(step, E, cfg()) is None


@pytest.mark.parametrize(
    "warmup,step,expected",
    [
        (2.0, 0, 0.0),  # starts at 0: a plain autoencoder at first
        (2.0, 5, 0.5),  # a quarter of the 20-step warm-up: beta / 4
        (2.0, 10, 1.0),
        (2.0, 20, 2.0),  # reached at the end of epoch 2 ...
        (2.0, 39, 2.0),  # ... and held
        (0.5, 4, 1.6),  # fractional epochs: 5 warm-up steps
        (0.0, 10, 0.5),  # 0: the warm-up spans the whole run (40 steps)
        (0.0, 40, 2.0),
    ],
)
def test_linear_warmup(warmup, step, expected):
    assert beta_at(step, E, cfg(beta_schedule="linear", beta_warmup_epochs=warmup)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "cycles,ratio,step,expected",
    [
        (2, 0.5, 0, 0.0),  # 2 cycles of 20 steps over 4 epochs of 10
        (2, 0.5, 5, 1.0),  # halfway up the rise of the first cycle
        (2, 0.5, 10, 2.0),  # the rise takes the first half (R = 0.5) ...
        (2, 0.5, 19, 2.0),  # ... then beta stays for the second half
        (2, 0.5, 20, 0.0),  # the second cycle starts again from 0
        (2, 0.5, 25, 1.0),
        (2, 0.5, 39, 2.0),
        (4, 1.0, 5, 1.0),  # R = 1: a saw-tooth rising over whole 10-step cycles
        (4, 1.0, 10, 0.0),
        (3, 0.5, 6, 1.8),  # cycles of 40/3 steps: tau = 6 / 13.33 = 0.45, 90 % of the rise
        (3, 0.5, 7, 2.0),  # tau = 0.525: past the rise
        (3, 0.5, 14, 0.2),  # second cycle from step 13.33: tau = 0.05
    ],
)
def test_cyclical(cycles, ratio, step, expected):
    c = cfg(beta_schedule="cyclical", beta_cycles=cycles, beta_cycle_ratio=ratio)
    assert beta_at(step, E, c) == pytest.approx(expected)


@pytest.mark.parametrize(
    "epochs,step,expected",
    [(2.0, 0, 0.0), (2.0, 10, 5.0), (2.0, 20, 10.0), (2.0, 35, 10.0), (0.0, 10, 2.5), (0.0, 40, 10.0)],
)
def test_capacity(epochs, step, expected):
    c = cfg(beta_schedule="capacity", capacity_max=10.0, capacity_epochs=epochs)
    assert capacity_at(step, E, c) == pytest.approx(expected)
    assert beta_at(step, E, c) == 2.0  # gamma: constant
    assert final_beta_capacity(c) == (2.0, 10.0)


@pytest.mark.parametrize("capacity", [0.5, 50.0])  # C below and above the KL: both slopes of |KL - C|
def test_capacity_loss_gradient(capacity, rng):
    logits = rng.standard_normal((3, 1, 4, 4))
    x = rng.random((3, 1, 4, 4))
    mu, logvar = rng.standard_normal((3, 5)), 0.5 * rng.standard_normal((3, 5))
    kl = float(kl_normal(mu, logvar)[0])
    assert abs(kl - capacity) > 1  # away from the kink
    out = vae_loss(logits, x, mu, logvar, beta=3.0, capacity=capacity)
    assert float(out.total) == pytest.approx(float(out.recon) + 3.0 * abs(kl - capacity), rel=1e-14)
    errs = check_function(
        lambda logits, mu, logvar: vae_loss(logits, x, mu, logvar, 3.0, "elbo", capacity).total,
        {"logits": logits, "mu": mu, "logvar": logvar},
        {"logits": out.dlogits, "mu": out.dmu, "logvar": out.dlogvar},
    )
    assert max(errs.values()) <= 1e-6, errs
    # above the capacity the KL is pushed down as by beta; below it, pulled up
    plain = vae_loss(logits, x, mu, logvar, beta=3.0)
    sign = 1.0 if kl > capacity else -1.0
    np.testing.assert_allclose(out.dmu, sign * plain.dmu, rtol=1e-14)


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(beta_schedule="sigmoid"), "--beta-schedule 'sigmoid' is not known"),
        (dict(beta_schedule="capacity", loss="seed"), "capacity needs --loss elbo"),
        (dict(beta_cycles=0), "--beta-cycles must be a whole number >= 1"),
        (dict(beta_cycle_ratio=0.0), "--beta-cycle-ratio must be in (0, 1]"),
        (dict(capacity_max=-1.0), "--capacity-max must be a finite number >= 0"),
        (dict(beta_warmup_epochs=float("nan")), "--beta-warmup-epochs must be a finite number >= 0"),
    ],
)
def test_bad_settings_refused(kw, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        TrainConfig(**kw).validate()


def test_report_describes_the_schedule():
    assert schedule_text(cfg()) == "constant"
    assert "linear warm-up from 0 to 2 over 1.5 of 4 epochs" in schedule_text(
        cfg(beta_schedule="linear", beta_warmup_epochs=1.5)
    )
    assert "3 cycles over 4 epochs" in schedule_text(cfg(beta_schedule="cyclical", beta_cycles=3))
    assert "recon + 2 |KL - C|, C rising from 0 to 25 nats over 4 of 4 epochs" in schedule_text(
        cfg(beta_schedule="capacity")
    )
