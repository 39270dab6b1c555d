"""Exercise 1 (lesson 2): the Linear layer's backward.

    y = x @ W.T + b        x: (N, in),  W: (out, in) (PyTorch's layout),  b: (out,)  ->  y: (N, out)

backward(dy) gets dy = dL/dy, shaped (N, out), and must
- write dL/dW into self.grads["weight"] (shape (out, in)) and dL/db into self.grads["bias"] (shape (out,)),
  in place (self.grads[k][...] = ...): minivae writes gradients, it does not add them up;
- return dL/dx, shaped (N, in).

Each of the N rows of x is one example and the loss sums over them. Work out one entry first,
dL/dW[o, i] = sum_n dy[n, o] x[n, i], then write it as one matrix product.
forward (inherited from minivae) caches the input as self.x. Check: python lessons/exercises/check.py linear
"""

from __future__ import annotations

from typing import Any

import minivae.nn


class Linear(minivae.nn.Linear):
    """minivae's Linear with backward left to you: forward caches self.x (N, in)."""

    def backward(self, dy: Any) -> Any:  # dy: (N, out)
        raise NotImplementedError("exercise: write Linear.backward (dW, db and dx)")
