"""Count the array operations in one training step: on CuPy each is (at least) one kernel launch.

    python benchmarks/count_ops.py                     # conv model, batch 32
    python benchmarks/count_ops.py --arch mlp --by-line
    python benchmarks/count_ops.py --unfused           # without minivae.kernels (MINIVAE_FUSED=0)

On a GPU a small step is bound by launches, not arithmetic: each launch costs a few microseconds of
driver time plus CuPy's Python dispatch, whatever the batch size. This script runs one step on NumPy
with every array wrapped in CountingArray, a NumPy subclass that counts what would launch a kernel on
CuPy: each ufunc call (elementwise arithmetic, comparisons, in-place updates, matmul), each reduction,
each copy (astype, ascontiguousarray, a reshape that cannot be a view, assigning into a slice) and each
zeros/zeros_like fill, and arithmetic on a full reduction's result (a NumPy scalar, but a 0-d array and
so a kernel on CuPy). Views (transpose, slicing, a reshape that is a view) and empty allocations launch
nothing and are not counted; nor is assigning an array to itself, which NumPy and CuPy both skip. The
count is a model of CuPy's launches, not a trace of them: a kernel CuPy splits in two (some reductions)
or a copy cuBLAS makes internally is not seen. CuPy-only kernels (the fused Adam update and those of
minivae.kernels) count as one each; --unfused counts the NumPy lines they replace instead.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import minivae
from minivae import kernels
from minivae.nn import ReLU, conv, optim
from minivae.nn.losses import bce_with_logits, kl_normal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import setup  # noqa: E402  (the benchmark's own model, batch and noise)

OPS: Counter[str] = Counter()  # kind of operation -> count
SITES: Counter[str] = Counter()  # minivae file:line -> count
PACKAGE = str(Path(minivae.__file__).resolve().parent)


def count(kind: str) -> None:
    """Record one operation, and the line of minivae that asked for it."""
    OPS[kind] += 1
    frame = sys._getframe(1)
    while frame is not None and not frame.f_code.co_filename.startswith(PACKAGE):
        frame = frame.f_back
    if frame is not None:
        where = Path(frame.f_code.co_filename).relative_to(PACKAGE)
        SITES[f"minivae/{where}:{frame.f_lineno} ({frame.f_code.co_name})"] += 1


def plain(a: Any) -> Any:
    """The same data as a plain ndarray (recursively through lists and tuples)."""
    if isinstance(a, CountingArray):
        return a.view(np.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(plain(v) for v in a)
    if isinstance(a, dict):
        return {k: plain(v) for k, v in a.items()}
    return a


def counting(r: Any) -> Any:
    """Results as CountingArrays. A NumPy scalar (what a full reduction returns) becomes a 0-d array,
    as CuPy returns one: arithmetic on a loss value is then counted, as on CuPy it is a kernel."""
    if isinstance(r, tuple):
        return tuple(counting(v) for v in r)
    if isinstance(r, np.generic):
        return np.asarray(r).view(CountingArray)
    return r.view(CountingArray) if isinstance(r, np.ndarray) else r


class CountingArray(np.ndarray):
    """An ndarray whose operations are counted (see the module docstring for what counts)."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        count(f"{ufunc.__name__}" + ("" if method == "__call__" else f".{method}"))
        if out is not None:
            kwargs["out"] = plain(out)
        r = getattr(ufunc, method)(*plain(inputs), **kwargs)
        return (out[0] if len(out) == 1 else out) if out is not None else counting(r)

    def __array_function__(self, func, types, args, kwargs):
        count(func.__name__)
        return counting(func(*plain(args), **plain(kwargs)))

    def __setitem__(self, key, value) -> None:
        target = np.ndarray.__getitem__(self.view(np.ndarray), key)
        if not (
            isinstance(value, np.ndarray)
            and value.__array_interface__["data"] == target.__array_interface__["data"]
            and value.strides == target.strides
            and value.shape == target.shape
        ):  # `a[k] += b` assigns a[k] to itself: skipped, as NumPy and CuPy skip it
            count("copy into a slice")
        np.ndarray.__setitem__(self.view(np.ndarray), key, plain(value))

    def reshape(self, *shape, **kwargs):
        r = np.ndarray.reshape(self.view(np.ndarray), *shape, **kwargs)
        if r.size and not np.shares_memory(r, self.view(np.ndarray)):
            count("reshape (a copy)")
        return r.view(CountingArray)

    def fill(self, value) -> None:
        count("fill")
        np.ndarray.fill(self.view(np.ndarray), value)


def _method(name: str):
    def method(self, *args, **kwargs):
        count(name)
        return counting(getattr(np.ndarray, name)(self.view(np.ndarray), *args, **kwargs))

    return method


for _name in ("astype", "copy", "sum", "mean", "max", "min", "all", "any"):
    setattr(CountingArray, _name, _method(_name))


class CountingNumpy(types.ModuleType):
    """numpy, as seen by minivae code handed CountingArrays: functions that take no array argument
    (zeros, stack of Python numbers, ...) are counted here, since NumPy cannot dispatch them."""

    FREE = {"empty", "empty_like", "result_type", "dtype", "shares_memory", "isscalar", "ndim", "shape"}

    def __getattr__(self, name: str) -> Any:
        obj = getattr(np, name)
        if not callable(obj) or isinstance(obj, (type, np.ufunc)):
            return obj

        def counted(*args, **kwargs):
            r = obj(*plain(args), **plain(kwargs))
            src = plain(args[0]) if args else None
            free = name in self.FREE or (
                name in ("asarray", "ascontiguousarray")  # of an array that already fits: itself
                and (
                    (isinstance(src, np.ndarray) and np.shares_memory(src, r))
                    or (isinstance(src, np.generic) and src.dtype == r.dtype)  # a 0-d array on CuPy
                )
            )
            if not free:
                count(name)
            return counting(r)

        return counted


COUNTING_NUMPY = CountingNumpy("numpy (counting)")
COUNTING_NUMPY.lib = np.lib


@contextlib.contextmanager
def counting_numpy():
    """Point every minivae module's get_array_module at CountingNumpy for CountingArrays."""
    real = minivae.backend.get_array_module

    def get_array_module(*arrays):
        if any(isinstance(a, CountingArray) for a in arrays):
            return COUNTING_NUMPY
        return real(*arrays)

    modules = [
        m for n, m in sys.modules.items() if n.startswith("minivae") and hasattr(m, "get_array_module")
    ]
    saved_fused = optim._fused_adam
    saved_kernels = {name: getattr(kernels, name) for name in FUSED}
    for m in modules:
        m.get_array_module = get_array_module
    # CountingNumpy is not numpy, so Adam and the layers take their CuPy branches: each fused kernel
    # counted as one, its result computed by the NumPy lines it stands for (on plain arrays: uncounted)
    optim._fused_adam = lambda: lambda *args: count("fused Adam kernel (CuPy)")
    for name, (label, reference) in FUSED.items():
        setattr(kernels, name, _stub(label, reference))
    try:
        yield
    finally:
        for m in modules:
            m.get_array_module = real
        optim._fused_adam = saved_fused
        for name, fn in saved_kernels.items():
            setattr(kernels, name, fn)


def _relu_reference(x: Any) -> tuple[Any, Any]:
    layer = ReLU()
    return layer.forward(x), layer.mask


def _bce_reference(x: Any, t: Any, scale: float) -> tuple[Any, Any]:
    elems, grad = bce_with_logits(x, t, "none")
    return elems, grad * scale


def _kl_reference(mu: Any, logvar: Any, beta_scale: float) -> tuple[Any, Any, Any]:
    return kl_normal(mu, logvar, beta_scale, "none")


# minivae.kernels' functions: (label, the NumPy computation each stands for)
FUSED = {
    "col2im": ("fused col2im kernel (CuPy)", conv.col2im),
    "relu": ("fused ReLU kernel (CuPy)", _relu_reference),
    "bce_with_logits_elements": ("fused BCE kernel (CuPy)", _bce_reference),
    "kl_normal_elements": ("fused KL kernel (CuPy)", _kl_reference),
}


def _stub(label: str, reference: Any) -> Any:
    def stub(*args: Any) -> Any:
        count(label)
        return counting(reference(*plain(args)))

    return stub


def count_step(
    arch: str, batch: int, check_finite: bool = True, fused: bool = True
) -> tuple[Counter, Counter]:
    """Operations of the second of two training steps (the first builds Adam's state), as CuPy
    training runs them: parameters laid end to end (flatten_parameters), Adam fused, and the kernels
    of minivae.kernels (fused=False: their NumPy lines instead, as with MINIVAE_FUSED=0)."""
    from minivae.training.config import TrainConfig
    from minivae.training.loop import make_optimizer, train_step

    model, _, x, eps = setup(arch, batch, np)
    for module, key in model._slots():
        module.params[key] = module.params[key].view(CountingArray)
        module.grads[key] = module.grads[key].view(CountingArray)
    x, eps = x.view(CountingArray), eps.view(CountingArray)
    with counting_numpy(), contextlib.nullcontext() if fused else kernels.off():
        opt = make_optimizer(TrainConfig(lr=1e-3), model)  # not numpy, so it flattens, as for CuPy
        assert model.flat is not None and opt.flat is not None
        model.check_input(x)  # the training loop checks each data set once, then every step skips it
        for _ in range(2):
            OPS.clear(), SITES.clear()
            train_step(model, opt, x, eps, 1.0, "elbo", check_finite=check_finite, check_values=False)
    return Counter(OPS), Counter(SITES)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="conv", choices=["mlp", "conv"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--by-line", action="store_true", help="also list the count of each line of minivae")
    p.add_argument("--unfused", action="store_true", help="without minivae.kernels (as MINIVAE_FUSED=0)")
    args = p.parse_args()
    ops, sites = count_step(args.arch, args.batch, fused=not args.unfused)
    how = "NumPy lines instead of minivae.kernels" if args.unfused else "minivae.kernels fused, as on CuPy"
    print(
        f"{args.arch}, batch {args.batch}: {sum(ops.values())} array operations in one training step ({how})"
    )
    for kind, n in ops.most_common():
        print(f"  {n:5d}  {kind}")
    if args.by_line:
        print("by line of minivae:")
        for site, n in sorted(sites.items()):
            print(f"  {n:5d}  {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
