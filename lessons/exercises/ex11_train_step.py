"""Exercise 11 (lesson 9): the whole VAE training step.

    model: a minivae VAE, with parts model.encoder, model.fc_mu, model.fc_logvar, model.reparam,
           model.decoder (each with forward and backward, as in the earlier exercises)
    x: (N, 1, H, W) images in [0, 1];  eps: (N, latent) the noise;  beta: the KL's weight
    loss = BCE(logits, x) + beta * KL       both "batchmean": summed per image, averaged over N

One step: forward (encoder -> h -> mu, logvar -> z = reparam(mu, logvar, eps) -> decoder -> logits),
the loss and its gradients (minivae.nn.losses.bce_with_logits(logits, x) and kl_normal(mu, logvar),
or your own), then the backward through decoder, reparameterization, both heads and the encoder, and
finally optimizer.step(). Return the loss as a float.

mu and logvar get gradient from two places: the KL term, and the reconstruction term through z.
Write the backward from the parts: model.backward does all of it, and is what this exercise asks you
to write. (The encoder's first layer returns None for dx: nothing before it learns.)

Check: python lessons/exercises/check.py train_step
"""

from __future__ import annotations

from typing import Any

from minivae.nn.losses import bce_with_logits, kl_normal  # noqa: F401  (for your step)


def train_step(model: Any, optimizer: Any, x: Any, eps: Any, beta: float) -> float:
    """One optimisation step on the batch x with noise eps; returns recon + beta * KL (a float)."""
    raise NotImplementedError("exercise: write train_step (forward, loss, backward, optimizer.step)")
