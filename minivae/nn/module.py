"""The layer protocol, and the layers that only move data around.

Every layer has
- ``forward(x)``: computes y and caches what backward needs (and nothing else);
- ``backward(dy)``: given dL/dy, fills ``grads`` (same keys and shapes as ``params``) and returns dL/dx;
- ``params`` / ``grads``: dicts of arrays, PyTorch's names and shapes.

Gradients are written, not accumulated: each layer is used once per step, so there is no zero_grad.
A layer whose ``needs_input_grad`` is False (a model's first layer: nothing before it learns, and the
images need no gradient) fills ``grads`` but skips dL/dx and returns None, as PyTorch skips it for
inputs that do not require grad; Sequential then stops there.

A layer may also keep scratch arrays between calls (``_workspace``: the convolutions' im2col columns
and padded inputs). They are memory, not state: a call writes a workspace before it reads it (a padded
one keeps only its zero border from earlier calls), and no array a layer returns is one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np

from minivae.backend import get_array_module, resolve_dtype

# Module._workspace of some layer: (name, shape, like, zeros=False) -> an array that layer keeps
Workspace = Callable[..., Any]


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
        self._workspaces: dict[str, Any] = {}  # scratch arrays reused from call to call (see _workspace)

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

        Each layer keeps a view of its part (same shape, same name), so its forward and backward do not
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

    def _workspace(self, name: str, shape: tuple[int, ...], like: Any, zeros: bool = False) -> Any:
        """A scratch array this layer reuses from call to call, allocated again only when the shape,
        dtype or backend changes. For temporaries that live within one forward or backward (or, like a
        cache, until the next one): a step then writes its largest arrays into memory it already has,
        instead of taking fresh memory each time (on the CPU, pages the OS must map and zero).
        zeros=True: filled with zeros when allocated, e.g. a padded input whose border is never written."""
        buf = self._workspaces.get(name)
        xp = get_array_module(like)
        if buf is None or buf.shape != shape or buf.dtype != like.dtype or get_array_module(buf) is not xp:
            buf = self._workspaces[name] = (xp.zeros if zeros else xp.empty)(shape, dtype=like.dtype)
        return buf

    def _set_param(self, name: str, value: Any) -> None:
        xp = get_array_module(value)
        self.params[name] = value
        self.grads[name] = xp.zeros_like(value)

    def to(self, xp: ModuleType | None = None, dtype: Any = None) -> Module:
        """Move (and/or cast) every parameter, like torch's .to(device, dtype). Returns self.
        Parameters then live in arrays of their own again (flatten_parameters() undone)."""
        self.flat = None
        self._workspaces.clear()  # allocated again, on the new backend and dtype, when next used
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


def pad2d(
    x: Any, padding: tuple[int, int, int, int], workspace: Workspace | None = None, name: str = "pad"
) -> Any:
    """Zero-pad positive sides, crop negative sides of (N, C, H, W); (left, right, top, bottom).

    workspace: a layer's Module._workspace, to pad into the layer's array `name` (None: a new array). It
    is zeroed once, when allocated, and every call rewrites only its interior, so its border is still
    zero: one copy per call instead of a fill and a copy.
    """
    left, right, top, bottom = padding
    n, c, h, w = x.shape
    # crop first (negative entries), then pad (positive entries); a slice only when there is a crop, as
    # on CuPy even an empty one costs as much host time as a small kernel launch
    if min(padding) < 0:
        x = x[:, :, max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]
    if max(padding) <= 0:
        return x
    t, b, l, r = max(top, 0), max(bottom, 0), max(left, 0), max(right, 0)
    n, c, h, w = x.shape
    hp, wp = h + t + b, w + l + r
    # keep x's memory layout (the convolutions leave activations channel-major), which keeps the next
    # im2col's reads contiguous
    if workspace is None:
        out = get_array_module(x).zeros_like(x, shape=(n, c, hp, wp))
    else:
        key = f"{name}{padding}"  # a border is zero only for the padding it was made for
        if x.strides[1] > x.strides[0]:  # channel-major: (C, N, H, W) in memory
            out = workspace(key, (c, n, hp, wp), x, zeros=True).transpose(1, 0, 2, 3)
        else:
            out = workspace(key, (n, c, hp, wp), x, zeros=True)
    out[:, :, t : t + h, l : l + w] = x
    return out
