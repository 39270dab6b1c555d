"""The layer protocol, and the layers that only move data around.

Every layer has
- ``forward(x)``: computes y and caches what backward needs (and nothing else);
- ``backward(dy)``: given dL/dy, fills ``grads`` (same keys and shapes as ``params``) and returns dL/dx;
- ``params`` / ``grads``: dicts of arrays, PyTorch's names and shapes.

Gradients are written, not accumulated: each layer is used once per step, so there is no zero_grad.
A layer whose ``needs_input_grad`` is False (a model's first layer: nothing before it learns, and the
images need no gradient) fills ``grads`` but skips dL/dx and returns None, as PyTorch skips it for
inputs that do not require grad; Sequential then stops there.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from minivae.backend import get_array_module, resolve_dtype


def flat_views(flat: Any, shapes: list[tuple[int, ...]]) -> list[Any]:
    """Consecutive pieces of the 1-D array flat, reshaped to the given shapes (views, no copies)."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    if sum(sizes) != flat.size:
        raise ValueError(
            f"the flat array holds a different number of entries ({flat.size}) than the shapes ({sum(sizes)})"
        )
    starts = np.cumsum([0, *sizes])
    return [flat[a:b].reshape(shape) for a, b, shape in zip(starts[:-1], starts[1:], shapes)]


class Module:
    """Base class: parameter bookkeeping shared by every layer and model."""

    needs_input_grad = True  # False: backward may skip dL/dx and return None (see the module docstring)

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.flat: tuple[Any, Any] | None = None  # (all parameters, all gradients) after flatten_parameters()

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def forward(self, x: Any) -> Any:  # pragma: no cover - every layer overrides it
        raise NotImplementedError

    def backward(self, dy: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def children(self) -> Iterator[tuple[str, Module]]:
        """Named sub-modules (none for a plain layer)."""
        return iter(())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
        """(name, param, grad) for this module and its children, PyTorch's dotted names."""
        for k, p in self.params.items():
            yield prefix + k, p, self.grads[k]
        for name, child in self.children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def num_parameters(self) -> int:
        return sum(int(p.size) for _, p, _ in self.named_parameters())

    def _slots(self) -> Iterator[tuple[Module, str]]:
        """(owning module, key) of every parameter, in named_parameters() order."""
        for k in self.params:
            yield self, k
        for _, child in self.children():
            yield from child._slots()

    def flatten_parameters(self) -> tuple[Any, Any]:
        """Lay every parameter end to end in one 1-D array, and every gradient in another.

        Each layer keeps a view of its part (same shape, same name), and writes its gradients into it in
        place (grads[k][...] = ..., as the layer protocol does), so its forward and backward do not
        change; but an optimizer given the two arrays updates the whole model with one array operation
        per step instead of one per parameter, and a NaN check is one sum. On a GPU each operation is a
        kernel launch, so this saves dozens of launches a step (PyTorch's fused optimizers do the same).
        Returns (params, grads). Build the optimizer after this, and move the model (.to) before it.
        """
        slots = list(self._slots())
        params = [m.params[k] for m, k in slots]
        xp, dtype = get_array_module(params[0]), params[0].dtype
        if any(p.dtype != dtype for p in params):
            raise ValueError(
                f"flatten_parameters needs one dtype, got {sorted({str(p.dtype) for p in params})}"
            )
        total = sum(int(p.size) for p in params)
        flat_p, flat_g = xp.empty(total, dtype=dtype), xp.zeros(total, dtype=dtype)
        shapes = [p.shape for p in params]
        for (m, k), p, pv, gv in zip(slots, params, flat_views(flat_p, shapes), flat_views(flat_g, shapes)):
            pv[...] = p
            m.params[k], m.grads[k] = pv, gv
        self.flat = (flat_p, flat_g)
        return self.flat

    def _set_param(self, name: str, value: Any) -> None:
        xp = get_array_module(value)
        self.params[name] = value
        self.grads[name] = xp.zeros_like(value)

    def to(self, xp: ModuleType | None = None, dtype: Any = None) -> Module:
        """Move (and/or cast) every parameter, like torch's .to(device, dtype). Returns self.
        Parameters then live in arrays of their own again (flatten_parameters() undone)."""
        self.flat = None
        for k in list(self.params):
            p = self.params[k]
            if dtype is not None:
                p = p.astype(resolve_dtype(dtype), copy=False)
            if xp is not None and get_array_module(p) is not xp:
                p = xp.asarray(p.get() if hasattr(p, "get") else p)
            self._set_param(k, p)
        for _, child in self.children():
            child.to(xp, dtype)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of all parameters, keyed by dotted name."""
        return {k: (p.get() if hasattr(p, "get") else np.array(p)) for k, p, _ in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy arrays into the parameters in place (they keep their device and dtype)."""
        mine = {k: p for k, p, _ in self.named_parameters()}
        missing, unexpected = set(mine) - set(state), set(state) - set(mine)
        if missing or unexpected:
            raise KeyError(f"state_dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for k, p in mine.items():
            v = state[k]
            if tuple(v.shape) != tuple(p.shape):
                raise ValueError(f"{k}: shape {tuple(v.shape)} in the state, {tuple(p.shape)} in the model")
            xp = get_array_module(p)
            p[...] = xp.asarray(v, dtype=p.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse. Children are named "0", "1", ..."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        self.layers = list(layers)

    def children(self) -> Iterator[tuple[str, Module]]:
        return ((str(i), layer) for i, layer in enumerate(self.layers))

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: Any) -> Any:
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
            if dy is None:  # a layer that needs no input gradient: the layers before it learn nothing
                return None
        return dy

    def first_trainable(self) -> Module | None:
        """The first layer with parameters (the layers before it only move data around)."""
        return next((layer for layer in self.layers if layer.params), None)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


class Flatten(Module):
    """(N, *dims) -> (N, prod(dims)), like torch.nn.Flatten(). Caches the input shape."""

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: Any) -> Any:
        return dy.reshape(self.shape)


class Reshape(Module):
    """(N, ...) -> (N, *shape), e.g. Reshape(64, 14, 14) after a Linear (torch.nn.Unflatten(1, shape))."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dy: Any) -> Any:
        return dy.reshape(self.in_shape)

    def extra_repr(self) -> str:
        return ", ".join(map(str, self.shape))


class ZeroPad2d(Module):
    """Pad (or, with negative values, crop) the last two axes, like torch.nn.ZeroPad2d.

    padding = (left, right, top, bottom). x: (N, C, H, W) -> (N, C, H + top + bottom, W + left + right).
    Keras's 'same' stride-2 convolution pads (0, 1, 0, 1); its 'same' stride-2 transposed convolution
    keeps rows/cols [0, 28) of a 29-wide result: ZeroPad2d((0, -1, 0, -1)).
    Backward is the reverse crop (or pad): the gradient of padded zeros is dropped.
    """

    def __init__(self, padding: int | tuple[int, int, int, int]) -> None:
        super().__init__()
        self.padding = (padding,) * 4 if isinstance(padding, int) else tuple(padding)

    def forward(self, x: Any) -> Any:
        return pad2d(x, self.padding)

    def backward(self, dy: Any) -> Any:
        return pad2d(dy, tuple(-p for p in self.padding))

    def extra_repr(self) -> str:
        return str(self.padding)


def pad2d(x: Any, padding: tuple[int, int, int, int]) -> Any:
    """Zero-pad positive sides, crop negative sides of x (N, C, H, W); padding = (left, right, top, bottom).

    Returns (N, C, H + top + bottom, W + left + right). The result keeps x's memory layout (the
    convolutions keep activations batch-last, minivae.nn.conv), so the next im2col reads long runs.
    """
    left, right, top, bottom = padding
    n, c, h, w = x.shape
    if min(padding) < 0:  # crop the negative sides
        x = x[:, :, max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]
    t, b, l, r = max(top, 0), max(bottom, 0), max(left, 0), max(right, 0)
    if t == b == l == r == 0:
        return x
    n, c, h, w = x.shape
    out = get_array_module(x).zeros_like(x, shape=(n, c, h + t + b, w + l + r))
    out[:, :, t : t + h, l : l + w] = x  # pad the positive sides
    return out
