"""The batched forward pass over a whole data set, shared by validation (training) and evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from minivae.models import VAE
from minivae.training import streams

EVAL_BATCH = 500  # images per forward pass: bounds the memory, not the numbers


def forward_batches(
    model: VAE, x: Any, seed: int, stream: str, batch: int = EVAL_BATCH
) -> Iterator[tuple[int, Any, Any, Any, Any]]:
    """Yield (start, xb, logits, mu, logvar) for x (N, 1, 28, 28) in batches of `batch` images.

    One z per image: the eps of the batch starting at image `start` comes from streams.rng(seed, stream,
    start), so the numbers do not depend on anything but the seed and the images.
    """
    xp = model.xp
    for start in range(0, len(x), batch):
        xb = x[start : start + batch]  # (k, 1, 28, 28)
        eps = streams.rng(seed, stream, start).standard_normal((len(xb), model.latent), dtype=xb.dtype)
        logits, mu, logvar = model.forward(xb, eps=xp.asarray(eps))  # (k, 1, 28, 28), (k, latent) x 2
        yield start, xb, logits, mu, logvar
