# %% [markdown]
# # Lesson 11: the latent space. t-SNE of the codes, interpolations, traversals, and choosing a latent size.
#
# ## The idea
#
# The encoder maps each image x to q(z|x) = N(mu(x), diag(exp(logvar(x)))). The means mu(x) are a
# summary of the image in `latent` numbers, and the KL term of the loss (lesson 7) keeps them near the
# prior N(0, I), packed together without large empty gaps. So the latent space has structure we can look
# at:
#
# - t-SNE map: a 2-D embedding of the latent means that keeps near neighbours near. Images of the same
#   digit should form clusters, even though the VAE never saw a label. (t-SNE distorts distances and
#   cluster sizes; read it for who is next to whom, nothing more.)
# - interpolation: decode z(t) = (1 - t) mu(a) + t mu(b) for t from 0 to 1. In a good latent space every
#   point along the line decodes to something digit-like, morphing a into b.
# - traversal: start from one image's mu and sweep a single unit from -3 to +3 (the prior's +-3 sigma).
#   Units the model uses change stroke width, slant or identity; a unit it does not use changes nothing.
# - active units: unit i is "active" when its mean varies across images, Var_x(mu_i(x)) > 0.01 (Burda et
#   al. 2015). An inactive unit has collapsed to the prior: the KL term made it cheaper to ignore.
#
# ## What to look at
#
# - the table: -ELBO, its two parts, active units and PSNR against the latent size;
# - `11_tsne.png`: clusters by digit; `11_interpolation.png` and `11_traversals.png`: smooth changes;
#   in the traversals, how much each row changes (printed beside it): the least used unit's row
#   changes least;
# - `11_manifold_2d.png`: the latent-2 model's whole latent plane decoded on a grid;
# - `11_psnr_per_digit.png`: per-digit PSNR for each latent size, and the seed study's published latent-15
#   numbers, which sit higher for the reasons given under "Per-digit reconstruction quality".
#
# ## Choosing a latent size
#
# Train the same model at several latent sizes and compare on held-out images with a number that is in the
# same units for all of them: the negative ELBO at beta = 1 (nats per image), and per-digit reconstruction
# quality (MSE, and PSNR = 10 log10(1 / MSE) dB for pixels in [0, 1], the seed study's metric). Beyond some
# size the -ELBO stops improving and the extra units carry little: the data does not need them. The
# smallest size near the best -ELBO is the one to pick. (The seed study compared its sizes with a beta that
# changed with the latent size, lesson 7, so its numbers cannot settle the question.)
#
# This lesson trains on grey-level pixels, as the seed study did, so that its PSNR can be set beside the
# study's. Its -ELBO is then BCE against grey levels plus KL: a loss with a floor of 45.5 nats per test
# image (the pixels' own entropy, lesson 9), not a bound on a likelihood. The floor is the same for every
# latent size, so the differences between the rows of the table still compare the models.

# %%
import _common
import numpy as np
from _common import expect, section

from minivae.analysis.evaluate import evaluate, seed_reference
from minivae.analysis.figures import image_grid, image_rows, per_digit_bars, tsne_map
from minivae.backend import to_numpy
from minivae.nn import sigmoid
from minivae.training.config import TrainConfig
from minivae.training.loop import train

lesson = _common.setup("11_latent_space")


def decode(model, z: np.ndarray) -> np.ndarray:
    """Images (K, 28, 28) in [0, 1] decoded from latent codes z (K, latent) given on the host."""
    xp = model.xp
    return to_numpy(sigmoid(model.decode(xp.asarray(z.astype(np.float32)))))[:, 0]


# %%
latents = lesson.pick(smoke=[2, 4], default=[2, 5, 10, 20], full=[2, 5, 10, 15, 20, 32])
base = dict(arch="mlp", seed=lesson.seed, backend=lesson.backend, tsne_points=0)
base |= lesson.pick(  # train_limit / test_limit 0: all the images
    smoke=dict(epochs=1, train_limit=64, test_limit=100, val_fraction=0.25),
    default=dict(epochs=3, train_limit=15_000, test_limit=2000, val_fraction=0.1),
    full=dict(epochs=10, train_limit=0, test_limit=0, val_fraction=0.1),
)

section(f"training the MLP VAE at latent sizes {latents}")
results = {}
for latent in latents:
    model, data, _ = train(
        TrainConfig(**base, latent=latent), lesson.run_dir(f"latent{latent}"), progress=False
    )
    results[latent] = (model, evaluate(model, data.x_test, data.y_test, seed=lesson.seed))
x_test = data.x_test

# %%
section(f"choosing a latent size ({len(x_test)} test images)")
print("   latent   -ELBO   recon     KL   active  PSNR z=mu  PSNR sampled")
for latent, (_, ev) in results.items():
    m = ev.metrics
    print(
        f"   {latent:6d}  {m['neg_elbo']:6.1f}  {m['recon_nats']:6.1f}  {m['kl_nats']:5.1f}  "
        f"{m['active_units']:3d}/{latent:<3d}  {m['psnr_mean']:9.1f}  {m['psnr_sampled']:12.1f}"
    )
elbos = {k: ev.metrics["neg_elbo"] for k, (_, ev) in results.items()}
best = min(elbos, key=elbos.get)
pick = min(k for k in elbos if elbos[k] <= elbos[best] + 2.0)
print(f"   lowest -ELBO at latent {best}; the smallest latent within 2 nats of it: {pick}")
lo_l, hi_l = min(latents), max(latents)
expect(
    f"-ELBO gain from latent {lo_l} to {hi_l} (nats)",
    elbos[lo_l] - elbos[hi_l],
    *lesson.pick((-50, 50), (30, 50), (15, 80)),
    ".1f",
)

# %% [markdown]
# ## Active units, and the units a short run still uses
#
# After a run this short every unit is usually still active: early in training the decoder uses whatever
# each unit carries, and the KL term pushes an unneeded unit to the prior only slowly, over many epochs.
# The units differ in how much they carry, though: below, each unit's KL (nats per image, its share of
# the rate) and Var_x(mu_i). A unit with a KL near 0 is one the model has all but given up.
# (Lesson 12 shows units switching off for good, at large beta.)

# %%
big, ev_big = results[max(k for k in latents if k <= 20)]  # the model for the pictures
mu, labels = ev_big.mu, ev_big.labels
m_big = ev_big.metrics
kl_units = np.array(m_big["kl_per_unit_nats"])
var = np.array(m_big["latent_unit_variance"])
order = np.argsort(var)[::-1]  # most used first
print(f"   latent {big.latent}: {m_big['active_units']} of {big.latent} units active")
print("   (unit: Var(mu), KL in nats), most used first:")
cells = [f"{u}: {var[u]:.2f}, {kl_units[u]:.2f}" for u in order]
for i in range(0, len(cells), 5):
    print("      " + ";  ".join(cells[i : i + 5]))
expect(
    f"KL of the least used unit / KL of the most used (latent {big.latent})",
    kl_units[order[-1]] / kl_units[order[0]],
    *lesson.pick((0, 1), (0.02, 0.3), (None, None)),
    ".3f",
)

# %%
section("t-SNE of the latent means")
n_tsne = min(lesson.pick(100, 1000, 5000), len(mu))
title = f"t-SNE of {n_tsne} test images' latent means (latent {big.latent}), coloured by digit"
path = tsne_map(mu[:n_tsne], labels[:n_tsne], lesson.figure("tsne"), seed=lesson.seed, title=title)
_common.saved(path, "digits cluster without labels")

# %%
section("interpolations and traversals")
rows = {}
pairs = ((3, 8), (1, 7), (4, 9), (0, 6))
for a, b in pairs[: lesson.pick(smoke=1, default=4, full=4)]:
    ia, ib = np.flatnonzero(labels == a), np.flatnonzero(labels == b)
    if len(ia) and len(ib):
        t = np.linspace(0, 1, lesson.pick(smoke=4, default=10, full=10))[:, None]
        rows[f"{a} -> {b}"] = decode(big, (1 - t) * mu[ia[0]] + t * mu[ib[0]])
_common.saved(
    image_rows(rows, lesson.figure("interpolation"), "decoding (1 - t) mu(a) + t mu(b)"),
    "straight lines between two digits' codes",
)
sweep = np.linspace(-3, 3, lesson.pick(smoke=3, default=9, full=9))
rows = {}
for unit in list(order[: lesson.pick(smoke=1, default=5, full=5)]) + [order[-1]]:
    z = np.repeat(mu[:1], len(sweep), axis=0)
    z[:, unit] = sweep
    images = decode(big, z)
    change = float(np.abs(images[-1] - images[0]).mean())  # mean |pixel change| from -3 to +3
    rows[f"unit {unit}: Var(mu) {var[unit]:.2f}, KL {kl_units[unit]:.2f}, change {change:.3f}"] = images
    print(f"   unit {unit:2d}: Var(mu) {var[unit]:.3f}, mean |pixel change| from -3 to +3: {change:.3f}")
title = f"one unit swept from -3 to 3, latent {big.latent}"
_common.saved(
    image_rows(rows, lesson.figure("traversals"), title), "the most used units and the least used one"
)

# %%
if 2 in results:
    section("the latent-2 model's whole plane")
    g = np.linspace(-2.5, 2.5, lesson.pick(smoke=5, default=15, full=20))
    z = np.array([[gx, gy] for gy in g[::-1] for gx in g])
    path = image_grid(decode(results[2][0], z), lesson.figure("manifold_2d"), ncols=len(g),
                      title="latent 2: decoding a grid over [-2.5, 2.5]^2")  # fmt: skip
    _common.saved(path, "every digit class somewhere on one plane")

# %% [markdown]
# ## Per-digit reconstruction quality
#
# PSNR per digit, from a sampled z, for each latent size, beside the seed study's published numbers for
# its convolutional model at latent 15. Three things set the study apart, and training longer is only one
# of them. Its loss form gave an effective beta of 0.052 (lesson 7): its model bought reconstruction with
# a large KL, a point far along the rate-distortion curve (lesson 12) from these beta = 1 models, whose
# KL stays between about 5 and 20 nats; lesson 12 shows the distortion falling as beta goes below 1. Its
# model is convolutional (lesson 10). And it trained 15 epochs on 48,000 images.

# %%
section("per-digit reconstruction quality")
series = {}
for latent, (_, ev) in results.items():
    by_digit = {r["digit"]: r["psnr_sampled"] for r in ev.per_digit}
    series[f"latent {latent}"] = ([by_digit.get(d, np.nan) for d in range(10)], None)
series["Keras study (published), conv, latent 15, effective beta 0.052"] = (seed_reference(15), None)
path = per_digit_bars(series, lesson.figure("psnr_per_digit"), "PSNR (dB), sampled z")
_common.saved(path, "per-digit PSNR by latent size; 1s are easiest, 8s and 2s hardest")
r = {row["digit"]: row["psnr_sampled"] for row in ev_big.per_digit}
if 1 in r and 8 in r:
    expect(
        f"PSNR of 1s minus PSNR of 8s, latent {big.latent} (thin strokes are easy)",
        r[1] - r[8],
        0,
        10,
        ".1f",
    )

# %%
lesson.done()
