# %% [markdown]
# # Lesson 13: the IWAE bound and β schedules. How loose the ELBO is, and what a schedule does to collapse.
#
# ## The idea
#
# Two tools of minivae that the earlier chapters used without looking at them:
#
# - `minivae/analysis/likelihood.py`, the importance-weighted bound of Burda et al. (2015). Every
#   number so far was an ELBO, a lower bound on log p(x). How far below log p(x) is it? The IWAE bound
#   L_k tightens the ELBO with k samples of z, and at k = 5,000 it shows how loose the ELBO was.
# - `minivae/training/schedules.py`, four ways to move β during training: constant, a linear warm-up
#   (Bowman et al. 2016), cycles (Fu et al. 2019) and a capacity target (Burgess et al. 2018). They are
#   the usual medicine against posterior collapse, lesson 12's rate R = 0. Which of them cures it?
#
# ## Why the ELBO is a bound, and why L_k is a tighter one
#
# For one image x, write the importance weight of a code z drawn from the encoder's q(z|x):
#
#     w(z) = p(x|z) p(z) / q(z|x),          E_{z~q}[w(z)] = ∫ p(x|z) p(z) dz = p(x).
#
# So p(x) is an average of weights, and a Monte Carlo average of k of them is an unbiased estimate of
# it. The log of that estimate is biased downwards, because log is concave (Jensen: E[log Y] <= log E[Y]):
#
#     L_k = E[ log (1/k) Σ_{s=1..k} w(z_s) ]  <=  log E[ (1/k) Σ_s w(z_s) ]  =  log p(x),   z_s ~ q(z|x).
#
# At k = 1 it is the ELBO: L_1 = E_q[log p(x|z) + log p(z) - log q(z|x)] = E_q[log p(x|z)] - KL(q || p).
#
# **L_k rises with k.** Take m < k. The average of k weights is the average, over every subset I of
# m of the k indices (each equally likely), of that subset's own average:
#
#     (1/k) Σ_{s=1..k} w_s  =  E_I[ (1/m) Σ_{s in I} w_s ].
#
# Jensen again, inside: log (1/k) Σ_s w_s  >=  E_I[ log (1/m) Σ_{s in I} w_s ]. Take the expectation over
# the z's. Each subset is m independent draws from q, so the right side's expectation is L_m. Hence
#
#     ELBO = L_1  <=  L_m  <=  L_k  <=  log p(x)        for 1 <= m <= k,
#
# and L_k -> log p(x) as k grows (the average of the weights converges to p(x)). How fast it converges
# depends on how uneven the weights are. A second-order expansion of log around p(x) gives
# L_k ≈ log p(x) - Var[w] / (2 k p(x)^2). The gap at k = 1 has a name:
# log p(x) - ELBO = KL(q(z|x) || p(z|x)), how far the encoder's Gaussian is from the true posterior.
#
# **Binarised images, so that log p(x) is a likelihood.** The bound is on log p(x) only if p(x|z) is a
# normalised distribution over the data. BCE against grey levels is not one: on grey-level MNIST a
# perfect reconstruction still pays the pixels' own entropy, about 45.5 nats a test image (lesson 7). So
# this lesson trains with `binarize="dynamic"` (`minivae train --binarize dynamic`). Every training batch
# is drawn afresh as pixel ~ Bernoulli(grey level), and the test images once, from a fixed stream. Then
# p(x|z) is a probability over the 2^784 binary images, p(x) <= 1, and every bound here is a negative
# number of nats bounding a real log-likelihood. Burda et al.'s MNIST numbers are on the same data.
#
# ## Posterior collapse, and what a schedule can do about it
#
# The β-VAE objective is D + β R (distortion plus β times the rate, lesson 12). When β is large, using
# the code costs more than it saves, the KL term pulls every q(z|x) onto the prior, and the decoder
# learns to ignore z. Early in training the decoder cannot use z well yet, so even a β that
# would pay for a code at the end can push the codes onto the prior at the start. Once there, the
# gradient that would pull them back is weak. A **schedule** moves β with the step t (E steps an epoch):
#
#     constant:  β(t) = β
#     linear:    β(t) = β min(1, t / W)                 β from 0 to β over W = warm-up epochs x E steps
#     cyclical:  β(t) = β min(1, τ / ρ),  τ = (t mod L) / L     M cycles of L steps; rise over ρ = 0.5 of each
#     capacity:  loss = D + γ |R - C(t)|,  C(t) = C_max min(1, t / W_C)      γ is the run's β
#
# The first three change the path β takes, not the objective at the end. The capacity objective
# changes the objective itself: it asks for a rate of C nats and penalises any other rate.
#
# ## What to look at
#
# - the trained model's ELBO two ways (the training loop's analytic-KL estimate and the mean of the
#   importance weights) agreeing, and the library's `iwae_bound` agreeing with the weights computed here;
# - the table of L_k for k = 1 ... 5,000: every step up is >= 0, the steps shrink, and the ELBO is
#   several nats below L_5000 (how many: the table);
# - the effective sample size: of 5,000 weights, about ten carry the sum;
# - `13_iwae_bound.png`: L_k against k, and each test image's gap L_5000 - ELBO;
# - the schedule table at β = 20: the constant schedule's rate is a fraction of a nat, warm-up and
#   cycles end there too, the capacity objective holds it near C_max = 25 nats, and D + 20 R says which
#   of them this objective prefers;
# - `13_beta_schedules.png`: β (or C) against the step, the training KL against the step, and the KL per
#   latent unit on the test set, per schedule.
#
# The ranges are those of the default size, measured at seeds 0, 1 and 2; with `--full` the trained
# numbers print without a range (that size was not measured), and the checks that hold by construction
# (the steps up, the two ELBOs, the library's bound) keep theirs.
#
# Then write it yourself: `python lessons/exercises/check.py iwae` grades your log-sum-exp for L_k.

# %%
import math

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae import threads
from minivae.analysis.evaluate import active_units
from minivae.analysis.likelihood import image_noise, iwae_bound, log_importance_weights, logsumexp
from minivae.backend import to_numpy
from minivae.training.config import TrainConfig
from minivae.training.loop import mean_loss, train
from minivae.training.schedules import beta_at, capacity_at

lesson = _common.setup("13_iwae_and_beta_schedules")
xp = lesson.xp
n_threads = threads.apply()
print(f"   BLAS threads: {n_threads} (OPENBLAS_NUM_THREADS if set, else the cores no other program is using)")

# %% [markdown]
# ## A VAE on binarised MNIST
#
# The MLP VAE of lesson 9 (784-400-20, β = 1), trained on dynamically binarised images. The default
# size (12,000 images, 5 epochs) took 8 s of CPU time on the 2-core development machine. It is far
# from a converged model (the full size trains on all 54,000 images for 30 epochs), and a short run
# leaves the ELBO looser than a long one: its gap is larger than a converged model's.

# %%
section("training the MLP VAE on binarised MNIST")
iwae_cfg = TrainConfig(
    arch="mlp",
    latent=20,
    binarize="dynamic",
    seed=lesson.seed,
    backend=lesson.backend,
    tsne_points=0,
    val_fraction=0.05,
    **lesson.pick(
        smoke=dict(epochs=1, train_limit=256, test_limit=64),
        default=dict(epochs=5, train_limit=12_000, test_limit=1000),
        full=dict(epochs=30, train_limit=0, test_limit=1000),
    ),
)
model, data, history = train(iwae_cfg, lesson.run_dir("binarised"), progress=False)
x_test = data.x_test  # (n_test, 1, 28, 28), binary: binarised once from the test split's fixed stream
pixels = to_numpy(x_test[:100])
print(f"   test images are binary: pixel values {sorted(set(np.unique(pixels).tolist()))}")

# %% [markdown]
# ## The importance weights, one matrix
#
# For each of N test images, K = 5,000 codes z_s ~ q(z|x), and log w_s for each, from
# `log_importance_weights` (the library's formula: -BCE summed over the pixels, plus
# log N(z; 0, I) - log N(z; mu, sigma^2) = -1/2 Σ_j (z_j^2 - eps_j^2 - logvar_j)). The noise comes from
# `image_noise`, the same per-image streams that `iwae_bound` reads in order, so the matrix's first k
# columns are exactly the samples `iwae_bound(model, x, k)` uses.
#
# From one (N, K) matrix every bound follows. The mean of a row is the ELBO (the k = 1 bound, estimated
# with K samples). For larger k, cut the row into K / k blocks of k. Each block gives one L_k sample,
# log-sum-exp minus log k, and the blocks' mean estimates L_k. The blocks for k nest inside those for
# every multiple of k, so by the subset argument above the estimates rise with k on every row, not only
# in expectation.

# %%
section("log w for K samples of each test image")
n_img = lesson.pick(smoke=4, default=40, full=500)
K = lesson.pick(smoke=50, default=5000, full=5000)
ks = [k for k in (1, 5, 10, 50, 100, 500, 1000, 5000) if k <= K]  # each divides the next: nested blocks
x = x_test[:n_img]
mu, logvar = model.encode(x)
dtype = np.dtype(mu.dtype)
logw = np.empty((n_img, K))  # (N, K) float64 on the host
for i in range(n_img):
    eps = image_noise(lesson.seed, i, 0, K, model.latent, dtype)[:, None, :]  # (K, 1, latent)
    logw[i] = to_numpy(
        log_importance_weights(model, x[i : i + 1], xp.asarray(eps), mu[i : i + 1], logvar[i : i + 1])
    )[0]


def bound(logw: np.ndarray, k: int) -> np.ndarray:
    """L_k per image from (N, K) log-weights: the mean over K // k blocks of k of logsumexp - log k."""
    n, kk = logw.shape
    blocks = logw[:, : kk // k * k].reshape(n, kk // k, k)  # (N, blocks, k)
    return (logsumexp(blocks, axis=2) - math.log(k)).mean(axis=1)  # (N,)


L = {k: bound(logw, k) for k in ks}
elbo_loop = -mean_loss(model, x, iwae_cfg, stream="test_noise")["loss"]  # analytic KL, one z an image
print(f"   {n_img} test images x {K} samples; log w ranges {logw.min():.0f} .. {logw.max():.0f} nats")
expect(
    "ELBO, the training loop's estimate (analytic KL, one z) minus the mean of log w (nats)",
    elbo_loop - L[1].mean(),
    *lesson.pick((-20, 20), (-2.5, 2.5), (-1.0, 1.0)),
    ".2f",
)
n_check = min(8, n_img)
lib = iwae_bound(model, x[:n_check], K, seed=lesson.seed)  # the library's function, on the first images
expect(
    f"iwae_bound(k={K}) against this matrix's log-sum-exp, first {n_check} images (nats)",
    float(np.abs(lib - (logsumexp(logw[:n_check], axis=1) - math.log(K))).max()),
    hi=1e-3,
    fmt=".1e",
)

# %% [markdown]
# ## How loose the ELBO is
#
# The table is the mean over the N images of each L_k, and the step from the previous k. The nested
# blocks make every step >= 0, on every image. If the 1 / k expansion above held, each tenfold k would
# close nine tenths of what is left, and each tenfold gain would be a tenth of the one before. Here
# the gain from k = 500 to 5,000 is about half the gain from 50 to 500: at these k the weights are too
# uneven for the expansion. L_5000 is still a lower bound, and log p(x) is above it by an amount no
# finite k measures. If the gains kept halving, what is left would be about as much as the last
# tenfold step gained, a small part of the ELBO's gap; that is an extrapolation, not a bound.
#
# The **effective sample size** (Σ w)^2 / Σ w^2 counts how many of the K weights carry the average: K
# if all were equal, 1 if one dominated. Here about ten of 5,000 do. The ELBO fits q(z|x) by
# minimising KL(q || p(z|x)), which punishes q for mass where the posterior has little but not for
# missing mass where it has much. So q tends to be narrower than the posterior, and the rare z from q
# that land in the posterior's wider parts carry the largest weights.

# %%
section("L_k against k (nats, mean over the test images)")
print("         k      L_k    step from the previous k")
prev = None
for k in ks:
    step = "" if prev is None else f"{L[k].mean() - L[prev].mean():+8.3f}"
    print(f"   {k:7d}  {L[k].mean():8.2f}  {step}")
    prev = k
steps = np.stack([L[b] - L[a] for a, b in zip(ks, ks[1:])])  # (len(ks) - 1, N)
expect("smallest step up over all images and k (nats; >= 0 by Jensen)", float(steps.min()), lo=0.0, fmt=".2e")
if len(ks) == 8:  # k = 1, 5, 10, 50, 100, 500, 1000, 5000
    gain = {k: L[k].mean() for k in ks}
    expect(
        "gain from k = 500 to 5000 over the gain from 50 to 500 (0.1 if the 1/k expansion held)",
        float((gain[5000] - gain[500]) / (gain[500] - gain[50])),
        *lesson.pick((None, None), (0.3, 0.8), (None, None)),
        ".2f",
    )
gap = L[ks[-1]] - L[1]  # per image: how much L_K is above the ELBO
expect(
    f"the ELBO's gap to L_{ks[-1]}, mean over images (nats)",
    float(gap.mean()),
    *lesson.pick((0, 50), (4.0, 10.0), (None, None)),
    ".2f",
)
expect(
    f"the last step, L_{ks[-1]} - L_{ks[-2]}, as a share of that gap",
    float((L[ks[-1]] - L[ks[-2]]).mean() / gap.mean()),
    *lesson.pick((0, 1), (0.0, 0.1), (None, None)),
    ".3f",
)
expect(
    f"L_{ks[-1]}: the estimate of log p(x) for a binary test image (nats, < 0)",
    float(L[ks[-1]].mean()),
    *lesson.pick((-600, 0), (-125, -110), (None, 0)),
    ".1f",
)
w = np.exp(logw - logw.max(axis=1, keepdims=True))  # rescaled per image: the ratio below ignores scale
ess = w.sum(axis=1) ** 2 / (w * w).sum(axis=1)  # (N,)
expect(
    f"effective sample size, median over images (of {K})",
    float(np.median(ess)),
    *lesson.pick((1, 50), (3, 40), (None, None)),
    ".0f",
)

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
axes[0].semilogx(ks, [L[k].mean() for k in ks], "-o", label="mean L_k")
axes[0].axhline(L[1].mean(), color="gray", ls=":", lw=1, label="ELBO (k = 1)")
axes[0].set_xlabel("k (samples of z per image)")
axes[0].set_ylabel("nats per image")
axes[0].set_title(f"the IWAE bound rises with k ({n_img} binarised test images)", fontsize=9)
axes[0].grid(alpha=0.3, which="both")
axes[0].legend(fontsize=8)
axes[1].hist(gap, bins=20)
axes[1].set_xlabel(f"L_{ks[-1]} - ELBO (nats)")
axes[1].set_ylabel("test images")
axes[1].set_title("how loose the ELBO is, image by image", fontsize=9)
lesson.savefig(fig, "iwae_bound", "L_k against k; the ELBO's gap per image")

# %% [markdown]
# ## β schedules against posterior collapse
#
# Lesson 12 found collapse at large β: at β = 32 (latent 10) the rate was a few hundredths of a nat and
# every reconstruction the same blob. Here β = 20 (latent 10, 6 epochs on 3,000 binarised images at
# batch 32, 564 steps), chosen by measurement: there the constant schedule collapses to a fraction of a
# nat.
# The four schedules end at the same β = 20:
#
# - constant: β = 20 from the first step;
# - linear: from 0 to 20 over the first half of training;
# - cyclical: two cycles, β rising from 0 to 20 over the first half of each;
# - capacity: loss = D + 20 |R - C|, C from 0 to 25 nats over the first half, then 25.
#
# A rate of a fraction of a nat is a code that carries less than a bit about the image. The KL of
# unit j, 1/2 E_x[mu_j^2 + sigma_j^2 - 1 - log sigma_j^2], shows which units carry it. A unit counts as
# active when Var_x(mu_j) > 0.01 (Burda et al.), a low bar that a unit carrying a few hundredths of a
# nat still clears.
#
# Measured on the 2-core development CPU (`python lessons/13_iwae_and_beta_schedules.py --seed S`,
# S = 0, 1, 2), the test-set rates at the end were 0.16-0.19 nats (constant), 0.26-0.30 (linear),
# 0.15-0.31 (cyclical) and 25-26 (capacity, at a distortion 35-60 nats below the others'). Warm-up and
# cycles end within a few tenths of a nat of the constant schedule. The training KL against the step
# shows why. The warm-up run used its code while β was small (about 5 nats a batch in its first epoch)
# and gave it up as β reached 20; each cycle's restart brings some of the code back, and it goes
# again. At this β a code costs more in β R than it saves in D: the table's D + 20 R is lowest, within
# a few nats, for the three collapsed runs, and 440-490 nats higher for the capacity run. So collapse is
# where this objective is smallest, and changing β's path does not change that. A warm-up helps when
# collapse is a trap of the early steps, as with the autoregressive text decoders of Bowman et al.,
# which can model x without z. An objective that asks for a rate, the capacity target, keeps a code at
# any β, and pays for it in D + β R.

# %%
section("four schedules at beta = 20, latent 10")
sched_base = dict(
    arch="mlp",
    latent=10,
    beta=20.0,
    batch_size=32,  # more steps for the same images: the capacity run's decoder needs them (measured)
    binarize="dynamic",
    seed=lesson.seed,
    backend=lesson.backend,
    tsne_points=0,
    val_fraction=0.05,
    **lesson.pick(
        smoke=dict(epochs=2, train_limit=256, test_limit=64),
        default=dict(epochs=6, train_limit=3000, test_limit=1000),
        full=dict(epochs=20, train_limit=20_000, test_limit=0),
    ),
)
schedules = {
    "constant": dict(beta_schedule="constant"),
    "linear": dict(beta_schedule="linear", beta_warmup_epochs=sched_base["epochs"] / 2),
    "cyclical": dict(beta_schedule="cyclical", beta_cycles=2),
    "capacity": dict(beta_schedule="capacity", capacity_max=25.0, capacity_epochs=sched_base["epochs"] / 2),
}


def kl_recorder(trace: list[float]):
    """An on_step callback appending each step's batch-mean KL (nats) to trace, from the loop's sums."""
    prev = [0.0, 0.0]  # this epoch's Σ k·kl and Σ k before the step

    def on_step(state) -> None:
        if state.batch == 1:  # the first step of an epoch: the loop cleared its sums
            prev[:] = [0.0, 0.0]
        kl_sum, count = state.sums[2], state.sums[3]
        trace.append((kl_sum - prev[0]) / max(count - prev[1], 1))
        prev[:] = [kl_sum, count]

    return on_step


res, d = {}, None
for name, extra in schedules.items():
    cfg = TrainConfig(**sched_base, **extra)
    trace: list[float] = []
    run_dir = lesson.run_dir(f"schedule_{name}")
    m, d, _ = train(cfg, run_dir, progress=False, data=d, on_step=kl_recorder(trace))  # one data load
    mu_t, logvar_t = (to_numpy(a).astype(np.float64) for a in m.encode(d.x_test))
    kl_unit = 0.5 * (mu_t**2 + np.exp(logvar_t) - 1 - logvar_t).mean(axis=0)  # (latent,) nats
    distortion = mean_loss(m, d.x_test, cfg, stream="test_noise")["recon"]  # D: BCE nats, one z an image
    per_epoch = math.ceil(len(d.x_train) / cfg.batch_size)
    steps_t = range(len(trace))
    target = [
        capacity_at(t, per_epoch, cfg) if name == "capacity" else beta_at(t, per_epoch, cfg) for t in steps_t
    ]
    res[name] = dict(
        kl=kl_unit, D=distortion, active=active_units(mu_t)[0], trace=np.array(trace), target=target
    )

beta = sched_base["beta"]
print(f"   schedule   rate R   distortion D   D + {beta:g} R   active units   KL of the three largest units")
for name, r in res.items():
    top = ", ".join(f"{v:.2f}" for v in np.sort(r["kl"])[::-1][:3])
    r["R"] = float(r["kl"].sum())
    print(
        f"   {name:9s} {r['R']:7.2f}   {r['D']:12.1f}   {r['D'] + beta * r['R']:9.1f}   {r['active']:6d}/10      {top}"
    )
for name, label, hi in (
    ("constant", "constant: rate R (nats), collapsed", 0.4),
    ("linear", "linear warm-up: rate R (nats), collapsed too", 0.5),
    ("cyclical", "cyclical: rate R (nats), collapsed too", 0.5),
):
    expect(label, res[name]["R"], *lesson.pick((0, 50), (0.0, hi), (None, None)), ".2f")
expect(
    "capacity: rate R (nats), held near C_max = 25",
    res["capacity"]["R"],
    *lesson.pick((0, 50), (20, 30), (None, None)),
    ".1f",
)
expect(
    f"capacity's D + {beta:g} R minus the constant schedule's (nats): the code costs more than it saves",
    (res["capacity"]["D"] + beta * res["capacity"]["R"])
    - (res["constant"]["D"] + beta * res["constant"]["R"]),
    *lesson.pick((None, None), (300, 600), (None, None)),
    ".0f",
)
first_epoch = len(res["linear"]["trace"]) // sched_base["epochs"]
expect(
    "linear warm-up: training KL in its first epoch, when beta was small (nats)",
    float(res["linear"]["trace"][:first_epoch].mean()),
    *lesson.pick((0, 100), (3.0, 10.0), (None, None)),
    ".1f",
)

fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
for i, (name, r) in enumerate(res.items()):
    t = np.arange(len(r["trace"]))
    target = np.array(r["target"]) / (25.0 if name == "capacity" else beta)
    label = name + (" (C / 25 nats)" if name == "capacity" else " (β / 20)")
    axes[0].plot(t, target, color=f"C{i}", ls="--" if name == "capacity" else "-", label=label)
    w5 = min(5, len(t))  # a 5-step moving average: each point is the mean of the steps t - 4 .. t
    smooth = np.convolve(r["trace"], np.ones(w5) / w5, mode="valid")
    axes[1].semilogy(t[w5 - 1 :], np.maximum(smooth, 1e-3), color=f"C{i}", label=name)
    axes[2].bar(
        np.arange(10) + 0.2 * (i - 1.5),
        np.sort(r["kl"])[::-1],
        width=0.2,
        color=f"C{i}",
        label=f"{name}: {r['active']} active",
    )
axes[0].set_xlabel("training step")
axes[0].set_title("the schedule (a fraction of its end value)", fontsize=9)
axes[1].set_xlabel("training step")
axes[1].set_ylabel("KL of the batch (nats, log scale)")
axes[1].set_title("the rate during training", fontsize=9)
axes[2].set_yscale("log")
axes[2].set_xlabel("latent unit, largest KL first")
axes[2].set_ylabel("KL on the test set (nats)")
axes[2].set_title("which units carry the code, per schedule", fontsize=9)
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
lesson.savefig(fig, "beta_schedules", "beta or C against the step; the KL during training; KL per unit")

# %%
lesson.done()
