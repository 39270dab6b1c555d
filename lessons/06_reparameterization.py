# %% [markdown]
# # Lesson 6: the reparameterization trick. Why sampling blocks gradients, the fix, and a statistical check
#
# ## The idea
# A VAE's encoder outputs, for each image, the mean mu and the log-variance logvar of a Gaussian over the
# latent code, q(z|x) = N(mu, exp(logvar)). The decoder then needs a sample z from it. "Draw z from
# N(mu, sigma^2)" is not a function of mu and sigma that we can differentiate: run it twice and you get two
# different numbers, so there is no dz/dmu to backpropagate.
#
# The trick moves the randomness out of the way. Draw eps ~ N(0, I) first, independent of everything, then
#
#     z = mu + exp(0.5 logvar) * eps            (exp(0.5 logvar) = sigma, the standard deviation)
#
# For a fixed eps this is an ordinary differentiable function, and since eps has the right distribution,
# so does z: E[z] = mu, Var[z] = exp(logvar).
#
# ## What to look at
# - the finite-difference "gradient" of a fresh sample: noise with standard deviation sigma / (sqrt(2) h),
#   meaningless;
# - the backward against finite differences with eps fixed (expect < 1e-8);
# - the sample means and variances as z-scores (expect |z| < 4), and the buggy sampler's huge z-score;
# - 06_reparam.png: samples against the target density, and the two gradient estimators' spreads.

# %%
from __future__ import annotations

import math

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.backend import default_rng, to_numpy
from minivae.nn.gradcheck import check_function
from minivae.nn.reparam import Reparameterize

lesson = _common.setup("06_reparameterization")
xp = lesson.xp
rng = np.random.default_rng(lesson.seed)

# %% [markdown]
# ## A fresh sample has no derivative
# Try a central difference on a sampler that draws new noise at each call: sample(mu + h) = mu + h + sigma e1
# and sample(mu - h) = mu - h + sigma e2, with e1 and e2 independent N(0, 1). Then
#
#     (sample(mu + h) - sample(mu - h)) / 2h = 1 + sigma (e1 - e2) / 2h
#
# and e1 - e2 ~ N(0, 2), so the quotient is 1 plus noise with standard deviation sigma sqrt(2) / 2h
# = sigma / (sqrt(2) h): about 350,000 for sigma = 0.5 and h = 1e-6, and it grows as h shrinks. Hold the
# noise fixed (the same e in both calls) and the noise term cancels exactly, leaving dz/dmu = 1.

# %%
section("a fresh sample has no derivative")
mu, sigma, h = 1.0, 0.5, 1e-6
f = [float(np.random.default_rng(lesson.seed + k).normal(m, sigma)) for k, m in enumerate((mu + h, mu - h))]
fd = (f[0] - f[1]) / (2 * h)
noise_sd = sigma / (math.sqrt(2) * h)
print(f"   (sample(mu + h) - sample(mu - h)) / 2h = {fd:.3g}   (garbage: 1 + noise of sd {noise_sd:.3g})")
expect("   its distance from 1 in units of sigma / (sqrt(2) h)", abs(fd - 1) / noise_sd, hi=4.0, fmt=".2f")
f = [float(np.random.default_rng(7).normal(m, sigma)) for m in (mu + h, mu - h)]
print(f"   the same with the noise held fixed:      {(f[0] - f[1]) / (2 * h):.6f}   (expect 1: dz/dmu)")

# %% [markdown]
# ## The backward, checked with eps fixed
# With eps fixed, z = mu + exp(0.5 logvar) eps has the derivatives
#
#     dz/dmu = 1          dz/dlogvar = 0.5 exp(0.5 logvar) eps = 0.5 (z - mu)
#
# minivae.nn.reparam's Reparameterize.forward takes eps explicitly (or draws it from a generator);
# backward(dz) returns (dmu, dlogvar). A fixed eps is also what makes finite-difference checks of a whole VAE
# possible. Below, L = sum(z * dz) for a random upstream gradient dz, checked in float64.

# %%
section("Reparameterize: z = mu + exp(0.5 logvar) * eps, backward checked with eps fixed (float64)")
n, d = lesson.pick(smoke=(2, 3), default=(4, 5), full=(16, 20))
rep = Reparameterize()
inputs = {
    "mu": xp.asarray(rng.standard_normal((n, d))),
    "logvar": xp.asarray(rng.standard_normal((n, d))),
}
eps = xp.asarray(rng.standard_normal((n, d)))
dz = xp.asarray(rng.standard_normal((n, d)))  # an upstream gradient; L = sum(z * dz)
rep.forward(inputs["mu"], inputs["logvar"], eps)
dmu, dlogvar = rep.backward(dz)


def loss(mu, logvar):
    return float((Reparameterize().forward(mu, logvar, eps) * dz).sum())


for name, err in check_function(loss, inputs, {"mu": dmu, "logvar": dlogvar}).items():
    expect(f"relative error, d/d{name}", err, hi=1e-8, fmt=".1e")
z0 = rep.forward(inputs["mu"], inputs["logvar"], xp.zeros_like(eps))
print(f"   eps = 0 gives z = mu: max |z - mu| = {float(abs(z0 - inputs['mu']).max()):g}   (expect exactly 0)")

# %% [markdown]
# ## A statistical check of the samples
# Mind the names: logvar is a log-variance, so sigma = exp(0.5 logvar). Writing exp(logvar) by mistake (the
# log-std convention) gives a variance of exp(2 logvar). numpy-ml's VAE shipped that bug; a gradient check
# cannot see it (the code is differentiated correctly, it just computes the wrong thing), but a statistical
# check of the samples' variance catches it at once.
#
# The check: draw m samples per unit and turn the sample mean and variance into z-scores. The standard error
# of a mean is sigma / sqrt(m); that of a Gaussian sample variance is var sqrt(2 / (m - 1)). A correct
# sampler gives |z| < 4 (a false alarm about once in 16,000 checks).

# %%
section("a statistical check: do the samples have mean mu and variance exp(logvar)?")
m = lesson.pick(smoke=20_000, default=1_000_000, full=10_000_000)
mus = np.array([0.0, 1.5, -2.0])
logvars = np.log(np.array([1.0, 0.25, 4.0]))
grng = default_rng(lesson.seed, xp)  # a generator on the backend: the noise is drawn where z lives
z = rep.forward(
    xp.asarray(np.broadcast_to(mus, (m, 3)).copy()),
    xp.asarray(np.broadcast_to(logvars, (m, 3)).copy()),
    rng=grng,
)
z = to_numpy(z)
var = np.exp(logvars)
z_mean = (z.mean(axis=0) - mus) / np.sqrt(var / m)
z_var = (z.var(axis=0, ddof=1) - var) / (var * math.sqrt(2 / (m - 1)))
print(f"   {m:,} samples of each of 3 units, mu = {mus.tolist()}, variance = {var.tolist()}")
expect("worst |z-score| of the sample means", float(np.abs(z_mean).max()), hi=4.0, fmt=".2f")
expect("worst |z-score| of the sample variances", float(np.abs(z_var).max()), hi=4.0, fmt=".2f")
eps_h = np.random.default_rng(lesson.seed).standard_normal((m, 3))
z_bug = mus + np.exp(logvars) * eps_h  # the log-std mix-up: exp(logvar) used as sigma
z_var_bug = (z_bug.var(axis=0, ddof=1) - var) / (var * math.sqrt(2 / (m - 1)))
expect(
    "the same check on the buggy sampler (exp(logvar) as sigma)",
    float(np.abs(z_var_bug).max()),
    lo=4.0,
    fmt=".0f",
)

# %% [markdown]
# ## Why this estimator
# Training minimises an expectation, E_{z~q}[f(z)]. Its gradient can be estimated two ways from samples:
# - pathwise (reparameterization): d/dmu f(mu + sigma eps) = f'(z), which uses f's derivative;
# - score function (REINFORCE): f(z) d/dmu log q(z) = f(z) (z - mu) / sigma^2, which uses f's values only.
#
# Both are unbiased, but the pathwise one usually has far smaller variance. For f(z) = z^2 the true
# gradient is 2 mu; compare the spread of the two below. The number of samples needed for a given accuracy
# grows with the variance, so the ratio of the variances is the ratio of the samples needed.

# %%
section("two unbiased estimates of d/dmu E[z^2] = 2 mu (mu = 1.5, sigma = 0.5)")
mu1, s1 = 1.5, 0.5
e1 = np.random.default_rng(lesson.seed + 1).standard_normal(m)
z1 = mu1 + s1 * e1
pathwise = 2 * z1  # f'(z) dz/dmu
score = z1**2 * (z1 - mu1) / s1**2  # f(z) d log q / dmu
# each mean within 5 standard errors of the truth: sd / sqrt(m), with sd 1.0 and about 7.4
se_path, se_score = 1.0 / math.sqrt(m), 7.4 / math.sqrt(m)
expect("pathwise mean (true 3.0)", float(pathwise.mean()), 3 - 5 * se_path, 3 + 5 * se_path, ".4f")
expect("score-function mean (true 3.0)", float(score.mean()), 3 - 5 * se_score, 3 + 5 * se_score, ".4f")
expect("pathwise standard deviation (2 sigma = 1.0)", float(pathwise.std()), 0.98, 1.02, ".3f")
expect("score-function standard deviation", float(score.std()), lo=3.0, fmt=".3f")
print(
    f"   the score function needs about {(score.std() / pathwise.std()) ** 2:.0f}x more samples "
    "for the same accuracy"
)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
grid = np.linspace(-8, 6, 400)
for k, c in zip(range(3), ("C0", "C1", "C2")):
    axes[0].hist(z[:, k], bins=120, range=(-8, 6), density=True, alpha=0.45, color=c, histtype="stepfilled")
    pdf = np.exp(-((grid - mus[k]) ** 2) / (2 * var[k])) / np.sqrt(2 * np.pi * var[k])
    axes[0].plot(grid, pdf, color=c, lw=1.2, label=f"mu={mus[k]}, var={var[k]:g}")
axes[0].set_title("reparameterized samples (bars) against N(mu, exp(logvar)) (lines)", fontsize=9)
axes[0].legend(fontsize=7)
style = {"bins": 200, "range": (-10, 16), "density": True, "alpha": 0.6, "histtype": "stepfilled"}
axes[1].hist(pathwise, label=f"pathwise, sd {pathwise.std():.2f}", **style)
axes[1].hist(score, label=f"score function, sd {score.std():.2f}", **style)
axes[1].axvline(2 * mu1, color="k", lw=1, ls="--", label="true gradient 2 mu = 3")
axes[1].set_title("per-sample estimates of d/dmu E[z^2]", fontsize=9)
axes[1].legend(fontsize=7)
lesson.savefig(fig, "reparam", "samples vs target density; pathwise vs score-function gradient spread")

# %% [markdown]
# ## Now write it yourself
# `lessons/exercises/` holds the reparameterization with its forward and backward left for you to write;
# `python lessons/exercises/check.py reparam` grades them against minivae's own with float64 checks, and
# names the likely bug when the error has a recognisable shape (exp(logvar) where exp(logvar / 2) belongs,
# for one).

# %%
lesson.done()
