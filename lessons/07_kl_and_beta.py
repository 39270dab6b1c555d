"""Lesson 7: the KL term, what beta trades, and the seed study's loss in standard ELBO units.

The ELBO
--------
A VAE is trained to maximise the evidence lower bound of each image x, or to minimise its negative:

    -ELBO(x) = E_{z~q(z|x)}[ -log p(x|z) ]  +  KL( q(z|x) || p(z) )
             =        reconstruction        +        rate

With a Bernoulli decoder the first term is the binary cross-entropy summed over the 784 pixels, estimated
with one z per image (lesson 6). The second has a closed form when q = N(mu, diag(exp(logvar))) and the
prior is p = N(0, I). Per latent unit:

    KL = 0.5 (exp(logvar) + mu^2 - 1 - logvar)       >= 0, and 0 only at mu = 0, logvar = 0
    dKL/dmu = mu         dKL/dlogvar = 0.5 (exp(logvar) - 1)

summed over the units. Both terms are in nats per image; their sum is a bound on -log p(x), so different
models can be compared by it. minivae.nn.losses.kl_normal computes it; vae_loss(form="elbo") adds the BCE.

What beta trades
----------------
A beta-VAE minimises BCE + beta KL. The KL is the "rate": how many nats of information about x the code
carries. beta < 1 makes information cheap: sharper reconstructions, a posterior further from the prior,
samples from the prior worse. beta > 1 makes it expensive: blurrier reconstructions, a smoother, more
prior-like latent space, and, when beta is large enough, posterior collapse (lesson 11).

The seed study's units
----------------------
The Keras study this project started from minimised, per image,

    L_seed = mean_pixels(BCE) + beta_seed * mean_units( -(1 + logvar - mu^2 - exp(logvar)) )

with beta_seed = 0.0005. The first term is BCE_sum / 784; the second is beta_seed * 2 KL / latent.
Multiplying by 784 gives BCE_sum + (2 * 784 * beta_seed / latent) KL: a beta-VAE in standard units, with

    effective beta = 2 * 784 * beta_seed / latent        (0.157 at latent 5, 0.052 at 15, 0.039 at 20)

So its "latent size study" also changed beta with the latent size, and its loss values cannot be compared
across latent sizes. minivae.nn.losses.effective_beta gives the number; converting its logged losses back to
nats makes the comparison fair (below).

What to look at
---------------
- the closed form against a Monte Carlo estimate (expect |z-score| < 4), the gradient check (< 1e-8);
- seed form x 784 == ELBO form with the effective beta (expect ~1e-15 relative, float64);
- the table of the seed study's validation losses in nats, and which latent size wins at beta = 1;
- 07_kl_and_beta.png: KL per unit over (mu, logvar); effective beta per latent size; the seed's losses.
"""

from __future__ import annotations

import math

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.analysis.evaluate import seed_training_log
from minivae.backend import default_rng, to_numpy
from minivae.nn.gradcheck import check_function
from minivae.nn.losses import SEED_BETA, effective_beta, kl_normal, vae_loss
from minivae.nn.reparam import Reparameterize


def run() -> None:
    lesson = _common.setup(__file__, __doc__)
    xp = lesson.xp
    rng = np.random.default_rng(lesson.seed)

    section("KL( N(mu, sigma^2) || N(0, 1) ) for one unit, closed form")
    for mu, var in [(0.0, 1.0), (1.0, 1.0), (0.0, 0.1), (0.0, 10.0), (2.0, 0.01)]:
        kl, _, _ = kl_normal(xp.asarray([[mu]]), xp.asarray([[math.log(var)]]), reduction="sum")
        print(f"   mu = {mu:4.1f}, sigma^2 = {var:5.2f}:  KL = {float(kl):.4f} nats")
    print("   moving the mean costs mu^2 / 2; shrinking the variance costs (sigma^2 - 1 - ln sigma^2) / 2")

    section("the closed form against a Monte Carlo estimate E_q[log q(z) - log p(z)]")
    m = lesson.pick(smoke=20_000, default=1_000_000, full=10_000_000)
    mu, logvar = 1.0, math.log(0.5)
    z = to_numpy(
        Reparameterize().forward(
            xp.full((m, 1), mu), xp.full((m, 1), logvar), rng=default_rng(lesson.seed, xp)
        )
    )[:, 0]
    log_q = -0.5 * ((z - mu) ** 2 / math.exp(logvar) + logvar + math.log(2 * math.pi))
    log_p = -0.5 * (z**2 + math.log(2 * math.pi))
    samples = log_q - log_p
    closed = float(kl_normal(xp.asarray([[mu]]), xp.asarray([[logvar]]), reduction="sum")[0])
    print(
        f"   mu = 1, sigma^2 = 0.5: closed form {closed:.5f}, Monte Carlo {samples.mean():.5f} ({m:,} samples)"
    )
    expect(
        "|z-score| of the difference",
        abs(samples.mean() - closed) / (samples.std() / math.sqrt(m)),
        hi=4.0,
        fmt=".2f",
    )

    section("kl_normal's gradients (beta = 0.7, batchmean), float64")
    inputs = {
        "mu": xp.asarray(rng.standard_normal((3, 4))),
        "logvar": xp.asarray(rng.standard_normal((3, 4))),
    }
    _, dmu, dlogvar = kl_normal(inputs["mu"], inputs["logvar"], beta=0.7)
    errs = check_function(
        lambda mu, logvar: kl_normal(mu, logvar, beta=0.7), inputs, {"mu": dmu, "logvar": dlogvar}
    )
    for name, err in errs.items():
        expect(f"relative error, d/d{name}", err, hi=1e-8, fmt=".1e")

    section("the seed study's loss is a beta-VAE with beta = 2 * 784 * 0.0005 / latent")
    x, _ = _common.mnist("test", lesson.pick(smoke=4, default=64, full=256), xp, "float64")
    for latent in (5, 10, 15, 20):
        logits = xp.asarray(rng.standard_normal(x.shape) * 3)
        mu_b = xp.asarray(rng.standard_normal((len(x), latent)))
        lv_b = xp.asarray(rng.standard_normal((len(x), latent)) * 0.5)
        seed = vae_loss(logits, x, mu_b, lv_b, beta=SEED_BETA, form="seed")
        b_eff = effective_beta("seed", SEED_BETA, latent)
        elbo = vae_loss(logits, x, mu_b, lv_b, beta=b_eff, form="elbo")
        err = abs(784 * float(seed.total) - float(elbo.total)) / abs(float(elbo.total))
        print(
            f"   latent {latent:2d}: beta_eff {b_eff:.4f};  784 L_seed = {784 * float(seed.total):8.3f}, "
            f"BCE + beta_eff KL = {float(elbo.total):8.3f}  (difference {err:.0e}, expect < 1e-12)"
        )

    section("the seed study's validation losses (last epoch) converted to nats per image")
    print("   latent  beta_eff  seed loss   recon (nats)  KL (nats)  recon+beta_eff*KL  -ELBO (beta=1)")
    table = {}
    for latent in (5, 10, 15, 20):
        last = seed_training_log(latent)[-1]
        recon = 784 * last["val_reconstruction_loss"]  # pixel mean -> per-image sum
        kl = last["val_kl_loss"] / SEED_BETA * latent / 2  # logged kl is beta_seed * 2 KL / latent
        b_eff = effective_beta("seed", SEED_BETA, latent)
        table[latent] = (recon, kl)
        print(f"   {latent:6d}  {b_eff:8.4f}  {last['val_loss']:9.4f}  {recon:12.1f}  {kl:9.1f}  "
              f"{recon + b_eff * kl:17.1f}  {recon + kl:14.1f}")  # fmt: skip
    best_seed = min(table, key=lambda k: seed_training_log(k)[-1]["val_loss"])
    best_elbo = min(table, key=lambda k: sum(table[k]))
    print(f"   smallest seed loss: latent {best_seed};  smallest -ELBO at beta = 1: latent {best_elbo}")
    print("   (the logged losses have 4 decimals, so the KL column is good to a couple of percent)")
    expect("the seed's latent-15 KL in nats", table[15][1], 40, 60, ".1f")

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.9))
    mu_g, lv_g = np.meshgrid(np.linspace(-3, 3, 121), np.linspace(-4, 3, 141))
    kl_g = 0.5 * (np.exp(lv_g) + mu_g**2 - 1 - lv_g)
    cs = axes[0].contourf(mu_g, lv_g, kl_g, levels=[0, 0.1, 0.25, 0.5, 1, 2, 3, 4, 6, 8], cmap="viridis")
    fig.colorbar(cs, ax=axes[0], label="KL (nats)")
    axes[0].plot(0, 0, "w*", ms=10)
    axes[0].set_xlabel("mu")
    axes[0].set_ylabel("logvar")
    axes[0].set_title("KL per latent unit; 0 only at the prior (star)", fontsize=9)
    lat = np.arange(2, 33)
    axes[1].plot(lat, [effective_beta("seed", SEED_BETA, int(k)) for k in lat], "-")
    for k in (5, 10, 15, 20):
        axes[1].plot(k, effective_beta("seed", SEED_BETA, k), "o", color="C1")
        b = effective_beta("seed", SEED_BETA, k)
        axes[1].annotate(f"{b:.3f}", (k, b), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes[1].set_xlabel("latent size")
    axes[1].set_ylabel("effective beta (ELBO units)")
    axes[1].set_title("the seed's beta_seed = 0.0005 in standard units", fontsize=9)
    axes[1].grid(alpha=0.3)
    ks = list(table)
    axes[2].bar([str(k) for k in ks], [table[k][0] for k in ks], label="reconstruction (BCE nats)")
    axes[2].bar(
        [str(k) for k in ks], [table[k][1] for k in ks], bottom=[table[k][0] for k in ks], label="KL (nats)"
    )
    axes[2].set_xlabel("latent size")
    axes[2].set_ylabel("nats per validation image")
    axes[2].set_title("seed study, last epoch: -ELBO = reconstruction + KL", fontsize=9)
    axes[2].legend(fontsize=8)
    lesson.savefig(fig, "kl_and_beta", "KL landscape, effective beta, the seed's losses in nats")


if __name__ == "__main__":
    _common.main(run)
