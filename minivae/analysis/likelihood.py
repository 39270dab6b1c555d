"""log p(x) by importance sampling: the IWAE bound (Burda et al. 2015).

With z_1 ... z_k drawn from the encoder's q(z|x) and the importance weights

    w_s = p(x | z_s) p(z_s) / q(z_s | x),
    log w_s = log p(x|z_s) + log N(z_s; 0, I) - log N(z_s; mu, exp(logvar)),

the bound L_k = log (1/k) sum_s w_s satisfies  ELBO = E[L_1] <= E[L_k] <= E[L_k+1] <= log p(x),
and E[L_k] -> log p(x) as k grows. log p(x|z) = -BCE summed over the pixels (a Bernoulli decoder; for
grey-level pixels it is the same number the ELBO uses, though not a normalised density). Writing
z = mu + sigma eps, the log-density ratio needs no sigma:

    log N(z; 0, I) - log N(z; mu, sigma^2) = -1/2 sum_j (z_j^2 - eps_j^2 - logvar_j).

The sum over s is a log-sum-exp in float64 on the host. Each image's noise comes from its own stream,
default_rng([seed, 6, image index]), drawn in sample order: L_10 uses the first 10 samples of L_5000,
and the numbers do not depend on how the work is chunked. The decoder runs on (images x samples) rows
at a time, at most max_rows, so memory stays bounded for any k; on CuPy the rows run on the GPU.
max_rows comes from rows_that_fit: the bytes one decoded row holds (counted from the decoder's widths,
as minivae.training.memory counts a training step) against a share of the available memory.

Burda et al. report k = 5,000 on the 10,000 test images, 5e7 decoder rows: `minivae evaluate RUN
--iwae-k 5000 --test-limit 0` runs it, with a progress bar over the images and tqdm's time-left estimate.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from tqdm import tqdm

from minivae.backend import to_numpy
from minivae.models import VAE
from minivae.nn import Linear
from minivae.nn.losses import bce_value
from minivae.training import streams
from minivae.training.memory import device_available, host_available

MAX_ROWS = 8192  # decoded rows per block at most: past this, bigger blocks are no faster on a CPU
MEMORY_SHARE = 0.25  # of the available memory, for the blocks' arrays


def log_importance_weights(model: VAE, x: Any, eps: Any, mu: Any = None, logvar: Any = None) -> Any:
    """log w for S samples of each of N images; (N, S) on the model's backend.

    x: (N, 1, 28, 28);  eps: (S, N, latent) standard normal;  mu, logvar: (N, latent), encoded if not given.
    """
    xp = model.xp
    if mu is None:
        mu, logvar = model.encode(x)
    s, n, latent = eps.shape
    z = mu[None] + xp.exp(0.5 * logvar)[None] * eps  # (S, N, latent)
    logits = model.decode(z.reshape(s * n, latent))  # (S*N, 1, 28, 28)
    target = xp.broadcast_to(x[None], (s, *x.shape)).reshape(logits.shape)
    bce = bce_value(logits, target)
    log_px_z = -bce.reshape(s, n, -1).sum(axis=2)  # (S, N)
    log_ratio = -0.5 * (z * z - eps * eps - logvar[None]).sum(axis=2)  # log p(z) - log q(z|x): (S, N)
    return (log_px_z + log_ratio).T


def image_noise(seed: int, index: int, start: int, count: int, latent: int, dtype: Any) -> np.ndarray:
    """Samples [start, start + count) of image `index`'s noise stream: (count, latent) on the host."""
    rng = streams.rng(seed, "iwae", index)
    if start:
        rng.standard_normal((start, latent), dtype=dtype)  # skip: the stream is consumed in order
    return rng.standard_normal((count, latent), dtype=dtype)


def logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """log sum exp(a) along axis, stable: m + log sum exp(a - m) with m the maximum."""
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def row_bytes(model: VAE) -> int:
    """Bytes one decoded row (one sample of one image) holds at once in log_importance_weights: the
    decoder's outputs (each Linear's and its activation's), the logits, the broadcast target, the BCE's
    three temporaries and its result, and z, eps and their products; float64 for the host's log w."""
    widths = [layer.out_features for _, layer in model.decoder.children() if isinstance(layer, Linear)]
    pixels = int(np.prod(model.input_shape))
    numbers = 2 * sum(widths) + 5 * pixels + 4 * model.latent
    return numbers * np.dtype(model.fc_mu.params["weight"].dtype).itemsize + 8


def rows_that_fit(model: VAE, available: int | None = None) -> int:
    """How many decoded rows a block may hold: MEMORY_SHARE of the available memory (the device's on
    CuPy, else the host's; `available` for tests), at most MAX_ROWS, at least 1; MAX_ROWS when unknown."""
    if available is None:
        available = host_available() if model.xp is np else device_available()
    if available is None:
        return MAX_ROWS
    return int(max(1, min(MAX_ROWS, MEMORY_SHARE * available // row_bytes(model))))


def iwae_bound(
    model: VAE, x: Any, k: int, seed: int = 0, max_rows: int | None = None, progress: bool = False
) -> np.ndarray:
    """L_k = log (1/k) sum_s w_s for each image of x (N, 1, 28, 28); (N,) float64 on the host, in nats.

    k = 1 is the one-sample ELBO estimate with a Monte Carlo KL; the mean of L_k over images is a lower
    bound on the mean log p(x) that tightens as k grows. Work is split into blocks of at most max_rows
    decoded images (images x samples), so memory does not grow with k (None: rows_that_fit). progress: a
    bar over the images, with tqdm's estimate of the time left.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    max_rows = rows_that_fit(model) if max_rows is None else max_rows
    xp, latent = model.xp, model.latent
    dtype = np.dtype(model.fc_mu.params["weight"].dtype)
    batch = max(1, min(500, max_rows // k))  # images per block
    chunk = max(1, min(k, max_rows // batch))  # samples per block
    out = np.empty(len(x))
    bar = tqdm(total=len(x), desc=f"IWAE k={k}", unit="image", disable=not progress, file=sys.stderr)
    for start in range(0, len(x), batch):
        xb = x[start : start + batch]
        model.check_input(xb)
        mu, logvar = model.encode(xb)
        n = len(xb)
        # one generator per image, consumed in sample order across the chunks
        rngs = [streams.rng(seed, "iwae", start + i) for i in range(n)]
        logw = np.empty((n, k))
        for s0 in range(0, k, chunk):
            s = min(chunk, k - s0)
            eps = np.stack(
                [r.standard_normal((s, latent), dtype=dtype) for r in rngs], axis=1
            )  # (s, n, latent)
            logw[:, s0 : s0 + s] = to_numpy(log_importance_weights(model, xb, xp.asarray(eps), mu, logvar))
        out[start : start + n] = logsumexp(logw, axis=1) - math.log(k)
        bar.update(n)
    bar.close()
    return out
