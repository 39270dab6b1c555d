# %% [markdown]
# # Lesson 12: the beta trade-off. Reconstruction (distortion) against KL (rate), and posterior collapse.
#
# ## The idea
#
# A beta-VAE minimises, per image,
#
#     D + beta R,     D = E_q[-log p(x|z)]  (distortion: BCE, nats)      R = KL(q(z|x) || p(z))  (rate: nats)
#
# D is what the code leaves unexplained about the image; R is what the code costs, and averaged over the
# images it is an upper bound on the information I(x; z) the code carries (lesson 9). Like lesson 9,
# this lesson trains on dynamically binarised MNIST, so that D is -log p(x|z) of a binary image and
# D + R is the negative ELBO, an upper bound on -log p(x) (on grey levels D would have a floor of 45.5
# nats and the sum would bound nothing).
#
# Every model sits at a point (R, D); training at a given beta looks for the point where the curve of
# achievable (R, D) pairs has slope -beta. So sweeping beta traces that curve, the rate-distortion curve:
#
# - beta < 1: information is cheap. High rate, low distortion: reconstructions that keep more of each
#   digit, but codes that spread away from the prior, so decoding z ~ N(0, I) gives worse samples.
# - beta = 1: the ordinary VAE; D + R is the negative ELBO, and among all the points on the curve it is
#   the one with the lowest D + R (lines of equal -ELBO have slope -1 in the (R, D) plane).
# - beta > 1: information is expensive. Low rate, blurrier and more "typical" reconstructions, a
#   smoother, more prior-like latent space (the beta-VAE's disentanglement argument).
# - beta large enough: posterior collapse. Using the code costs more than it saves, so q(z|x) = p(z) for
#   every x: R = 0, every unit inactive, and the decoder learns to ignore z and draw the same average
#   blob for every input. D is then the distortion of the best single image for the whole data set.
#
# Collapse also happens without a large beta, when the decoder is strong enough to model x alone (an
# autoregressive decoder), and partially, unit by unit: a few units carry all the information and the rest
# sit exactly at the prior. The active-unit count (Var_x mu_i > 0.01) shows it.
#
# ## What to look at
#
# - the table: D, R, D + R, active units per beta; D + R smallest near beta = 1; D falling and R
#   rising as beta goes below 1;
# - `12_rate_distortion.png`: the (R, D) points with lines of equal -ELBO, and active units against beta;
# - `12_reconstructions.png`: the same test digits reconstructed at each beta. The less typical digits
#   show beta < 1 best: in the default run the 4 and the 5 of columns 7 and 9 stay a 4 and a 5 at
#   beta 0.1 and turn into a 9 and a 0 from beta 1 up, and every digit blurs as beta grows. At the
#   largest beta every column is the same blob ("spread across inputs" near 0);
# - `12_prior_samples.png`: decoded z ~ N(0, I) per beta: rough at small beta, smoothest near 1-3, then
#   identical blobs after collapse.

# %%
import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.analysis.evaluate import evaluate
from minivae.analysis.figures import image_rows
from minivae.backend import to_numpy
from minivae.nn import sigmoid
from minivae.training.config import TrainConfig
from minivae.training.loop import train

lesson = _common.setup("12_beta_tradeoff")
xp = lesson.xp

# %% [markdown]
# ## The sweep
#
# One MLP VAE (lesson 9's, with a latent of 10) per beta, each trained from scratch with
# `minivae.training.loop.train` on dynamically binarised images. A run of a few hundred steps is far
# from converged, and short runs understate what beta does: the decoder has not yet learned to use the
# extra rate a small beta pays for. So the default mode trains each beta for 300 steps with Adam at
# lr 3e-3, three times lesson 9's step size, which gets these short runs about as far as 600 steps at
# 1e-3 (and is stable for this model at every beta here); `--full` trains 10 epochs on all the images
# at lr 1e-3.

# %%
betas = lesson.pick(
    smoke=[1.0, 30.0],
    default=[0.1, 0.3, 1, 3, 10, 30],
    full=[0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
)
latent = 10
base = dict(arch="mlp", latent=latent, seed=lesson.seed, backend=lesson.backend, tsne_points=0)
base |= dict(binarize="dynamic", val_fraction=0.1)
base |= lesson.pick(  # train_limit / test_limit 0: all the images
    smoke=dict(epochs=1, train_limit=64, test_limit=64, lr=3e-3),
    default=dict(epochs=2, train_limit=19_200, test_limit=1000, lr=3e-3),  # 150 steps of 128 an epoch
    full=dict(epochs=10, train_limit=0, test_limit=0, lr=1e-3),
)

section(f"training the MLP VAE (latent {latent}) at beta = {betas}")
res = {}
for beta in betas:
    model, data, _ = train(
        TrainConfig(**base, beta=float(beta)), lesson.run_dir(f"beta{beta:g}"), progress=False
    )
    res[beta] = (model, evaluate(model, data.x_test, data.y_test, seed=lesson.seed).metrics)
x_test = data.x_test  # binarised once, with the fixed stream every run uses

# %% [markdown]
# ## Rate and distortion
#
# "Spread across inputs" is how much the reconstructions of different test digits differ (the pixels'
# standard deviation across the images, averaged over the pixels): near 0, the decoder draws the same
# image whatever the input.

# %%
section(f"rate and distortion on {len(x_test)} binarised test images (nats per image)")
print("     beta   distortion D   rate R    D + R   active units   spread across inputs")
k = lesson.pick(smoke=4, default=10, full=10)  # images per row
spread = {}
for beta, (model, m) in res.items():
    recon = to_numpy(model.reconstruct(x_test[:k]))[:, 0]
    spread[beta] = float(recon.std(axis=0).mean())  # how much the reconstructions differ between inputs
    print(
        f"   {beta:6g}   {m['recon_nats']:12.1f}  {m['kl_nats']:7.2f}  {m['neg_elbo']:7.1f}"
        f"   {m['active_units']:5d}/{latent}   {spread[beta]:20.3f}"
    )
orig_spread = float(to_numpy(x_test[:k])[:, 0].std(axis=0).mean())
print(f"   (spread of the test digits themselves: {orig_spread:.3f})")
best = min(res, key=lambda b: res[b][1]["neg_elbo"])
print(f"   smallest D + R at beta = {best:g}")
lo_b, hi_b = min(betas), max(betas)
m_lo, m_hi = res[lo_b][1], res[hi_b][1]
if 1 in res and lo_b < 1:
    m_1 = res[1][1]
    expect(f"distortion at beta 1 minus at beta {lo_b:g} (nats)", m_1["recon_nats"] - m_lo["recon_nats"],
           *lesson.pick((-50, 50), (7, 14), (None, None)), ".1f")  # fmt: skip
    expect(f"rate at beta {lo_b:g} minus at beta 1 (nats)", m_lo["kl_nats"] - m_1["kl_nats"],
           *lesson.pick((-50, 50), (15, 28), (None, None)), ".1f")  # fmt: skip
expect(f"rate at beta {lo_b:g} (nats)", m_lo["kl_nats"], *lesson.pick((0, 60), (30, 42), (None, None)), ".1f")
expect(
    f"rate at beta {hi_b:g}: collapse (nats)",
    m_hi["kl_nats"],
    *lesson.pick((0, 5), (0, 0.5), (None, None)),
    ".2f",
)
expect(
    f"active units at beta {hi_b:g}", m_hi["active_units"], *lesson.pick((0, 10), (0, 1), (None, None)), ".0f"
)
expect(
    f"spread of the beta-{hi_b:g} reconstructions across inputs (the decoder ignores z)",
    spread[hi_b],
    *lesson.pick((0, 0.5), (0, 0.03), (None, None)),
    ".3f",
)

# %%
section("figures")
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
rates = np.array([res[b][1]["kl_nats"] for b in betas])
dists = np.array([res[b][1]["recon_nats"] for b in betas])
axes[0].plot(rates, dists, "-o")
for b, r_, d_ in zip(betas, rates, dists):
    axes[0].annotate(f"beta {b:g}", (r_, d_), textcoords="offset points", xytext=(5, 3), fontsize=8)
r_grid = np.linspace(0, max(rates.max(), 1) * 1.1, 50)
for level in np.linspace((rates + dists).min(), (rates + dists).min() + 60, 4):
    axes[0].plot(r_grid, level - r_grid, ":", color="gray", lw=0.8)
axes[0].set_ylim(dists.min() - 10, dists.max() + 10)
axes[0].set_xlabel("rate R = KL (nats per image)")
axes[0].set_ylabel("distortion D = BCE (nats per binary image)")
axes[0].set_title("rate-distortion; dotted: equal -ELBO = D + R", fontsize=9)
axes[0].grid(alpha=0.3)
axes[1].semilogx(betas, [res[b][1]["active_units"] for b in betas], "-o", label="active units")
axes[1].semilogx(betas, rates / latent, "-s", label="KL per unit (nats)")
axes[1].axvline(1, color="gray", ls=":", lw=1)
axes[1].set_xlabel("beta")
axes[1].set_title("units in use against beta", fontsize=9)
axes[1].grid(alpha=0.3)
axes[1].legend(fontsize=8)
lesson.savefig(fig, "rate_distortion", "the rate-distortion curve traced by beta; active units")

rows = {"binarised test digits": to_numpy(x_test[:k])[:, 0]}
rows.update({f"beta {b:g}": to_numpy(res[b][0].reconstruct(x_test[:k]))[:, 0] for b in betas})
_common.saved(
    image_rows(rows, lesson.figure("reconstructions"), "reconstructions (z = mu) at each beta"),
    "each digit kept at small beta, blurred at large beta, one blob after collapse",
)
z = xp.asarray(np.random.default_rng(lesson.seed).standard_normal((k, latent), dtype=np.float32))
rows = {f"beta {b:g}": to_numpy(sigmoid(res[b][0].decode(z)))[:, 0] for b in betas}
_common.saved(
    image_rows(rows, lesson.figure("prior_samples"), "the same z ~ N(0, I) decoded at each beta"),
    "samples from the prior per beta",
)

# %%
lesson.done()
