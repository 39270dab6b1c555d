"""Exercise 4 (lesson 3): binary cross-entropy on logits, its value and its gradient.

    logits x, targets t: (N, ...) with t in [0, 1] (grey-level pixels are fine);  s = sigmoid(x)
    per element:  bce = -[ t log s + (1 - t) log(1 - s) ]
    loss = sum of bce over everything but the batch axis, averaged over the N images ("batchmean":
           nats per image)

Return (loss, dlogits): loss a float (or 0-d array), dlogits = dloss/dx shaped like x.

It must stay finite for ANY logit, x = +-1000 included: in float64, s(100) is exactly 1.0, so
log(1 - s) is log(0). Rewrite log s and log(1 - s) in terms of x before you code it (hint: split on
the sign of x, or use max(x, 0) and |x|), and differentiate that. Do not call minivae's loss.

Check: python lessons/exercises/check.py bce
"""

from __future__ import annotations

from typing import Any


def bce_with_logits(logits: Any, target: Any) -> tuple[Any, Any]:
    """(loss, dlogits) of BCE(sigmoid(logits), target), summed per image and averaged over the batch."""
    raise NotImplementedError("exercise: write bce_with_logits (the loss and dlogits)")
