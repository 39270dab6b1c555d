"""Exercise 9 (lesson 7): the closed-form KL to N(0, I), and its two gradients.

    mu, logvar: (N, latent), the encoder's Gaussian q(z|x) = N(mu, exp(logvar)) for each image
    KL( N(mu, exp(logvar)) || N(0, I) ), per latent unit, from the two Gaussian densities:
        0.5 * (exp(logvar) + mu^2 - 1 - logvar)
    loss = that summed over the latent units, averaged over the N images ("batchmean")

Return (loss, dmu, dlogvar): dmu = dloss/dmu and dlogvar = dloss/dlogvar, each (N, latent).
Derive them by hand first (each is one short expression), then remember the 1/N.

Check: python lessons/exercises/check.py kl
"""

from __future__ import annotations

from typing import Any


def kl_normal(mu: Any, logvar: Any) -> tuple[Any, Any, Any]:
    """(loss, dmu, dlogvar) of the KL to N(0, I), summed over latents, averaged over the batch."""
    raise NotImplementedError("exercise: write kl_normal (the KL, dmu and dlogvar)")
