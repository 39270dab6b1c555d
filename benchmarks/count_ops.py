"""Count the array operations in one training step: on CuPy each is (at least) one kernel launch.

    python benchmarks/count_ops.py                     # conv model, batch 32
    python benchmarks/count_ops.py --arch mlp --by-line
    python benchmarks/count_ops.py --unfused           # without minivae.kernels (MINIVAE_FUSED=0)
    python benchmarks/count_ops.py --time --json op_cost.json    # and what one operation of each kind costs

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

--time adds what one operation of each kind costs on each backend present (--backend), at the sizes of
the conv step at batch 32, so count and cost together say where a launch-bound step's time goes. Each
cost is the time per call of a back-to-back loop (one synchronisation before and one after), which is
how a step's operations run: Python and CuPy queue one launch after another, and when the step is
launch-bound the device waits for them. On CuPy it also times three of minivae.kernels' kernels beside
the library lines they stand for (run with the kernels off): ReLU's forward, BCE's value and gradient,
and the stride-2 col2im.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import minivae
from minivae import kernels
from minivae.backend import backend_name, get_backend, synchronize
from minivae.nn import ReLU, conv
from minivae.nn.conv import col2im, im2col
from minivae.nn.losses import bce_with_logits, kl_normal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import backends_present, setup  # noqa: E402  (the benchmark's model, batch, noise)

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
    saved_kernels = {name: getattr(kernels, name) for name in FUSED}
    for m in modules:
        m.get_array_module = get_array_module
    # CountingNumpy is not numpy, so Adam and the layers take their CuPy branches: each fused kernel
    # counted as one, its result computed by the NumPy lines it stands for (on plain arrays: uncounted)
    for name, (label, reference) in FUSED.items():
        setattr(kernels, name, _stub(label, reference))
    try:
        yield
    finally:
        for m in modules:
            m.get_array_module = real
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


# minivae.kernels' functions: (label, the NumPy computation each stands for; None: counted only, as
# Adam's update, in place, leaves nothing the rest of the counted step reads)
FUSED = {
    "col2im": ("fused col2im kernel (CuPy)", conv.col2im),
    "relu": ("fused ReLU kernel (CuPy)", _relu_reference),
    "bce_with_logits_elements": ("fused BCE kernel (CuPy)", _bce_reference),
    "kl_normal_elements": ("fused KL kernel (CuPy)", _kl_reference),
    "adam": ("fused Adam kernel (CuPy)", None),
}


def _stub(label: str, reference: Any) -> Any:
    def stub(*args: Any) -> Any:
        count(label)
        return None if reference is None else counting(reference(*plain(args)))

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


# ------------------------------------------------------------------------------- --time: cost per call


def lines(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn run with minivae.kernels off: the library's own lines, as NumPy runs them."""

    def call() -> Any:
        with kernels.off():
            return fn()

    return call


def per_call_us(fn: Callable[[], Any], xp: Any, calls: int) -> float:
    """Microseconds per call of fn in a back-to-back loop (after a warm-up that compiles and allocates)."""
    for _ in range(5):
        fn()
    synchronize(xp)
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(xp)
    return (time.perf_counter() - t) / calls * 1e6


def operations(xp: Any) -> list[tuple[str, Callable[[], Any]]]:
    """(name, call) for each kind of operation the conv step at batch 32 makes, at its sizes there."""
    rng = np.random.default_rng(0)

    def arr(*shape: int) -> Any:
        return xp.asarray(rng.standard_normal(shape, dtype=np.float32))

    x, y = arr(32, 64, 14, 14), arr(32, 64, 14, 14)  # an activation of the 64-channel convolutions
    mask, acc = x > 0, xp.zeros_like(x)  # acc takes the repeated in-place bias adds
    small, h, w_head = arr(32, 15), arr(32, 32), arr(15, 32)  # mu at latent 15; fc_mu's input and weight
    padded = xp.zeros((32, 64, 16, 16), dtype=np.float32)
    full = xp.zeros((32, 32, 29, 29), dtype=np.float32)  # col2im's target in the stride-2 layers
    tap = arr(32, 32, 14, 14)
    w, cols = arr(64, 576), im2col(padded, 3, 3, 1, 1)  # (576, 6272): the 64->64 convolution's product
    b = arr(64).reshape(1, -1, 1, 1)
    dcols, dshape = arr(288, 32 * 14 * 14), (32, 32, 29, 29)  # the encoder's stride-2 input gradient

    def pad() -> None:
        padded[:, :, 1:-1, 1:-1] = x

    def col2im_tap() -> None:
        full[:, :, 0:27:2, 0:27:2] += tap

    def bias() -> None:
        acc.__iadd__(b)

    return [
        ("add, 401k elements (x + y)", lambda: x + y),
        ("add in place, a bias (y += b)", bias),
        ("multiply by a mask (ReLU)", lambda: x * mask),
        ("compare (x > 0)", lambda: x > 0),
        ("exp, 401k elements", lambda: xp.exp(x)),
        ("add, 480 elements (latent)", lambda: small + small),
        ("exp, 480 elements (latent)", lambda: xp.exp(small)),
        ("sum over (0, 2, 3) (bias gradient)", lambda: x.sum(axis=(0, 2, 3))),
        ("sum to a 0-d array (a loss)", lambda: x.sum()),
        ("zeros_like (pad's fill)", lambda: xp.zeros_like(padded)),
        ("copy into a slice (pad)", pad),
        ("im2col copy (576 x 6272)", lambda: im2col(padded, 3, 3, 1, 1)),
        ("strided add (one col2im tap)", col2im_tap),
        ("col2im, stride 2: zeros + 9 strided adds (the library's lines)", lines(lambda: col2im(dcols, dshape, 3, 3, 2, 2))),
        ("matmul 64x576 @ 576x6272", lambda: w @ cols),
        ("matmul 32x32 @ 32x15 (a head)", lambda: h @ w_head.T),
    ]  # fmt: skip


def kernels_beside_lines(xp: Any) -> list[tuple[str, Callable[[], Any]]]:
    """CuPy only: three of minivae.kernels' kernels beside the library lines they stand for."""
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.standard_normal((32, 64, 14, 14), dtype=np.float32))
    logits = xp.asarray(rng.standard_normal((32, 1, 28, 28), dtype=np.float32) * 3)
    target = xp.asarray(rng.random((32, 1, 28, 28), dtype=np.float32))
    dcols, dshape = xp.asarray(rng.standard_normal((288, 32 * 14 * 14), dtype=np.float32)), (32, 32, 29, 29)
    relu = ReLU()
    return [
        ("ReLU forward, the library's lines (2 operations)", lines(lambda: relu.forward(x))),
        ("ReLU forward, minivae.kernels.relu (1 kernel)", lambda: relu.forward(x)),
        ("BCE value and gradient, the library's lines", lines(lambda: bce_with_logits(logits, target))),
        ("BCE value and gradient, minivae.kernels (kernel, sum, divide)", lambda: bce_with_logits(logits, target)),
        ("col2im, stride 2, minivae.kernels.col2im (1 kernel)", lambda: col2im(dcols, dshape, 3, 3, 2, 2)),
    ]  # fmt: skip


def op_costs(backends: list[str], calls: int) -> dict[str, dict[str, Any]]:
    """{backend: {operation: µs per call}}; an operation that fails is reported, not fatal."""
    results: dict[str, dict[str, Any]] = {}
    for name in backends:
        xp = get_backend(name)
        rows = operations(xp) + (kernels_beside_lines(xp) if xp is not np else [])
        for label, fn in rows:
            try:
                cost: Any = round(per_call_us(fn, xp, calls), 2)
            except Exception as e:  # noqa: BLE001  (a kernel that does not build is a result too)
                cost = f"failed: {e!r}"
            results.setdefault(backend_name(xp), {})[label] = cost
    return results


def cost_table(results: dict[str, dict[str, Any]]) -> str:
    width = max(len(k) for r in results.values() for k in r)
    out = [
        f"| operation | {' | '.join(f'{n} (µs per call)' for n in results)} |",
        f"|---|{'---|' * len(results)}",
    ]
    for label in dict.fromkeys(k for r in results.values() for k in r):
        out.append(f"| {label:<{width}} | {' | '.join(str(r.get(label, '-')) for r in results.values())} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="conv", choices=["mlp", "conv"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--by-line", action="store_true", help="also list the count of each line of minivae")
    p.add_argument("--unfused", action="store_true", help="without minivae.kernels (as MINIVAE_FUSED=0)")
    p.add_argument("--time", action="store_true", help="also time one operation of each kind")
    p.add_argument(
        "--backend", nargs="+", default=None, help="for --time: numpy and/or cupy (default: all present)"
    )
    p.add_argument("--calls", type=int, default=200, help="for --time: calls timed per operation")
    p.add_argument("--json", default=None, help="for --time: write the costs here")
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
    if args.time:
        costs = op_costs(backends_present(args.backend), args.calls)
        print("\nwhat one operation costs, at the conv step's sizes at batch 32:\n" + cost_table(costs))
        if args.json:
            Path(args.json).write_text(json.dumps(costs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
