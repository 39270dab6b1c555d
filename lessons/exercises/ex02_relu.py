"""Exercise 2 (lesson 3): ReLU, forward and backward.

    y = max(x, 0)        x, y: any shape, elementwise

forward(x) returns y and caches what backward needs (and nothing else); backward(dy) returns
dL/dx = dy * dy/dx, the same shape. dy/dx is 1 where x > 0 and 0 where x < 0; at x = 0 exactly the
derivative does not exist and a library must choose: minivae and PyTorch take 0 there.

Check: python lessons/exercises/check.py relu
"""

from __future__ import annotations

from typing import Any

from minivae.nn import Module


class ReLU(Module):
    """y = max(x, 0), elementwise."""

    def forward(self, x: Any) -> Any:
        raise NotImplementedError("exercise: write ReLU.forward (y, and cache what backward needs)")

    def backward(self, dy: Any) -> Any:
        raise NotImplementedError("exercise: write ReLU.backward (dx)")
