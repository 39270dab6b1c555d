"""Exercise 10 (lesson 8): one Adam step, with bias correction.

For one parameter p with gradient g, at step t = 1, 2, ... (Kingma & Ba 2015, PyTorch's form):

    m = b1 m + (1 - b1) g              the running mean of g       (m = 0 before step 1)
    v = b2 v + (1 - b2) g^2            the running mean of g^2     (v = 0 before step 1)
    m_hat = m / (1 - b1^t)             bias corrections: m and v start at 0, so early on they
    v_hat = v / (1 - b2^t)             underestimate; dividing by 1 - b^t removes that
    p -= lr * m_hat / (sqrt(v_hat) + eps)

Write _update(state, p, g): minivae's Optimizer.step() counts the step (self.t is 1 at the first
call) and calls _update once per parameter. self.lr, self.betas = (b1, b2) and self.eps hold the
settings. state is this parameter's own dict, empty at the first step: keep m and v in it (minivae
names them state["exp_avg"] and state["exp_avg_sq"]). Update p, m and v IN PLACE (p -= ...,
m[...] = ...): the model holds the same arrays.

Check: python lessons/exercises/check.py adam
"""

from __future__ import annotations

from typing import Any

import minivae.nn.optim


class Adam(minivae.nn.optim.Adam):
    """minivae's Adam with the update left to you."""

    def _update(self, state: dict[str, Any], p: Any, g: Any) -> None:
        raise NotImplementedError("exercise: write Adam._update (m, v, the bias corrections, the step)")
