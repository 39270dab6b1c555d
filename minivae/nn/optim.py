"""Optimizers. Each owns its state, keyed by parameter name, and updates the parameters in place
(so CuPy arrays stay on the GPU). They take a model's ``named_parameters()``: (name, param, grad)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

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
            buf *= self.momentum
            buf += g
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
        fused: bool = True,
        flat=None,
    ) -> None:
        super().__init__(named_parameters, lr, flat)
        self.betas, self.eps, self.keras_epsilon = betas, eps, keras_epsilon
        self.fused = fused  # CuPy only: one fused kernel per parameter instead of twelve operations

    def _update(self, state, p, g) -> None:
        xp = get_array_module(p)
        b1, b2 = self.betas
        if not state:
            state["exp_avg"], state["exp_avg_sq"] = xp.zeros_like(p), xp.zeros_like(p)
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        eps = self.eps / math.sqrt(bc2) if self.keras_epsilon else self.eps
        if xp is not np and self.fused:
            # on the GPU the twelve in-place operations below are twelve kernel launches per parameter;
            # _fused_adam() does the same arithmetic in one pass (tests check that they agree)
            m, v = state["exp_avg"], state["exp_avg_sq"]
            _fused_adam()(g, b1, 1 - b1, b2, 1 - b2, 1 / math.sqrt(bc2), eps, self.lr / bc1, p, m, v)
            return
        if "scratch" not in state:
            state["scratch"] = xp.empty_like(p)  # a work buffer reused every step (not saved)
        m, v, tmp = state["exp_avg"], state["exp_avg_sq"], state["scratch"]
        # the formula above, written in place (out=...) so a step allocates nothing:
        m *= b1
        m += xp.multiply(g, 1 - b1, out=tmp)  # m = b1 m + (1 - b1) g
        v *= b2
        xp.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp  # v = b2 v + (1 - b2) g^2
        xp.sqrt(v, out=tmp)
        tmp *= 1 / math.sqrt(bc2)
        tmp += eps  # sqrt(v_hat) + eps
        xp.divide(m, tmp, out=tmp)
        tmp *= self.lr / bc1
        p -= tmp  # p -= lr m_hat / (sqrt(v_hat) + eps)


@functools.cache
def _fused_adam() -> Any:
    """Adam's update as one CuPy elementwise kernel: reads g, p, m, v once and writes p, m, v once.

    The same formula as Adam._update's NumPy lines, with inv_sqrt_bc2 = 1 / sqrt(1 - b2^t) and
    step = lr / (1 - b1^t). T is the parameters' dtype; the Python-float arguments are cast to it.
    1 - b1 and 1 - b2 come in computed in double precision, as the NumPy lines compute them: in
    float32, 1 - 0.999f is 0.00099999 instead of 0.001, a 1e-5 relative error in v.
    """
    import cupy  # noqa: PLC0415  (only ever called with CuPy arrays)

    return cupy.ElementwiseKernel(
        "T g, T b1, T one_minus_b1, T b2, T one_minus_b2, T inv_sqrt_bc2, T eps, T step",
        "T p, T m, T v",
        """
        m = b1 * m + one_minus_b1 * g;
        v = b2 * v + one_minus_b2 * g * g;
        p -= step * m / (sqrt(v) * inv_sqrt_bc2 + eps);
        """,
        "minivae_fused_adam",
    )
