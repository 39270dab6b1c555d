"""What a trained VAE does on the test set: per-digit MSE and PSNR, the ELBO's parts, live units.

Per-digit metrics follow the seed study: pixels in [0, 1], the MSE pooled over every pixel of every
test image of that digit, PSNR = 10 log10(1 / MSE). Both reconstructions the seed meant to compare:
- "sampled": decode z = mu + sigma * eps, one eps per image (the full stochastic VAE);
- "mean":    decode z = mu (the deterministic path).
(The seed's "full VAE" column printed MSE 0 / PSNR inf because its model returned its own input.)

The ELBO's two parts, in nats per image (Alemi et al. 2018's names): the rate R = mean KL(q(z|x) || p(z))
and the distortion D = mean -log p(x|z) (one z per image), with ELBO = -(R + D). Active units (Burda et
al. 2015): unit i is active when Cov_x(E_q[z_i]) = Var_x(mu_i(x)) > 0.01. Optionally the IWAE estimate
of log p(x) with k importance samples (minivae.analysis.likelihood).
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
from minivae.models import VAE
from minivae.nn import sigmoid
from minivae.nn.losses import kl_normal, vae_loss
from minivae.training.batches import forward_batches

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015


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


def active_units(mu: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> tuple[int, np.ndarray]:
    """(count, per-unit values): Var over images of each latent mean; mu (N, latent) -> (latent,).

    A unit whose mean does not change with the image carries no information about it (its posterior
    has collapsed onto something data-independent, usually the prior); Burda et al. call it inactive.
    """
    unit_var = np.asarray(mu, dtype=np.float64).var(axis=0)  # Cov_x(E_q[z_i]), the diagonal
    return int((unit_var > threshold).sum()), unit_var


@dataclass
class _Sums:
    """One pass over the test set: per-image squared errors, and sums over the images."""

    sq_sampled: np.ndarray  # (N,) squared error summed over the pixels, decoding sampled z
    sq_mean: np.ndarray  # (N,) the same, decoding z = mu
    loss: np.ndarray  # (3,) sums over images of the negative ELBO, its recon and its KL (nats)
    kl_units: np.ndarray  # (latent,) KL of each latent unit, summed over images
    alive: np.ndarray  # (encoder units,) True where the unit's output is > 0 for some image
    mu: np.ndarray  # (N, latent) latent means, float64


def _sum_over_test_set(model: VAE, x: Any, seed: int) -> _Sums:
    """Run the model over x (N, 1, 28, 28) in batches (forward_batches) and add up what evaluate reports."""
    n = len(x)
    sq_sampled, sq_mean = np.zeros(n), np.zeros(n)
    mus, loss = [], np.zeros(3)
    kl_units = np.zeros(model.latent)
    alive = None
    for start, xb, logits, mu, logvar in forward_batches(model, x, seed, "test_noise"):
        k = len(xb)
        out = vae_loss(logits, xb, mu, logvar, beta=1.0, form="elbo")
        loss += k * np.array([float(out.total), float(out.recon), float(out.kl)])
        kl_elems = kl_normal(mu, logvar, reduction="none")[0]  # (k, latent): KL of each unit, each image
        kl_units += to_numpy(kl_elems).sum(axis=0)
        unit_alive = (model.encoder_output > 0).any(axis=0)
        alive = unit_alive if alive is None else alive | unit_alive
        sq_sampled[start : start + k] = to_numpy(((sigmoid(logits) - xb) ** 2).sum(axis=(1, 2, 3)))
        mean_images = sigmoid(model.decode(mu))
        sq_mean[start : start + k] = to_numpy(((mean_images - xb) ** 2).sum(axis=(1, 2, 3)))
        mus.append(to_numpy(mu))
    mu_all = np.concatenate(mus).astype(np.float64)
    return _Sums(sq_sampled, sq_mean, loss, kl_units, to_numpy(alive), mu_all)


def per_digit_rows(
    labels: np.ndarray, sq_sampled: np.ndarray, sq_mean: np.ndarray, pixels: int
) -> list[dict[str, Any]]:
    """One row per digit present: its image count, and MSE and PSNR pooled over its images and pixels.

    sq_sampled, sq_mean: (N,) per-image squared errors summed over the `pixels` pixels.
    """
    rows = []
    for d in range(10):
        sel = labels == d
        if not sel.any():
            continue
        mse_s = sq_sampled[sel].sum() / (sel.sum() * pixels)
        mse_m = sq_mean[sel].sum() / (sel.sum() * pixels)
        rows.append(
            {
                "digit": d,
                "count": int(sel.sum()),
                "mse_sampled": mse_s,
                "psnr_sampled": psnr(mse_s),
                "mse_mean": mse_m,
                "psnr_mean": psnr(mse_m),
            }
        )
    return rows


def _metrics(s: _Sums, rows: list[dict[str, Any]], pixels: int) -> dict[str, Any]:
    """The scalar metrics (metrics.json) from the sums and the per-digit rows."""
    n = len(s.sq_sampled)
    neg_elbo, recon, kl = s.loss / n
    n_active, unit_var = active_units(s.mu)
    metrics = {
        "test_images": n,
        "neg_elbo": neg_elbo, "recon_nats": recon, "kl_nats": kl,
        "rate_nats": kl, "distortion_nats": recon, "elbo_nats": -(recon + kl),
        "kl_per_unit_nats": (s.kl_units / n).round(5).tolist(),
        "mse_sampled": s.sq_sampled.sum() / (n * pixels), "mse_mean": s.sq_mean.sum() / (n * pixels),
        "psnr_sampled_digit_mean": float(np.mean([r["psnr_sampled"] for r in rows])),
        "psnr_mean_digit_mean": float(np.mean([r["psnr_mean"] for r in rows])),
        "active_units": n_active, "latent_unit_variance": unit_var.round(5).tolist(),
        "active_unit_mask": (unit_var > ACTIVE_THRESHOLD).tolist(),
        "alive_encoder_units": int(s.alive.sum()), "encoder_units": int(s.alive.shape[0]),
    }  # fmt: skip
    # psnr_*_digit_mean (above): the mean over the digits of each digit's PSNR, the number the terminal,
    # the README and report.md's headline show; psnr_* (below): the PSNR of the MSE pooled over all images.
    metrics["psnr_sampled"] = psnr(metrics["mse_sampled"])
    metrics["psnr_mean"] = psnr(metrics["mse_mean"])
    return metrics


def _iwae_metrics(model: VAE, x: Any, k: int, seed: int, progress: bool) -> dict[str, Any]:
    """The IWAE estimate of log p(x), k samples per image: its mean over images and its standard error."""
    from minivae.analysis.likelihood import iwae_bound

    n = len(x)
    log_px = iwae_bound(model, x, k, seed=seed, progress=progress)
    return {
        "iwae_k": k,
        "iwae_log_px": float(log_px.mean()),
        "iwae_nll": float(-log_px.mean()),
        "iwae_stderr": float(log_px.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
    }


def evaluate(
    model: VAE, x: Any, labels: np.ndarray, seed: int = 0, iwae_k: int = 0, progress: bool = False
) -> Evaluation:
    """Run the model over test images x (N, 1, 28, 28) on its backend, in batches.

    The noise for the sampled reconstruction comes from default_rng([seed, 3, batch start]), so the
    numbers are reproducible. The negative ELBO is in nats with beta = 1 (sum BCE + KL per image) =
    distortion + rate. iwae_k > 0 adds the IWAE estimate of log p(x) with that many samples per image.
    """
    sums = _sum_over_test_set(model, x, seed)
    pixels = int(np.prod(x.shape[1:]))
    rows = per_digit_rows(labels, sums.sq_sampled, sums.sq_mean, pixels)
    metrics = _metrics(sums, rows, pixels)
    if iwae_k:
        metrics.update(_iwae_metrics(model, x, iwae_k, seed, progress))
    return Evaluation(rows, metrics, sums.mu, np.asarray(labels))


def write_per_digit_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def seed_reference(latent: int) -> list[float] | None:
    """The per-digit PSNR (sampled z) that the Keras study minivae reproduces (the seed) published for its
    conv model at this latent size, or None. Reports call it "Keras study (published)"."""
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
