"""Exercise 12 (lesson 13): the IWAE bound's log-mean-exp, and its gradient.

    log_w: (N, k), the log importance weights of k samples z_i ~ q(z|x) for each of N images:
        log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x)
    L_k = log (1/k) sum_i w_i    for each image: (N,)
    weights = dL_k / dlog w: (N, k)

Return (L_k, weights). For real images log w is a few hundred nats below zero, so exp(log w)
underflows to 0 in float64 (exp(-800) = 0): compute it so that it stays finite for log w anywhere
from -1000 to +1000. Then differentiate L_k with respect to each log w_i.

Check: python lessons/exercises/check.py iwae
"""

from __future__ import annotations

from typing import Any


def log_mean_exp(log_w: Any) -> tuple[Any, Any]:
    """log_w (N, k) -> (L_k (N,), weights (N, k)): the log of the mean of exp(log_w) over each row,
    and its gradient."""
    raise NotImplementedError("exercise: write log_mean_exp (L_k and its gradient)")
