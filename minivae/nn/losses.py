"""Losses, each returning its value and its gradients.

Reductions (PyTorch's names):
- "batchmean": sum over every axis but the batch, then mean over the batch. The standard ELBO units:
  nats per image, e.g. BCE summed over 784 pixels plus KL summed over the latents.
- "mean": mean over every element (Keras's binary_crossentropy, the seed study's pixel-mean BCE).
- "sum": sum over everything.
- "none": elementwise, no reduction (the gradient returned is then d(sum of elements)).

The VAE loss comes in two forms:
- "elbo":  BCE_sum + beta * KL_sum, per image, averaged over the batch (the negative ELBO when beta = 1).
- "seed":  mean-over-pixels BCE + beta_seed * mean over latents of -(1 + logvar - mu^2 - exp(logvar)),
  the Keras study's form (beta_seed = 0.0005). Multiplying it by the pixel count P = 784 shows it is
  the "elbo" form with an effective beta of 2 * P * beta_seed / latent: it changes with the latent size.

Either form takes an optional capacity C (Burgess et al. 2018): total = recon + beta * |kl - C|, which
pulls the batch-mean KL towards C instead of towards 0 (beta is then the paper's gamma).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from minivae import kernels, threads
from minivae.backend import get_array_module

REDUCTIONS = ("batchmean", "mean", "sum", "none")
LOSS_FORMS = ("elbo", "seed")
SEED_BETA = 0.0005


def _scale(shape: tuple[int, ...], reduction: str) -> float:
    """d(reduced value)/d(element), the same for every element: 1/N, 1/size or 1."""
    if reduction == "batchmean":
        return 1.0 / shape[0]
    if reduction == "mean":
        return 1.0 / math.prod(shape)
    if reduction in ("sum", "none"):
        return 1.0
    raise ValueError(f"unknown reduction {reduction!r}: choose one of {', '.join(REDUCTIONS)}")


def _reduce(elems: Any, reduction: str) -> tuple[Any, float]:
    """(reduced value, scale) where d(value)/d(elems) = scale for every element."""
    scale = _scale(elems.shape, reduction)
    if reduction == "batchmean":
        return elems.sum() / elems.shape[0], scale
    if reduction == "mean":
        return elems.mean(), scale
    if reduction == "sum":
        return elems.sum(), scale
    return elems, scale  # "none"


def _bce_elements(logits: Any, target: Any) -> tuple[Any, Any, Any]:
    """(elementwise BCE, 1 + exp(-|x|), min(x, 0)):  BCE = max(x, 0) - x t + log(1 + exp(-|x|)).

    log(1 + e) rather than log1p(e): with e = exp(-|x|) in (0, 1], rounding 1 + e costs at most half an
    epsilon of 1 (6e-8 in float32), absolute, in a per-pixel term summed with others of order 1 (tested
    against float64). NumPy has a vectorised float32 log but not log1p on CPUs without AVX-512: 0.23
    against 0.87 ms at 128 x 784 on the 2-core machine, a third of the BCE's time.
    """
    xp = get_array_module(logits)
    pos, neg = xp.maximum(logits, 0), xp.minimum(logits, 0)  # x = pos + neg, |x| = pos - neg
    one_plus_e = xp.exp(neg - pos)  # exp(-|x|), in (0, 1]: never overflows
    one_plus_e += 1.0
    return pos - logits * target + xp.log(one_plus_e), one_plus_e, neg


def bce_value(logits: Any, target: Any) -> Any:
    """Elementwise BCE on logits, the value only (no gradient): for evaluation over many samples."""
    return _bce_elements(logits, target)[0]


def bce_with_logits(logits: Any, target: Any, reduction: str = "batchmean") -> tuple[Any, Any]:
    """Binary cross-entropy of sigmoid(logits) against targets in [0, 1]; (loss, dlogits).

    -[t log s(x) + (1 - t) log(1 - s(x))] = max(x, 0) - x t + log(1 + exp(-|x|)),
    finite for any logit (no log(0), no overflow).   d/dx = s(x) - t, with s(x) from the same 1 + e:
    s(x) = exp(min(x, 0)) / (1 + exp(-|x|)), i.e. 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below.
    The rows are independent, so they split over the BLAS threads' cores (threads.in_parts).
    """
    xp = get_array_module(logits)
    scale = _scale(logits.shape, reduction)
    if kernels.use(xp):  # CuPy: the elementwise lines here and in _bce_elements as one kernel
        elems, grad = kernels.bce_with_logits_elements(logits, target, scale)
        return _reduce(elems, reduction)[0], grad
    elems, grad = xp.empty_like(logits), xp.empty_like(logits)

    def rows(part: slice) -> None:
        elems[part], one_plus_e, neg = _bce_elements(logits[part], target[part])
        s = xp.exp(neg) / one_plus_e  # sigmoid(logits), in [0, 1], never overflowing
        grad[part] = (s - target[part]) * scale

    threads.in_parts(rows, len(logits), logits)
    return _reduce(elems, reduction)[0], grad


def mse(pred: Any, target: Any, reduction: str = "mean") -> tuple[Any, Any]:
    """Squared error (pred - t)^2; (loss, dpred) with dpred = 2 (pred - t) * scale."""
    diff = pred - target
    value, scale = _reduce(diff * diff, reduction)
    return value, 2.0 * diff * scale


def kl_normal(mu: Any, logvar: Any, beta: float = 1.0, reduction: str = "batchmean") -> tuple[Any, Any, Any]:
    """beta * KL( N(mu, exp(logvar)) || N(0, I) ); (loss, dmu, dlogvar).

    Per latent unit: KL = 0.5 (exp(logvar) + mu^2 - 1 - logvar), exactly 0 at mu = 0, logvar = 0.
    d/dmu = beta mu,   d/dlogvar = 0.5 beta (exp(logvar) - 1)   (times the reduction's scale).
    """
    xp = get_array_module(mu)
    if kernels.use(xp):  # CuPy: the elementwise lines below as one kernel
        elems, dmu, dlogvar = kernels.kl_normal_elements(mu, logvar, beta * _scale(mu.shape, reduction))
        return beta * _reduce(elems, reduction)[0], dmu, dlogvar
    var_m1 = xp.exp(logvar) - 1.0  # exp(logvar) - 1: in the value and in d/dlogvar
    elems = 0.5 * (var_m1 + mu * mu - logvar)
    value, scale = _reduce(elems, reduction)
    return beta * value, (beta * scale) * mu, (0.5 * beta * scale) * var_m1


@dataclass
class VAELoss:
    """One evaluation of the VAE loss: the total, its two parts (in the form's own units) and grads."""

    total: Any
    recon: Any
    kl: Any
    dlogits: Any
    dmu: Any
    dlogvar: Any


def effective_beta(form: str, beta: float, latent: int, n_pixels: int = 784) -> float:
    """The beta in standard ELBO units that a loss form's beta amounts to."""
    if form == "elbo":
        return beta
    if form == "seed":
        return 2.0 * n_pixels * beta / latent
    raise ValueError(f"unknown loss form {form!r}: choose one of {', '.join(LOSS_FORMS)}")


def beta_for_effective(form: str, beta_eff: float, latent: int, n_pixels: int = 784) -> float:
    """The inverse of effective_beta: the beta of a loss form that amounts to beta_eff in ELBO units."""
    if form == "elbo":
        return beta_eff
    if form == "seed":
        return beta_eff * latent / (2.0 * n_pixels)
    raise ValueError(f"unknown loss form {form!r}: choose one of {', '.join(LOSS_FORMS)}")


def vae_loss(
    logits: Any,
    x: Any,
    mu: Any,
    logvar: Any,
    beta: float = 1.0,
    form: str = "elbo",
    capacity: float | None = None,
) -> VAELoss:
    """The beta-VAE loss and its gradients with respect to logits, mu and logvar.

    logits, x: (N, ...) with x in [0, 1];  mu, logvar: (N, latent).
    "elbo": recon = BCE summed per image (nats), kl = KL summed per image, total = recon + beta kl,
            all averaged over the batch.
    "seed": recon = BCE averaged over pixels, kl = mean over latents of -(1 + logvar - mu^2 - exp(logvar))
            (= 2 KL / latent), total = recon + beta kl, averaged over the batch.
    capacity C (None: off): total = recon + beta |kl - C|, C in the units of kl (nats for "elbo"); its
            gradient is beta sign(kl - C) dkl, with kl the batch mean (0 exactly at kl = C).
    """
    if form == "elbo":
        recon, dlogits = bce_with_logits(logits, x, "batchmean")
        kl, dmu, dlogvar = kl_normal(mu, logvar, 1.0, "batchmean")
    elif form == "seed":
        recon, dlogits = bce_with_logits(logits, x, "mean")
        # -(1 + logvar - mu^2 - exp(logvar)) = 2 * KL per unit; its mean over (N, latent) is "mean" x 2
        kl, dmu, dlogvar = kl_normal(mu, logvar, 2.0, "mean")
    else:
        raise ValueError(f"unknown loss form {form!r}: choose one of {', '.join(LOSS_FORMS)}")
    if capacity is None:
        return VAELoss(recon + beta * kl, recon, kl, dlogits, beta * dmu, beta * dlogvar)
    xp = get_array_module(mu)
    gap = kl - capacity  # a 0-d array: stays on the device
    weight = beta * xp.sign(gap)  # the slope of beta |kl - C|
    return VAELoss(recon + beta * xp.abs(gap), recon, kl, dlogits, weight * dmu, weight * dlogvar)
