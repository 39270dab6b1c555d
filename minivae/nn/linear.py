"""Fully connected layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from minivae.backend import resolve_dtype
from minivae.nn.init import init_weight_bias
from minivae.nn.module import Module


class Linear(Module):
    """y = x @ W.T + b, as torch.nn.Linear.   x: (N, in) -> y: (N, out).   Caches x.

    weight: (out_features, in_features); bias: (out_features,).
    Backward:  dW = dy.T @ x   (out, in);   db = sum_n dy   (out,);   dx = dy @ W   (N, in).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str = "pytorch",
        rng: np.random.Generator | None = None,
        dtype: Any = "float32",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        rng = rng if rng is not None else np.random.default_rng()
        w, b = init_weight_bias((out_features, in_features), out_features, init, rng, resolve_dtype(dtype))
        self._set_param("weight", w)
        if bias:
            self._set_param("bias", b)

    def forward(self, x: Any) -> Any:
        self.x = x
        y = x @ self.params["weight"].T  # (N, out)
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, dy: Any) -> Any:  # dy: (N, out)
        self.grads["weight"][...] = dy.T @ self.x  # (out, in)
        if "bias" in self.params:
            self.grads["bias"][...] = dy.sum(axis=0)  # (out,)
        if not self.needs_input_grad:
            return None
        return dy @ self.params["weight"]  # dx: (N, in)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
