"""The reparameterization trick.

Sampling z ~ N(mu, sigma^2) directly has no gradient with respect to mu or sigma. Writing the sample as
a deterministic function of the parameters and an independent noise eps ~ N(0, I),

    z = mu + exp(0.5 * logvar) * eps,

moves the randomness into eps, and then
    dz/dmu = 1,      dz/dlogvar = 0.5 * exp(0.5 * logvar) * eps = 0.5 * (z - mu).
"""

from __future__ import annotations

from typing import Any

from minivae.backend import get_array_module


class Reparameterize:
    """z = mu + exp(0.5 logvar) * eps.   mu, logvar: (N, latent) -> z: (N, latent).   Caches std * eps.

    Pass eps to fix the noise (finite differences, evaluation); otherwise it is drawn from `rng`
    (a numpy or cupy Generator on the arrays' backend). eps=0 gives z = mu, the deterministic path.
    An eps array is cast to mu's dtype, so float64 noise keeps a float32 model in float32.
    """

    def forward(self, mu: Any, logvar: Any, eps: Any = None, rng: Any = None) -> Any:
        xp = get_array_module(mu)
        if eps is None:
            if rng is None:
                raise TypeError(
                    "Reparameterize.forward(mu, logvar) needs the noise: eps, an array shaped like mu "
                    "(0 for z = mu), or rng, a generator to draw it (minivae.backend.default_rng(seed, xp))"
                )
            eps = rng.standard_normal(mu.shape, dtype=mu.dtype)
        elif hasattr(eps, "astype"):
            eps = eps.astype(mu.dtype, copy=False)
        self.noise = xp.exp(0.5 * logvar) * eps  # std * eps = z - mu
        return mu + self.noise

    def backward(self, dz: Any) -> tuple[Any, Any]:
        """dz: (N, latent) -> (dmu, dlogvar):  dmu = dz,  dlogvar = dz * 0.5 std eps = 0.5 dz (z - mu)."""
        return dz, (0.5 * dz) * self.noise
