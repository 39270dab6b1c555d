"""Weight initialisers. They draw on the host with a NumPy Generator, so a seed gives the same
weights on every backend; Module.to(xp) then moves them to the device.

- "pytorch": PyTorch's default for Linear/Conv: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  (kaiming_uniform with a = sqrt(5) works out to exactly this bound).
- "glorot": Glorot/Xavier uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), zero bias
  (Keras's default, which the seed study used).
- "he": He/Kaiming uniform for ReLU, U(-a, a) with a = sqrt(6 / fan_in), zero bias.
"""

from __future__ import annotations

import math

import numpy as np

INITS = ("pytorch", "glorot", "he")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) as PyTorch computes them: dim 1 times the kernel area is fan_in.

    Linear (out, in) and Conv2d (out, in, kH, kW) give the usual numbers. For ConvTranspose2d
    (in, out, kH, kW) this gives fan_in = out*kH*kW, which is also what Keras computes for its
    Conv2DTranspose kernel (kH, kW, out, in), so Glorot bounds match the seed study's.
    """
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def init_weight_bias(
    shape: tuple[int, ...], n_bias: int, init: str, rng: np.random.Generator, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """A weight of `shape` and a bias of length `n_bias`, drawn by the named scheme."""
    fan_in, fan_out = fans(shape)
    if init == "pytorch":
        bound = 1.0 / math.sqrt(fan_in)
        w = rng.uniform(-bound, bound, size=shape)
        b = rng.uniform(-bound, bound, size=n_bias)
    elif init == "glorot":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-bound, bound, size=shape)
        b = np.zeros(n_bias)
    elif init == "he":
        bound = math.sqrt(6.0 / fan_in)
        w = rng.uniform(-bound, bound, size=shape)
        b = np.zeros(n_bias)
    else:
        raise ValueError(f"unknown init {init!r}: choose one of {', '.join(INITS)}")
    return w.astype(dtype), b.astype(dtype)
