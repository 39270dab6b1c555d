"""Optimizers. Each owns its state, keyed by parameter name, and updates the parameters in place
(so CuPy arrays stay on the GPU). They take a model's ``named_parameters()``: (name, param, grad)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from minivae import kernels
from minivae.backend import get_array_module, to_numpy
from minivae.nn.module import flat_views


class Optimizer:
    """Shared bookkeeping: the (name, param, grad) list, per-parameter state, the step count t."""

    buffers: tuple[str, ...] = ()  # the state entries saved in checkpoints

    def __init__(
        self, named_parameters: Iterable[tuple[str, Any, Any]], lr: float, flat: tuple[Any, Any] | None = None
    ) -> None:
        """flat: (params, grads) from model.flatten_parameters(): the update then runs once over the
        whole model, and each parameter's state entries are views into flat state arrays."""
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.lr = lr
        self.named = list(named_parameters)
        self.state: dict[str, dict[str, Any]] = {name: {} for name, _, _ in self.named}
        self.t = 0
        self.flat, self.flat_state = flat, {}
        if flat is not None:
            self.flat_state = {k: get_array_module(flat[0]).zeros_like(flat[0]) for k in self.buffers}
            shapes = [p.shape for _, p, _ in self.named]
            views = {k: flat_views(v, shapes) for k, v in self.flat_state.items()}
            for i, (name, _, _) in enumerate(self.named):
                self.state[name] = {k: views[k][i] for k in views}

    def step(self) -> None:
        self.t += 1
        if self.flat is not None:  # the whole model as one vector: the same elementwise update
            self._update(self.flat_state, *self.flat)
            return
        for name, p, g in self.named:
            self._update(self.state[name], p, g)

    def _update(self, state: dict[str, Any], p: Any, g: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the state: {"t": step, "<param>.<buffer>": array}."""
        out = {"t": np.array(self.t)}
        for name, buffers in self.state.items():
            out.update(
                {f"{name}.{k}": np.array(to_numpy(v)) for k, v in buffers.items() if k in self.buffers}
            )
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        for name, p, _ in self.named:
            xp = get_array_module(p)
            mine = self.state[name]
            for k in self.buffers:
                if f"{name}.{k}" not in state:
                    continue
                v = xp.asarray(state[f"{name}.{k}"], dtype=p.dtype)
                if k in mine:
                    mine[k][...] = v  # in place: the entry may be a view into the flat state
                else:
                    mine[k] = v.copy()  # a copy: never share buffers with the caller


class SGD(Optimizer):
    """torch.optim.SGD: buf = momentum * buf + g (buf = g at the first step);  p -= lr * buf."""

    buffers = ("momentum_buffer",)

    def __init__(self, named_parameters, lr: float = 1e-2, momentum: float = 0.0, flat=None) -> None:
        super().__init__(named_parameters, lr, flat)
        self.momentum = momentum

    def _update(self, state, p, g) -> None:
        if self.momentum == 0:
            p -= self.lr * g
            return
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = g.copy()
        else:
            buf = state["momentum_buffer"]
            buf[...] = self.momentum * buf + g
        p -= self.lr * state["momentum_buffer"]


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) as torch.optim.Adam computes it:

        m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / ( sqrt(v) / sqrt(1 - b2^t) + eps )

    keras_epsilon=True gives Keras's form instead: eps is added to the *uncorrected* sqrt(v),
    p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), which is PyTorch's update with
    eps_t = eps / sqrt(1 - b2^t) (about 3.2e-6 at step 1 for eps = 1e-7): larger early on, it damps
    the first steps of parameters whose gradients are tiny. Keras's default eps is 1e-7.
    """

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        named_parameters,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        keras_epsilon: bool = False,
        flat=None,
    ) -> None:
        super().__init__(named_parameters, lr, flat)
        self.betas, self.eps, self.keras_epsilon = betas, eps, keras_epsilon

    def _update(self, state, p, g) -> None:
        xp = get_array_module(p)
        if not state:
            state["exp_avg"], state["exp_avg_sq"] = xp.zeros_like(p), xp.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        (b1, b2), lr = self.betas, self.lr
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t  # the bias corrections
        eps = self.eps / math.sqrt(bc2) if self.keras_epsilon else self.eps
        if kernels.use(xp):
            return kernels.adam(p, g, m, v, b1, b2, bc1, bc2, lr, eps)
        if "scratch" not in state:  # two work arrays, reused every step, never saved
            state["scratch"] = (xp.empty_like(p), xp.empty_like(p))
        adam_in_place(p, g, m, v, state["scratch"], b1, b2, bc1, bc2, lr, eps)


def adam_in_place(p, g, m, v, scratch, b1, b2, bc1, bc2, lr, eps) -> None:
    """Adam's update, bit for bit these three lines, with no array allocated:

        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * (g * g)
        p -= lr / bc1 * m / (xp.sqrt(v) / math.sqrt(bc2) + eps)

    Python evaluates each line one operation at a time, each into a fresh temporary: the first is the
    product b1 * m, the product (1 - b1) * g, their sum, and a copy into m. Here the same operations
    run in the same order on the same float32 values, written over m or into one of the two scratch
    arrays s and t instead: m *= b1 is the first product, s = (1 - b1) * g the second, m += s the sum
    (no copy). The third line is t = (lr / bc1) * m, s = sqrt(v) / sqrt(bc2) + eps, t /= s, p -= t.
    Each operation rounds as it did, so the result is identical (tests/test_optim.py checks the bits).

    Why: every temporary of the three lines is an array the size of the parameter (650,000 floats in
    the MLP VAE, 2.6 MB), fresh each step, and the copies are two more passes over memory. Adam is a
    tenth to a quarter of the MLP step on the CPU; docs/performance.md has the interleaved A/B.
    """
    xp = get_array_module(p)
    s, t = scratch
    m *= b1
    xp.multiply(g, 1 - b1, out=s)
    m += s  # m = b1 m + (1 - b1) g
    v *= b2
    xp.multiply(g, g, out=s)
    s *= 1 - b2
    v += s  # v = b2 v + (1 - b2) g^2
    xp.multiply(m, lr / bc1, out=t)  # m_hat * lr
    xp.sqrt(v, out=s)
    s /= math.sqrt(bc2)
    s += eps  # sqrt(v_hat) + eps
    t /= s
    p -= t
