"""What the latent space holds, in pictures: traversals, interpolations, and at latent size 2 the whole plane.

- traversal (Higgins et al. 2017, the β-VAE paper's figure): start at one test image's mu, sweep a single
  unit over the prior's range (-3 ... 3) while the others stay put, decode. Active units change the digit's
  shape, slant or identity; inactive ones (their posterior collapsed to the prior) change nothing.
- interpolation: decode z(t) = (1 - t) mu(a) + t mu(b), t = 0 ... 1, between two test digits.
- manifold (latent size 2, Kingma & Welling 2014): decode a grid of z at the prior's quantiles, so each
  tile covers an equal share of the prior's mass.
- scatter (latent size 2): the test images' mu themselves, coloured by digit.

The code construction is plain NumPy on the host; only decoding runs on the model's backend.
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from minivae.analysis import figures
from minivae.backend import to_numpy
from minivae.models import VAE
from minivae.nn import sigmoid
from minivae.training import streams


def decode_images(model: VAE, z: np.ndarray) -> np.ndarray:
    """Latent codes z (K, latent) on the host -> images (K, 28, 28) in [0, 1] on the host."""
    dtype = model.fc_mu.params["weight"].dtype
    return to_numpy(sigmoid(model.decode(model.xp.asarray(np.asarray(z, dtype=dtype)))))[:, 0]


def traversal_codes(mu: np.ndarray, units: list[int], values: np.ndarray) -> np.ndarray:
    """(len(units), len(values), latent): row r sets unit units[r] to each value, the rest stay at mu."""
    z = np.broadcast_to(mu, (len(units), len(values), len(mu))).copy()
    for r, u in enumerate(units):
        z[r, :, u] = values
    return z


def interpolation_codes(mu_a: np.ndarray, mu_b: np.ndarray, steps: int = 10) -> np.ndarray:
    """(steps, latent): (1 - t) mu_a + t mu_b for t = 0, ..., 1."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    return (1.0 - t) * mu_a + t * mu_b


def manifold_codes(n: int = 15) -> np.ndarray:
    """(n * n, 2) grid of the prior's quantiles 0.05 ... 0.95 per axis, rows from high z_1 to low (as plotted)."""
    q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])
    z0, z1 = np.meshgrid(q, q[::-1])  # column: z_0 rising to the right; row: z_1 falling downwards
    return np.stack([z0.ravel(), z1.ravel()], axis=1)


def draw(
    model: VAE, x: Any, labels: np.ndarray, mu: np.ndarray, out: Path, seed: int = 0, max_units: int = 10
) -> dict[str, Path]:
    """Write traversals.png, interpolation.png and (latent 2) manifold.png, latent_scatter.png into out.

    x: test images (N, 1, 28, 28) on the model's backend; labels (N,); mu (N, latent) their latent means.
    Traversals show the max_units units with the largest Var(mu) (most informative first).
    """
    figs = {"traversal": traversal_figure(model, x, labels, mu, out, max_units)}
    pairs = interpolation_pairs(labels, seed)
    if not pairs and len(mu) > 1:
        pairs = [(0, 1)]
    if pairs:
        figs["interpolation"] = interpolation_figure(model, labels, mu, pairs, out)
    if mu.shape[1] == 2:
        n = 15
        figs["manifold"] = figures.image_grid(
            decode_images(model, manifold_codes(n)),
            out / "manifold.png",
            ncols=n,
            title="decoded z on a grid of the prior's quantiles 0.05 ... 0.95 (z_0 rightwards, z_1 upwards)",
        )
        figs["scatter"] = figures.latent_scatter(mu, labels, out / "latent_scatter.png")
    return figs


def traversal_figure(
    model: VAE, x: Any, labels: np.ndarray, mu: np.ndarray, out: Path, max_units: int
) -> Path:
    """traversals.png: the first test image, then one row per unit (largest Var(mu) first) swept."""
    unit_var = mu.var(axis=0)
    units = [int(u) for u in np.argsort(-unit_var, kind="stable")[:max_units]]
    values = np.linspace(-3.0, 3.0, 9)
    z = traversal_codes(mu[0], units, values)
    imgs = decode_images(model, z.reshape(-1, mu.shape[1])).reshape(len(units), len(values), 28, 28)
    rows = {"original": to_numpy(x[:1])[:, 0]}
    rows.update({f"z{u} (Var mu {unit_var[u]:.2f})": imgs[r] for r, u in enumerate(units)})
    return figures.image_mosaic(
        rows,
        out / "traversals.png",
        f"a test image of a {labels[0]}: one unit swept, the others at its mu",
        [f"{v:g}" for v in values],
    )


def interpolation_pairs(labels: np.ndarray, seed: int) -> list[tuple[int, int]]:
    """(a, b) test-image indices, one pair per digit pair 1-7, 3-8, 4-9, 0-6 present (seeded draw)."""
    rng = streams.rng(seed, "latent_figures")
    pairs = []
    for a, b in ((1, 7), (3, 8), (4, 9), (0, 6)):
        ia, ib = np.flatnonzero(labels == a), np.flatnonzero(labels == b)
        if len(ia) and len(ib):
            pairs.append((int(rng.choice(ia)), int(rng.choice(ib))))
    return pairs


def interpolation_figure(
    model: VAE, labels: np.ndarray, mu: np.ndarray, pairs: list[tuple[int, int]], out: Path
) -> Path:
    """interpolation.png: a row per (a, b) pair, decoded from mu(a) to mu(b)."""
    paths = {f"{labels[i]} -> {labels[j]}": interpolation_codes(mu[i], mu[j]) for i, j in pairs}
    return figures.image_mosaic(
        {name: decode_images(model, z) for name, z in paths.items()},
        out / "interpolation.png",
        "decoded (1 - t) mu(a) + t mu(b), t = 0 ... 1",
    )
