"""Exercise 8 (lesson 6): the reparameterization, forward and backward.

    mu, logvar, eps: (N, latent);  logvar is the log of the variance, eps ~ N(0, I) is given
    z = mu + sigma * eps,   with sigma the standard deviation that logvar encodes

forward(mu, logvar, eps) returns z and caches what backward needs; backward(dz) returns
(dmu, dlogvar) = (dL/dmu, dL/dlogvar), each (N, latent). The noise is an argument so that z is a
deterministic function of (mu, logvar): that is the whole trick, and what lets finite differences check it.

Check: python lessons/exercises/check.py reparam
"""

from __future__ import annotations

from typing import Any


class Reparameterize:
    """z = mu + sigma * eps, sigma from logvar."""

    def forward(self, mu: Any, logvar: Any, eps: Any) -> Any:
        raise NotImplementedError("exercise: write Reparameterize.forward (z, and cache what backward needs)")

    def backward(self, dz: Any) -> tuple[Any, Any]:
        raise NotImplementedError("exercise: write Reparameterize.backward (dmu, dlogvar)")
