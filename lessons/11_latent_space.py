"""Lesson 11: the latent space. t-SNE of the codes, interpolations, traversals, and choosing a latent size.

The idea
--------
The encoder maps each image x to q(z|x) = N(mu(x), diag(exp(logvar(x)))). The means mu(x) are a
summary of the image in `latent` numbers, and the KL term of the loss (lesson 7) keeps them near the
prior N(0, I), packed together without large empty gaps. So the latent space has structure we can look at:

- t-SNE map: a 2-D embedding of the latent means that keeps near neighbours near. Images of the same
  digit should form clusters, even though the VAE never saw a label. (t-SNE distorts distances and
  cluster sizes; read it for who is next to whom, nothing more.)
- interpolation: decode z(t) = (1 - t) mu(a) + t mu(b) for t from 0 to 1. In a good latent space every
  point along the line decodes to something digit-like, morphing a into b.
- traversal: start from one image's mu and sweep a single unit from -3 to +3 (the prior's +-3 sigma).
  Units the model uses change stroke width, slant or identity; unused units change nothing.
- active units: unit i is "active" when its mean varies across images, Var_x(mu_i(x)) > 0.01 (Burda et
  al. 2015). An inactive unit has collapsed to the prior: the KL term made it cheaper to ignore.

Choosing a latent size
----------------------
Train the same model at several latent sizes and compare on held-out images with a number that is in the
same units for all of them: the negative ELBO at beta = 1 (nats per image), and per-digit reconstruction
quality (MSE, and PSNR = 10 log10(1 / MSE) dB for pixels in [0, 1], the seed study's metric). Beyond some
size the -ELBO stops improving and the extra units stay inactive: the data does not need them. The
smallest size near the best -ELBO is the one to pick. (The seed study compared its sizes with a beta that
changed with the latent size, lesson 7, so its numbers cannot settle the question.)

What to look at
---------------
- the table: -ELBO, its two parts, active units and PSNR against the latent size;
- 11_tsne.png: clusters by digit; 11_interpolation.png and 11_traversals.png: smooth changes;
- 11_manifold_2d.png: the latent-2 model's whole latent plane decoded on a grid;
- 11_psnr_per_digit.png: per-digit PSNR for each latent size, and the seed study's published latent-15
  numbers (from 15 epochs of its convolutional model on 48,000 images, so expect it ahead in default mode).
"""

from __future__ import annotations

import _common
import numpy as np
from _common import expect, section

from minivae.analysis.evaluate import evaluate, seed_reference
from minivae.analysis.figures import image_grid, image_rows, per_digit_bars, tsne_map
from minivae.backend import to_numpy
from minivae.nn import sigmoid
from minivae.training.config import TrainConfig
from minivae.training.loop import train


def decode(model, z: np.ndarray) -> np.ndarray:
    """Images (K, 28, 28) in [0, 1] decoded from latent codes z (K, latent) given on the host."""
    xp = model.xp
    return to_numpy(sigmoid(model.decode(xp.asarray(z.astype(np.float32)))))[:, 0]


def run() -> None:
    lesson = _common.setup(__file__, __doc__)
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
        *lesson.pick((-50, 50), (10, 80), (15, 80)),
        ".1f",
    )
    m_hi = results[hi_l][1].metrics
    idle = hi_l - m_hi["active_units"]
    print(
        f"   active units at latent {hi_l}: {m_hi['active_units']}"
        + (
            f" ({idle} sit at the prior, unused)"
            if idle
            else " (short runs use them all; longer ones let some go)"
        )
    )

    big, ev_big = results[max(k for k in latents if k <= 20)]  # the model for the pictures
    mu, labels = ev_big.mu, ev_big.labels

    section("t-SNE of the latent means")
    n_tsne = min(lesson.pick(100, 1000, 5000), len(mu))
    title = f"t-SNE of {n_tsne} test images' latent means (latent {big.latent}), coloured by digit"
    path = tsne_map(mu[:n_tsne], labels[:n_tsne], lesson.figure("tsne"), seed=lesson.seed, title=title)
    _common.saved(path, "digits cluster without labels")

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
    var = mu.var(axis=0)
    order = np.argsort(var)[::-1]
    sweep = np.linspace(-3, 3, lesson.pick(smoke=3, default=9, full=9))
    rows = {}
    for unit in list(order[: lesson.pick(smoke=1, default=5, full=5)]) + [order[-1]]:
        z = np.repeat(mu[:1], len(sweep), axis=0)
        z[:, unit] = sweep
        rows[f"unit {unit} (variance of mu {var[unit]:.2f})"] = decode(big, z)
    title = f"one unit swept from -3 to 3, latent {big.latent}"
    _common.saved(
        image_rows(rows, lesson.figure("traversals"), title), "the most used units and the least used one"
    )

    if 2 in results:
        section("the latent-2 model's whole plane")
        g = np.linspace(-2.5, 2.5, lesson.pick(smoke=5, default=15, full=20))
        z = np.array([[gx, gy] for gy in g[::-1] for gx in g])
        path = image_grid(decode(results[2][0], z), lesson.figure("manifold_2d"), ncols=len(g),
                          title="latent 2: decoding a grid over [-2.5, 2.5]^2")  # fmt: skip
        _common.saved(path, "every digit class somewhere on one plane")

    section("per-digit reconstruction quality")
    series = {}
    for latent, (_, ev) in results.items():
        by_digit = {r["digit"]: r["psnr_sampled"] for r in ev.per_digit}
        series[f"latent {latent}"] = ([by_digit.get(d, np.nan) for d in range(10)], None)
    series["Keras study (published), conv, latent 15"] = (seed_reference(15), None)
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


if __name__ == "__main__":
    _common.main(run)
