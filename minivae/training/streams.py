"""Every random stream of a run, in one table.

Randomness is counter-based: each draw comes from its own generator, default_rng([seed, stream, *counters]),
so the random state of a run is just its counters (epoch, step, image index) and a checkpoint that
stores them resumes bit for bit. Weights are initialised from default_rng(seed) (minivae.models).
"""

from __future__ import annotations

import numpy as np

STREAMS = {  # fmt: skip
    "shuffle": 0,  # [seed, 0, epoch]: the order of the training images in epoch `epoch`
    "step_noise": 1,  # [seed, 1, step]: eps of training step `step`
    "val_noise": 2,  # [seed, 2, start]: eps of the validation batch starting at image `start`
    "test_noise": 3,  # [seed, 3, start]: eps of the test batch starting at image `start` (evaluate)
    "recon_figure": 4,  # [seed, 4]: eps of the reconstructions figure
    "prior_figure": 5,  # [seed, 5]: z ~ N(0, I) of the prior-samples figure
    "iwae": 6,  # [seed, 6, i]: the importance samples of test image i
    "latent_figures": 7,  # [seed, 7]: the latent figures' random choices
    "binarize": 8,  # [seed, 8, step]: step `step`'s binary images under --binarize dynamic
}

# the binarised validation and test sets: one fixed draw, the same images for every run and seed
FIXED_BINARIZE = {"val": [9, 0], "test": [9, 1]}


def rng(seed: int, stream: str, *counters: int) -> np.random.Generator:
    """The generator of `stream` (a key of STREAMS) at these counters."""
    return np.random.default_rng([seed, STREAMS[stream], *counters])
