"""Figures (matplotlib, PNG, no screen needed): loss curves, reconstructions, t-SNE, prior samples,
per-digit bars. Each function takes plain NumPy data and a path, and returns the path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # draw to files; no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(histories: dict[str, list[dict[str, Any]]], path: Path, units: str = "") -> Path:
    """Train (solid) and validation (dashed) loss per epoch, one colour per run."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, rows) in enumerate(histories.items()):
        c = f"C{i % 10}"
        ep = [int(r["epoch"]) for r in rows]
        ax.plot(ep, [float(r["train_loss"]) for r in rows], "-o", color=c, ms=3, label=f"{label} train")
        val = [(e, float(r["val_loss"])) for e, r in zip(ep, rows) if r.get("val_loss") not in ("", None)]
        if val:
            ax.plot(*zip(*val), "--s", color=c, ms=3, label=f"{label} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss {units}".strip())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def image_rows(rows: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """A grid: one row per entry (e.g. originals / sampled z / z = mu), images (K, 28, 28) in [0, 1]."""
    k = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), k, figsize=(k * 0.9, len(rows) * 1.05), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(k):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(np.asarray(imgs[c]).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(label, fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def image_grid(images: np.ndarray, path: Path, ncols: int = 8, title: str = "") -> Path:
    """Images (K, 28, 28) in [0, 1] tiled into one picture."""
    k = len(images)
    nrows = int(np.ceil(k / ncols))
    tile = np.ones((nrows * 29 + 1, ncols * 29 + 1))
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        tile[1 + r * 29 : 1 + r * 29 + 28, 1 + c * 29 : 1 + c * 29 + 28] = np.asarray(img).reshape(28, 28)
    fig, ax = plt.subplots(figsize=(ncols * 0.7, nrows * 0.7 + (0.3 if title else 0)))
    ax.imshow(tile, cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def tsne_map(mu: np.ndarray, labels: np.ndarray, path: Path, seed: int = 0, title: str = "") -> Path:
    """t-SNE (scikit-learn) of latent means, coloured by digit."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(mu) - 1) // 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(mu)
    fig, ax = plt.subplots(figsize=(6, 5.2))
    sc = ax.scatter(emb[:, 0], emb[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of the latent means of {len(mu)} test images", fontsize=9)
    return _save(fig, path)


def per_digit_bars(
    series: dict[str, tuple[list[float], list[float] | None]], path: Path, ylabel: str, title: str = ""
) -> Path:
    """Grouped bars per digit: series name -> (values for digits 0-9, optional spread for error bars)."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.8 / max(len(series), 1)
    x = np.arange(10)
    for i, (label, (vals, spread)) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=spread, capsize=2, label=label)
    ax.set_xticks(x)
    ax.set_xlabel("digit")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def rate_distortion(
    curves: dict[str, list[tuple[str, float, float, float, float]]], path: Path, title: str = ""
) -> Path:
    """Rate (x) against distortion (y), nats per image: one line per curve, one labelled point per beta.

    curves: name -> [(point label, rate, distortion, rate spread, distortion spread), ...].
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, (name, pts) in enumerate(curves.items()):
        c = f"C{i % 10}"
        pts = sorted(pts, key=lambda p: p[1])
        r, d = [p[1] for p in pts], [p[2] for p in pts]
        r_sd, d_sd = [p[3] for p in pts], [p[4] for p in pts]
        ax.errorbar(r, d, xerr=r_sd, yerr=d_sd, fmt="-o", color=c, ms=4, capsize=2, label=name)
        for label, x, y, *_ in pts:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=c)
    ax.set_xlabel("rate R = KL(q(z|x) || p(z)) (nats per image)")
    ax.set_ylabel("distortion D = -log p(x|z) (nats per image)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "rate-distortion, test set (lines of constant R + D are the ELBO)", fontsize=9)
    return _save(fig, path)


def by_latent(
    panels: dict[str, dict[str, tuple[list[int], list[float], list[float]]]], path: Path, title: str = ""
) -> Path:
    """Side-by-side panels of a metric against latent size: panel title -> series -> (latents, mean, sd)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        for i, (label, (xs, ys, sd)) in enumerate(series.items()):
            ax.errorbar(xs, ys, yerr=sd, fmt="-o", ms=4, capsize=2, color=f"C{i % 10}", label=label)
        ax.set_xlabel("latent size")
        ax.set_ylabel(name)
        ax.set_xticks(sorted({x for xs, _, _ in series.values() for x in xs}))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def latent_scatter(mu: np.ndarray, labels: np.ndarray, path: Path, title: str = "") -> Path:
    """The latent means themselves (latent size 2), coloured by digit: the Keras example's plot."""
    fig, ax = plt.subplots(figsize=(6, 5.2))
    sc = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("mu_0")
    ax.set_ylabel("mu_1")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.set_title(title or f"latent means of {len(mu)} test images", fontsize=9)
    return _save(fig, path)


def image_mosaic(
    rows: dict[str, np.ndarray], path: Path, title: str = "", col_labels: list[str] | None = None
) -> Path:
    """Rows of images (K, 28, 28) in [0, 1] tiled into one picture, each row labelled on the left.

    One image and one axes however many tiles (image_rows draws one axes per tile: slow for big grids).
    """
    k = max(len(v) for v in rows.values())
    tile = np.ones((len(rows) * 29 + 1, k * 29 + 1))
    for r, imgs in enumerate(rows.values()):
        for c, img in enumerate(imgs):
            tile[1 + r * 29 : 29 + r * 29, 1 + c * 29 : 29 + c * 29] = np.asarray(img).reshape(28, 28)
    fig, ax = plt.subplots(figsize=(k * 0.55 + 1.8, len(rows) * 0.55 + 0.6))
    ax.imshow(tile, cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([15 + 29 * r for r in range(len(rows))], list(rows), fontsize=7)
    if col_labels:
        ax.set_xticks([15 + 29 * c for c in range(len(col_labels))], col_labels, fontsize=7)
    else:
        ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=8)
    return _save(fig, path)
