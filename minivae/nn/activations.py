"""Elementwise activations. Each caches the one array its derivative needs."""

from __future__ import annotations

from typing import Any

from minivae import kernels
from minivae.backend import get_array_module
from minivae.nn.module import Module


class ReLU(Module):
    """y = max(x, 0).   dy/dx = 1 where x > 0, else 0 (PyTorch's choice at exactly 0).   Caches the mask."""

    def forward(self, x: Any) -> Any:
        if kernels.use(get_array_module(x)):  # CuPy: both lines below as one kernel
            y, self.mask = kernels.relu(x)
            return y
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy: Any) -> Any:
        return dy * self.mask


class LeakyReLU(Module):
    """y = x if x > 0 else slope * x (torch.nn.LeakyReLU, slope 0.01).   Caches the mask.

    A leaky unit keeps a gradient when its input is negative, so it cannot die the way a ReLU can.
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.mask = x > 0
        return xp.where(self.mask, x, x * self.negative_slope)

    def backward(self, dy: Any) -> Any:
        xp = get_array_module(dy)
        return xp.where(self.mask, dy, dy * self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


def sigmoid(x: Any) -> Any:
    """1 / (1 + exp(-x)), exact in both tails and never overflowing: with e = exp(-|x|) <= 1,
    sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0, e) / (1.0 + e)


class Sigmoid(Module):
    """y = sigmoid(x).   dy/dx = y (1 - y).   Caches y."""

    def forward(self, x: Any) -> Any:
        self.y = sigmoid(x)
        return self.y

    def backward(self, dy: Any) -> Any:
        return dy * self.y * (1.0 - self.y)


class Tanh(Module):
    """y = tanh(x).   dy/dx = 1 - y^2.   Caches y."""

    def forward(self, x: Any) -> Any:
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, dy: Any) -> Any:
        return dy * (1.0 - self.y * self.y)
