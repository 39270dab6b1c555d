"""What a trained VAE does on the test set: per-digit MSE and PSNR, the ELBO's parts, live units.

Per-digit metrics follow the seed study: pixels in [0, 1], the MSE pooled over every pixel of every
test image of that digit, PSNR = 10 log10(1 / MSE). Both reconstructions the seed meant to compare:
- "sampled": decode z = mu + sigma * eps, one eps per image (the full stochastic VAE);
- "mean":    decode z = mu (the deterministic path).
(The seed's "full VAE" column printed MSE 0 / PSNR inf because its model returned its own input.)
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from minivae.backend import to_numpy
from minivae.layers import sigmoid
from minivae.losses import vae_loss
from minivae.models import VAE

EVAL_BATCH = 500


@dataclass
class Evaluation:
    """Test-set results: per-digit table, scalar metrics, and arrays the figures need."""

    per_digit: list[dict[str, Any]]
    metrics: dict[str, Any]
    mu: np.ndarray  # (N, latent) latent means of the test images
    labels: np.ndarray  # (N,)


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for pixels in [0, 1]."""
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf


def evaluate(model: VAE, x: Any, labels: np.ndarray, seed: int = 0) -> Evaluation:
    """Run the model over test images x (N, 1, 28, 28) on its backend, in batches.

    The noise for the sampled reconstruction comes from default_rng([seed, 3, batch start]), so the
    numbers are reproducible. The negative ELBO is in nats with beta = 1 (sum BCE + KL per image).
    """
    xp = model.xp
    n, latent = len(x), model.latent
    sq_sampled, sq_mean = np.zeros(n), np.zeros(n)
    mus, sums = [], np.zeros(3)
    alive = None
    for start in range(0, n, EVAL_BATCH):
        xb = x[start : start + EVAL_BATCH]
        k = len(xb)
        eps = np.random.default_rng([seed, 3, start]).standard_normal((k, latent), dtype=xb.dtype)
        logits, mu, logvar = model.forward(xb, eps=xp.asarray(eps))
        out = vae_loss(logits, xb, mu, logvar, beta=1.0, form="elbo")
        sums += k * np.array([float(out.total), float(out.recon), float(out.kl)])
        unit_alive = (model.encoder_output > 0).any(axis=0)
        alive = unit_alive if alive is None else alive | unit_alive
        sq_sampled[start : start + k] = to_numpy(((sigmoid(logits) - xb) ** 2).sum(axis=(1, 2, 3)))
        mean_images = sigmoid(model.decode(mu))
        sq_mean[start : start + k] = to_numpy(((mean_images - xb) ** 2).sum(axis=(1, 2, 3)))
        mus.append(to_numpy(mu))
    mu_all = np.concatenate(mus).astype(np.float64)
    pixels = int(np.prod(x.shape[1:]))
    rows = []
    for d in range(10):
        sel = labels == d
        if not sel.any():
            continue
        mse_s = sq_sampled[sel].sum() / (sel.sum() * pixels)
        mse_m = sq_mean[sel].sum() / (sel.sum() * pixels)
        rows.append({"digit": d, "count": int(sel.sum()), "mse_sampled": mse_s, "psnr_sampled": psnr(mse_s),
                     "mse_mean": mse_m, "psnr_mean": psnr(mse_m)})  # fmt: skip
    neg_elbo, recon, kl = sums / n
    unit_var = mu_all.var(axis=0)  # Cov_x(E_q[z_i]) (Burda et al. 2015): > 0.01 means the unit is used
    metrics = {
        "test_images": n,
        "neg_elbo": neg_elbo, "recon_nats": recon, "kl_nats": kl,
        "mse_sampled": sq_sampled.sum() / (n * pixels), "mse_mean": sq_mean.sum() / (n * pixels),
        "psnr_sampled_digit_mean": float(np.mean([r["psnr_sampled"] for r in rows])),
        "psnr_mean_digit_mean": float(np.mean([r["psnr_mean"] for r in rows])),
        "active_units": int((unit_var > 0.01).sum()), "latent_unit_variance": unit_var.round(5).tolist(),
        "alive_encoder_units": int(to_numpy(alive).sum()), "encoder_units": int(alive.shape[0]),
    }  # fmt: skip
    metrics["psnr_sampled"] = psnr(metrics["mse_sampled"])
    metrics["psnr_mean"] = psnr(metrics["mse_mean"])
    return Evaluation(rows, metrics, mu_all, np.asarray(labels))


def write_per_digit_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def seed_reference(latent: int) -> list[float] | None:
    """The seed study's published per-digit PSNR (sampled z) at this latent size, or None."""
    name = f"metrics_by_digit_latent_dim_{latent}.csv"
    ref = resources.files("minivae") / "seed_data" / name
    if not ref.is_file():
        return None
    with ref.open() as f:
        return [float(r["psnr_decoder"]) for r in csv.DictReader(f)]


def seed_training_log(latent: int) -> list[dict[str, float]]:
    """The seed study's per-epoch losses (its own units) at this latent size."""
    with (resources.files("minivae") / "seed_data" / "training_log.csv").open() as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f) if int(r["latent"]) == latent]
