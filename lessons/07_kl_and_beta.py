# %% [markdown]
# # Lesson 7: the KL term, what beta trades, and the seed study's loss in standard ELBO units
#
# ## The idea
# A VAE is trained to maximise the evidence lower bound of each image x, or to minimise its negative:
#
#     -ELBO(x) = E_{z~q(z|x)}[ -log p(x|z) ]  +  KL( q(z|x) || p(z) )
#              =        reconstruction        +        rate
#
# With a Bernoulli decoder the first term is the binary cross-entropy summed over the 784 pixels, estimated
# with one z per image (lesson 6). The second has a closed form when q = N(mu, diag(exp(logvar))) and the
# prior is p = N(0, I). Both terms are in nats per image. When the pixels are 0 or 1, -log p(x|z) is the
# BCE exactly and -ELBO(x) >= -log p(x): an upper bound, so models can be compared by it. When the targets
# are MNIST's grey levels (minivae's default, `--binarize none`), the BCE is a cross-entropy against a soft
# target: it is not -log of a probability of the image, and it cannot reach 0 (see the floor below).
#
# ## What to look at
# - the KL of one unit: it grows when the variance shrinks *and* when it grows, and is 0 only at the prior;
# - the closed form against a Monte Carlo estimate (expect |z-score| < 4), the gradient check (< 1e-8);
# - the rate split into information and the aggregate posterior's distance from the prior (expect the
#   closed forms to add up, and the Monte Carlo rate to match, |z-score| < 4);
# - the BCE floor of grey-level MNIST: a perfect reconstruction scores about 45.5 nats per test image;
# - seed form x 784 == ELBO form with the effective beta (expect ~1e-15 relative, float64);
# - the table of the seed study's validation losses in nats, and which latent size wins at beta = 1;
# - 07_kl_and_beta.png: KL per unit over (mu, logvar); the rate split; effective beta per latent size;
#   the seed's losses.

# %%
from __future__ import annotations

import math

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.analysis.evaluate import seed_training_log
from minivae.backend import default_rng, to_numpy
from minivae.nn.gradcheck import check_function
from minivae.nn.losses import SEED_BETA, bce_with_logits, effective_beta, kl_normal, vae_loss
from minivae.nn.reparam import Reparameterize

lesson = _common.setup("07_kl_and_beta")
xp = lesson.xp
rng = np.random.default_rng(lesson.seed)

# %% [markdown]
# ## The KL of one latent unit
# For q = N(mu, s^2) against p = N(0, 1), with logvar = ln s^2:
#
#     KL = 0.5 (mu^2 + s^2 - 1 - ln s^2)       >= 0, and 0 only at mu = 0, s^2 = 1
#     dKL/dmu = mu         dKL/dlogvar = 0.5 (exp(logvar) - 1)
#
# summed over the units. Moving the mean costs mu^2 / 2. The variance costs 0.5 (s^2 - 1 - ln s^2) in
# either direction: the function t - 1 - ln t is 0 at t = 1 and positive on both sides, so shrinking the
# variance (a precise code) and growing it past the prior's (a code wider than the prior) both cost.
# Shrinking is the direction that matters in practice: an encoder that wants to say much about x makes
# s^2 small, and pays about -0.5 ln s^2 for it. minivae.nn.losses.kl_normal computes the sum and both
# gradients; vae_loss(form="elbo") adds the BCE.

# %%
section("KL( N(mu, s^2) || N(0, 1) ) for one unit, closed form")
for mu, var in [(0.0, 1.0), (1.0, 1.0), (0.0, 0.1), (0.0, 10.0), (2.0, 0.01)]:
    kl, _, _ = kl_normal(xp.asarray([[mu]]), xp.asarray([[math.log(var)]]), reduction="sum")
    print(f"   mu = {mu:4.1f}, s^2 = {var:5.2f}:  KL = {float(kl):.4f} nats")
print("   moving the mean costs mu^2 / 2; changing the variance either way costs (s^2 - 1 - ln s^2) / 2")
kl_small = float(kl_normal(xp.asarray([[0.0]]), xp.asarray([[math.log(0.1)]]), reduction="sum")[0])
kl_big = float(kl_normal(xp.asarray([[0.0]]), xp.asarray([[math.log(10.0)]]), reduction="sum")[0])
expect("KL at s^2 = 0.1 (shrunk tenfold): 0.5 (0.1 - 1 + ln 10)", kl_small, 0.70, 0.71, ".4f")
expect("KL at s^2 = 10 (grown tenfold): 0.5 (10 - 1 - ln 10)", kl_big, 3.34, 3.36, ".4f")

# %% [markdown]
# ## The closed form against a Monte Carlo estimate
# KL(q || p) = E_q[log q(z) - log p(z)]: draw z from q by the reparameterization, average the log-density
# difference, and compare with the formula, in units of the estimate's standard error.

# %%
section("the closed form against a Monte Carlo estimate E_q[log q(z) - log p(z)]")
m = lesson.pick(smoke=20_000, default=1_000_000, full=10_000_000)
mu, logvar = 1.0, math.log(0.5)
z = to_numpy(
    Reparameterize().forward(xp.full((m, 1), mu), xp.full((m, 1), logvar), rng=default_rng(lesson.seed, xp))
)[:, 0]
log_q = -0.5 * ((z - mu) ** 2 / math.exp(logvar) + logvar + math.log(2 * math.pi))
log_p = -0.5 * (z**2 + math.log(2 * math.pi))
samples = log_q - log_p
closed = float(kl_normal(xp.asarray([[mu]]), xp.asarray([[logvar]]), reduction="sum")[0])
print(f"   mu = 1, s^2 = 0.5: closed form {closed:.5f}, Monte Carlo {samples.mean():.5f} ({m:,} samples)")
expect(
    "|z-score| of the difference",
    abs(samples.mean() - closed) / (samples.std() / math.sqrt(m)),
    hi=4.0,
    fmt=".2f",
)

# %% [markdown]
# ## Its gradients
# The closed form's two gradients, with beta folded in and the "batchmean" reduction (sum over units, mean
# over the batch), against central differences in float64.

# %%
section("kl_normal's gradients (beta = 0.7, batchmean), float64")
inputs = {"mu": xp.asarray(rng.standard_normal((3, 4))), "logvar": xp.asarray(rng.standard_normal((3, 4)))}
_, dmu, dlogvar = kl_normal(inputs["mu"], inputs["logvar"], beta=0.7)
errs = check_function(
    lambda mu, logvar: kl_normal(mu, logvar, beta=0.7), inputs, {"mu": dmu, "logvar": dlogvar}
)
for name, err in errs.items():
    expect(f"relative error, d/d{name}", err, hi=1e-8, fmt=".1e")

# %% [markdown]
# ## What beta trades, and what the rate measures
# A beta-VAE minimises BCE + beta KL. The KL term is called the "rate". It is tempting to read it as the
# number of nats the code carries about x, but it is more. Averaged over the data, with q(z) = E_x q(z|x)
# the aggregate posterior (the distribution of codes over the whole data set),
#
#     E_x KL( q(z|x) || p(z) )  =  I_q(x; z)  +  KL( q(z) || p(z) )
#
# (expand log q(z|x)/p(z) = log q(z|x)/q(z) + log q(z)/p(z) and average). The first term is the mutual
# information between x and z under the encoder; the second, >= 0, is how far the codes as a whole sit from
# the prior. So the rate is an upper bound on the information, equal to it only when the aggregate posterior
# is the prior. beta prices both: beta < 1 makes information cheap (sharper reconstructions, a posterior
# further from the prior, worse samples from the prior); beta > 1 makes it expensive (blurrier
# reconstructions, codes closer to the prior), and, when beta is large enough, posterior collapse
# (lesson 12): q(z|x) = p(z) for every x, rate 0, information 0.
#
# A case where every term has a closed form: data x ~ N(0, 1) and a linear encoder q(z|x) = N(a x, s^2).
# Then q(z) = N(0, a^2 + s^2), and
#
#     rate  = 0.5 (a^2 + s^2 - 1 - ln s^2)                 (the KL per x, averaged over x ~ N(0, 1))
#     I     = 0.5 ln( (a^2 + s^2) / s^2 )                  (a Gaussian channel's information)
#     gap   = 0.5 (a^2 + s^2 - 1 - ln(a^2 + s^2))          (KL( N(0, a^2 + s^2) || N(0, 1) ))
#
# The gap is 0 when a^2 + s^2 = 1; otherwise the rate overstates the information.

# %%
section("the rate = information + KL(aggregate posterior || prior), linear-Gaussian encoder")
n_x = lesson.pick(smoke=20_000, default=1_000_000, full=4_000_000)
x_data = np.random.default_rng(lesson.seed + 2).standard_normal(n_x)
print("      a    s^2   rate (closed)  rate (kl_normal, MC)  information    gap   rate - info - gap")
rate_rows = []
for a, s2 in [(0.0, 1.0), (0.6, 0.64), (0.9, 0.19), (2.0, 0.25), (0.5, 0.1)]:
    rate = 0.5 * (a**2 + s2 - 1 - math.log(s2))
    info = 0.5 * math.log((a**2 + s2) / s2)
    gap = 0.5 * (a**2 + s2 - 1 - math.log(a**2 + s2))
    # kl_normal, batchmean: the KL of each x's q(z|x), averaged over the n_x data points (exact per x, so
    # the only randomness is which x were drawn; per_x is the same KL per x, for the standard error)
    mc = float(kl_normal(xp.asarray(a * x_data[:, None]), xp.full((n_x, 1), math.log(s2)))[0])
    per_x = 0.5 * (a**2 * x_data**2 + s2 - 1 - math.log(s2))
    se = per_x.std() / math.sqrt(n_x)
    z_mc = (mc - rate) / se if se > 0 else 0.0  # a = 0: every x has the same KL, no spread
    rate_rows.append((a, s2, rate, info, gap, z_mc))
    print(
        f"   {a:4.1f}  {s2:5.2f}  {rate:13.4f}  {mc:20.4f}  {info:11.4f}  {gap:6.4f}  {rate - info - gap:17.1e}"
    )
expect(
    "worst |rate - information - gap| (closed forms)",
    max(abs(r[2] - r[3] - r[4]) for r in rate_rows),
    hi=1e-12,
    fmt=".1e",
)
expect(
    "worst |z-score| of kl_normal averaged over x against the closed-form rate",
    max(abs(r[5]) for r in rate_rows),
    hi=4.0,
    fmt=".2f",
)
print("   a^2 + s^2 = 1 (first three rows): rate = information; the last two: the codes spread wider (a = 2)")
print("   or narrower (a = 0.5) than the prior, and the rate overstates the information by the gap")

# %% [markdown]
# ## The BCE floor of grey-level pixels
# The BCE of a reconstruction p against a pixel x in [0, 1] is -x ln p - (1 - x) ln(1 - p). It is smallest
# at p = x, where it equals the pixel's own entropy H(x) = -x ln x - (1 - x) ln(1 - x): 0 for a pixel that is
# exactly 0 or 1, up to ln 2 = 0.69 nats for a pixel of 0.5. About 18 % of MNIST's pixels are strictly
# between 0 and 1 (the anti-aliased edges of the strokes), so a perfect reconstruction of a test digit still
# scores the sum of its pixels' entropies, about 45.5 nats on average. Wherever a model is trained and
# scored on grey levels, read its BCE as "45.5 plus what the model gets wrong". Training and scoring on
# binarised images (`--binarize dynamic`, as Burda et al. 2015 and most published MNIST log-likelihoods do)
# removes the floor and makes the BCE a true -log p(x|z).

# %%
section("the BCE of a perfect reconstruction of grey-level MNIST (logits = logit(x))")
n_img = lesson.pick(smoke=64, default=10_000, full=10_000)
x_t, _ = _common.mnist("test", n_img, xp, "float64")
x_c = xp.clip(x_t, 1e-12, 1 - 1e-12)
perfect, _ = bce_with_logits(xp.log(x_c) - xp.log1p(-x_c), x_t, "sum")  # sigmoid(logits) = x exactly
grey = float(((x_t > 0) & (x_t < 1)).mean())
print(f"   {n_img:,} test images; {grey:.1%} of their pixels are strictly between 0 and 1")
expect(
    "BCE of a perfect reconstruction (nats per image)",
    float(perfect) / n_img,
    *lesson.pick(smoke=(35, 55), default=(45, 46), full=(45, 46)),
    fmt=".2f",
)

# %% [markdown]
# ## The seed study's units
# The Keras study this project started from minimised, per image,
#
#     L_seed = mean_pixels(BCE) + beta_seed * mean_units( -(1 + logvar - mu^2 - exp(logvar)) )
#
# with beta_seed = 0.0005. The first term is BCE_sum / 784; the second is beta_seed * 2 KL / latent.
# Multiplying by 784 gives BCE_sum + (2 * 784 * beta_seed / latent) KL: a beta-VAE in standard units, with
#
#     effective beta = 2 * 784 * beta_seed / latent        (0.157 at latent 5, 0.052 at 15, 0.039 at 20)
#
# So its "latent size study" also changed beta with the latent size, and its loss values cannot be compared
# across latent sizes. minivae.nn.losses.effective_beta gives the number; converting its logged losses back to
# nats makes the comparison fair (below). The study trained on grey levels, so its reconstruction numbers
# include the floor above.

# %%
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

# %% [markdown]
# ## The figure
# Left to right: the KL of one unit over (mu, logvar), 0 only at the star and rising in every direction;
# the rate of the linear-Gaussian encoder split into information and gap as the encoder's gain a grows
# (s^2 = 0.1); the seed's beta_seed in standard units per latent size; the seed's losses in nats.

# %%
fig, axes = plt.subplots(1, 4, figsize=(18, 3.9))
mu_g, lv_g = np.meshgrid(np.linspace(-3, 3, 121), np.linspace(-4, 3, 141))
kl_g = 0.5 * (np.exp(lv_g) + mu_g**2 - 1 - lv_g)
cs = axes[0].contourf(mu_g, lv_g, kl_g, levels=[0, 0.1, 0.25, 0.5, 1, 2, 3, 4, 6, 8], cmap="viridis")
fig.colorbar(cs, ax=axes[0], label="KL (nats)")
axes[0].plot(0, 0, "w*", ms=10)
axes[0].set_xlabel("mu")
axes[0].set_ylabel("logvar")
axes[0].set_title("KL per latent unit; 0 only at the prior (star)", fontsize=9)
a_g, s2 = np.linspace(0, 2.5, 101), 0.1
info_g = 0.5 * np.log((a_g**2 + s2) / s2)
gap_g = 0.5 * (a_g**2 + s2 - 1 - np.log(a_g**2 + s2))
axes[1].stackplot(a_g, info_g, gap_g, labels=["information I(x; z)", "gap KL(q(z) || p(z))"], alpha=0.8)
axes[1].plot(a_g, 0.5 * (a_g**2 + s2 - 1 - np.log(s2)), "k--", lw=1, label="rate (average KL)")
axes[1].axvline(math.sqrt(1 - s2), color="gray", lw=0.8, ls=":")
axes[1].set_xlabel("encoder gain a  (q(z|x) = N(a x, 0.1), x ~ N(0, 1))")
axes[1].set_ylabel("nats")
axes[1].set_title("rate = information + gap; gap 0 at a^2 + s^2 = 1 (dotted)", fontsize=9)
axes[1].legend(fontsize=7)
lat = np.arange(2, 33)
axes[2].plot(lat, [effective_beta("seed", SEED_BETA, int(k)) for k in lat], "-")
for k in (5, 10, 15, 20):
    b = effective_beta("seed", SEED_BETA, k)
    axes[2].plot(k, b, "o", color="C1")
    axes[2].annotate(f"{b:.3f}", (k, b), textcoords="offset points", xytext=(4, 4), fontsize=8)
axes[2].set_xlabel("latent size")
axes[2].set_ylabel("effective beta (ELBO units)")
axes[2].set_title("the seed's beta_seed = 0.0005 in standard units", fontsize=9)
axes[2].grid(alpha=0.3)
ks = [str(k) for k in table]
axes[3].bar(ks, [r for r, _ in table.values()], label="reconstruction (BCE nats)")
axes[3].bar(ks, [k for _, k in table.values()], bottom=[r for r, _ in table.values()], label="KL (nats)")
axes[3].set_xlabel("latent size")
axes[3].set_ylabel("nats per validation image")
axes[3].set_title("seed study, last epoch: -ELBO = reconstruction + KL", fontsize=9)
axes[3].legend(fontsize=8)
lesson.savefig(fig, "kl_and_beta", "KL landscape, the rate split, effective beta, the seed's losses in nats")

# %% [markdown]
# ## Now write it yourself
# `python lessons/exercises/check.py kl` grades your closed-form KL and its two gradients against minivae's
# own with float64 checks, and names the likely bug when the error has a recognisable shape (a gradient off
# by a factor of 2, or with its sign flipped).

# %%
lesson.done()
