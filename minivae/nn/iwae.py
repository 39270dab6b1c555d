"""The importance-weighted bound (Burda, Grosse & Salakhutdinov 2015) and its gradient, by hand.

For one image x, k noises eps_1 ... eps_k ~ N(0, I) and z_i = mu + sigma * eps_i (sigma = exp(logvar / 2)),
the log importance weights and the bound are

    log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)
            = -BCE(logits_i, x) - 1/2 sum_j (z_ij^2 - eps_ij^2 - logvar_j)            (the 2 pi's cancel)
    L_k     = log (1/k) sum_i w_i = logsumexp_i(log w_i) - log k.

The loss is -L_k averaged over the N images of the batch. k = 1 is the one-sample ELBO with a Monte
Carlo KL: log q - log p(z) at z_1 in place of the analytic KL(q || p) that minivae.nn.losses uses.

The gradient. d logsumexp_i(a_i) / d a_i = exp(a_i) / sum_j exp(a_j) = w~_i, the softmax of the log
weights (the normalised importance weights, summing to 1), so for any parameter t

    dL_k/dt = sum_i w~_i  d log w_i / dt.

Each log w_i is a function of the parameters through three paths:

1. log p(x|z_i), through the decoder: d(-BCE)/dlogits = x - sigmoid(logits) (losses.bce_with_logits),
   then back through the decoder to z_i, and on through z_i = mu + sigma eps_i (below).
2. log p(z_i) = -1/2 |z_i|^2 + const: d/dz_i = -z_i, on through z_i as well.
3. log q(z_i|x) = -1/2 sum_j ((z_ij - mu_j)^2 / sigma_j^2 + logvar_j) + const depends on mu and logvar
   twice: through z_i (the path derivative) and directly (the score of q). With eps fixed:
       mu:     path  d log q/dz_ij * dz_ij/dmu_j = -(z_ij - mu_j)/sigma_j^2 * 1       = -eps_ij / sigma_j
               score d log q/dmu_j               = +(z_ij - mu_j)/sigma_j^2          = +eps_ij / sigma_j
               total 0
       logvar: path  -(z_ij - mu_j)/sigma_j^2 * dz_ij/dlogvar_j = -(eps_ij/sigma_j) * sigma_j eps_ij / 2
                                                                = -eps_ij^2 / 2
               score -1/2 + (z_ij - mu_j)^2 / (2 sigma_j^2)      = -1/2 + eps_ij^2 / 2
               total -1/2
   which is what differentiating the second line of log w_i with eps held fixed gives: log q(z_i|x) =
   -1/2 |eps_i|^2 - 1/2 sum_j logvar_j + const does not move with mu, and falls by 1/2 per unit of logvar.

So, with c_i = w~_i / N the weight of sample i of an image in the batch loss -(1/N) sum_n L_k(x_n):

    dloss/dlogits_i = c_i (sigmoid(logits_i) - x)             (k N, 1, 28, 28): into the decoder
    dloss/dz_i     += c_i z_i                                 (k, N, latent): the prior's pull, added to
                                                              the decoder's dz (VAE.backward's dz)
    dloss/dlogvar  += -1/2 sum_i c_i = -1/(2N)                (N, latent): log q's direct term
    then z_i -> (mu, logvar) by the reparameterization: dmu += sum_i dz_i,
    dlogvar += sum_i dz_i * sigma eps_i / 2 (VAE.backward sums Reparameterize's gradients over the samples).

Stability in float32: the log weights are sums of 784 BCE terms, hundreds of nats, so exp(log w) under-
or overflows; the bound is m + log sum_i exp(log w_i - m) with m = max_i log w_i, and the softmax
exp(log w_i - m) / sum_j exp(log w_j - m) has every term in [0, 1] and the largest exactly 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from minivae.backend import get_array_module
from minivae.nn.losses import bce_with_logits

OBJECTIVES = ("elbo", "iwae")


@dataclass
class IWAELoss:
    """One evaluation of the IWAE loss -L_k, its parts and its gradients.

    total: -L_k averaged over the batch (nats). recon and kl: the k-sample ELBO's parts averaged over the
    samples and the batch, mean -log p(x|z_i) and mean log q(z_i|x) - log p(z_i), so that recon + kl is
    the ELBO estimate and recon + kl - total >= 0 is how much tighter the bound is.
    dlogits (k N, ...), dmu and dlogvar (N, latent), dz (k, N, latent): the gradients of total.
    weights (k, N): the normalised importance weights w~.
    """

    total: Any
    recon: Any
    kl: Any
    dlogits: Any
    dmu: Any
    dlogvar: Any
    dz: Any
    weights: Any


def softmax0(a: Any) -> tuple[Any, Any]:
    """(softmax over axis 0, logsumexp over axis 0) of a (k, N), stable: both through m = max over axis 0."""
    xp = get_array_module(a)
    m = a.max(axis=0)  # (N,)
    e = xp.exp(a - m)  # (k, N), in [0, 1]
    s = e.sum(axis=0)  # (N,), in [1, k]
    return e / s, m + xp.log(s)


def iwae_loss(logits: Any, x: Any, mu: Any, logvar: Any, eps: Any) -> IWAELoss:
    """-L_k averaged over the batch, and its gradients (see the module docstring for the derivation).

    logits: (k N, 1, 28, 28) decoded from z = mu + exp(logvar / 2) eps, sample-major (VAE.forward with
    eps (k, N, latent)); x: (N, 1, 28, 28) in [0, 1]; mu, logvar: (N, latent); eps: (k, N, latent).
    """
    xp = get_array_module(mu)
    k, n, _ = eps.shape
    z = mu + xp.exp(0.5 * logvar) * eps  # (k, N, latent), as the model drew it
    target = xp.broadcast_to(x[None], (k, *x.shape)).reshape(logits.shape)
    bce, dbce = bce_with_logits(logits, target, "none")  # elementwise, dbce = sigmoid(logits) - x
    neg_log_px_z = bce.reshape(k, n, -1).sum(axis=2)  # (k, N)
    log_q_over_p = 0.5 * (z * z - eps * eps - logvar).sum(axis=2)  # log q(z|x) - log p(z): (k, N)
    log_w = -neg_log_px_z - log_q_over_p  # (k, N)
    w, lse = softmax0(log_w)
    total = -(lse - math.log(k)).mean()
    c = w / n  # (k, N): d total / d(-log w_i) of each sample
    dlogits = (c.reshape(k, n, 1) * dbce.reshape(k, n, -1)).reshape(logits.shape)
    dz = c[..., None] * z  # (k, N, latent): -log p(z) = |z|^2 / 2 + const
    dlogvar = xp.broadcast_to(-0.5 * c.sum(axis=0)[:, None], mu.shape).astype(mu.dtype)  # log q's -1/2
    recon, kl = neg_log_px_z.mean(), log_q_over_p.mean()
    return IWAELoss(total, recon, kl, dlogits, xp.zeros_like(mu), dlogvar, dz, w)
