"""Optimizers. Each owns its state, keyed by parameter name, and updates the parameters in place
(so CuPy arrays stay on the GPU). They take a model's ``named_parameters()``: (name, param, grad)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from minivae import kernels, threads
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
    The update is the three lines at the end of _update; NumPy runs them as adam_in_parts (the same
    operations in place, slice by slice, on the BLAS threads' cores: faster on the CPU) and CuPy as one
    kernel (kernels.adam).
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
        if xp is np and p.flags.c_contiguous:  # the three lines below, in place, in slices and parts
            return adam_in_parts(p, g, m, v, b1, b2, bc1, bc2, lr, eps)
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * (g * g)
        p -= lr / bc1 * m / (xp.sqrt(v) / math.sqrt(bc2) + eps)


ADAM_BLOCK = 32768  # elements per slice in adam_in_blocks: 128 KB a float32 array


def adam_in_blocks(p, g, m, v, b1, b2, bc1, bc2, lr, eps, block: int = ADAM_BLOCK) -> None:
    """Adam._update's three lines, bit for bit, in place and over `block` elements at a time: the CPU's
    update (on the 2-core AVX-512 CPU the MLP step at batch 32 takes 0.74 of its time with the three
    lines; docs/performance.md).

    Why it is faster. The three lines make 15 passes over the parameter, each into a fresh temporary of
    its size. A 784 x 400 weight is 1.25 MB of float32, so p, g, m, v and the temporaries are several MB,
    more than a core's L2 cache (2 MB on the 2-core AVX-512 CPU), and every pass reads from L3 or
    memory. Over a slice of 32768 elements, the slice's p, g, m, v and two scratch arrays
    (768 KB in all) stay in cache from the first pass to the last: memory sees each element read once
    and written once.
    Why it is the same. Python evaluates b1 * m + (1 - b1) * g as two products and a sum, each rounded
    to the arrays' dtype; m *= b1, s = (1 - b1) g, m += s round the same three results, and so on line by
    line below. Every operation is elementwise, so cutting the arrays into slices changes nothing.
    p, m, v must be C-contiguous: their flat views are written.
    """
    if not (p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
        raise ValueError("adam_in_blocks writes p, m and v through flat views: they must be C-contiguous")
    flat = [a.reshape(-1) for a in (p, g, m, v)]  # views of p, m, v (g may be a copy: it is only read)
    scratch = np.empty((2, min(block, p.size)), dtype=p.dtype)
    for i in range(0, p.size, block):
        p_, g_, m_, v_ = (a[i : i + block] for a in flat)
        s, u = scratch[:, : p_.size]
        m_ *= b1
        np.multiply(g_, 1 - b1, out=s)
        m_ += s  # m = b1 m + (1 - b1) g
        v_ *= b2
        np.multiply(g_, g_, out=s)
        s *= 1 - b2
        v_ += s  # v = b2 v + (1 - b2) g^2
        np.multiply(m_, lr / bc1, out=u)
        np.sqrt(v_, out=s)
        s /= math.sqrt(bc2)
        s += eps
        u /= s
        p_ -= u  # p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)


def adam_in_parts(p, g, m, v, b1, b2, bc1, bc2, lr, eps) -> None:
    """adam_in_blocks over the parts threads.in_parts cuts the parameter into, the parts at once on the
    BLAS threads' cores; bit for bit the three lines, as every operation is elementwise.

    Whole (one BLAS thread, or a small parameter), the update runs in cache-sized slices (ADAM_BLOCK).
    Cut into parts, each part runs as one slice: two threads hand Python's lock to each other around
    every NumPy call, and a call on 32,768 elements is too short to hide that. On the 2-core AVX2 CPU a
    784 x 400 weight's update took 1.13 ms whole in slices, 1.19 ms in two parts of slices and 0.88 ms
    in two parts of one slice each (docs/performance.md); the MLP step took 0.89, 0.94 and 0.96 of its
    time at batch 32, 128 and 256 with this update in parts against it whole, the other passes in parts
    in both (an interleaved A/B in one process, 2026-12-06).
    """
    flat = [a.reshape(-1) for a in (p, g, m, v)]  # views of p, m, v (g may be a copy: it is only read)

    def update(part: slice) -> None:
        one_of_several = part.stop - part.start < p.size
        block = p.size if one_of_several else ADAM_BLOCK
        adam_in_blocks(*(a[part] for a in flat), b1, b2, bc1, bc2, lr, eps, block=block)

    threads.in_parts(update, p.size, p)
