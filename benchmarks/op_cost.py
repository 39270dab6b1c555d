"""What one array operation costs on each backend, at the sizes of the conv step at batch 32.

    python benchmarks/op_cost.py                       # every backend present
    python benchmarks/op_cost.py --backend cupy --json op_cost.json

count_ops.py says how many operations a training step makes (116 for the conv VAE on CuPy, 169 as NumPy runs it);
this says what each kind costs, so the two together say where a launch-bound step's time goes and what
fusing would buy before anyone writes a kernel. Each cost is the time per call of a back-to-back loop
(one synchronisation before and one after), which is how the operations of a step run: on a GPU, Python
and CuPy queue one launch after another and the device waits for them when the step is launch-bound.

On CuPy it also times minivae.kernels' fused kernels beside the library lines they stand for (run with
the kernels off): ReLU's forward (and, not in minivae, the same two lines through cupy.fuse), BCE's
value and gradient, and the stride-2 col2im. On both backends it times that col2im call as the library
writes it (zeros and nine strided adds) and as one sum over a strided view (col2im_gather below, not in
minivae, checked equal first). A fused variant that fails to build is reported, not fatal: the table is
the result either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from minivae import kernels
from minivae.backend import backend_name, get_array_module, get_backend, synchronize
from minivae.nn.activations import ReLU
from minivae.nn.conv import col2im, im2col
from minivae.nn.losses import bce_with_logits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import backends_present  # noqa: E402  (the benchmark's choice of backends)


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


def col2im_gather(cols: Any, x_shape: tuple[int, int, int, int], k: int, s: int) -> Any:
    """col2im as one sum (not in minivae): x[c, n, s Y + a] = sum_u cols[c, a + s u, n, Y - u], per axis.

    The columns go once into a zero-padded array P[c, i, j, n, r + U - 1, q + U - 1] (kernel rows padded
    to U*s, U = ceil(k / s)); a strided view then sets, for every output pixel, the U x U entries that
    land on it side by side, and one reduction adds them: zeros, a copy and a sum instead of zeros and
    k*k strided adds. The price is P, about 2.3 times the columns for a 3x3 kernel at stride 2.
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    u, yh, yw = -(-k // s), -(-h // s), -(-w // s)
    p = xp.zeros((c, u * s, u * s, n, yh + u - 1, yw + u - 1), dtype=cols.dtype)
    p[:, :k, :k, :, u - 1 : u - 1 + ho, u - 1 : u - 1 + wo] = cols.reshape(c, k, k, n, ho, wo)
    s_c, s_i, s_j, s_n, s_r, s_q = p.strides
    # view[c, n, Y, a, X, b, t, t2] = P[c, (U-1-t) s + a, (U-1-t2) s + b, n, Y + t, X + t2]
    view = xp.lib.stride_tricks.as_strided(
        p[:, (u - 1) * s :, (u - 1) * s :],
        shape=(c, n, yh, s, yw, s, u, u),
        strides=(s_c, s_n, s_r, s_i, s_q, s_j, s_r - s * s_i, s_q - s * s_j),
    )
    return view.sum(axis=(6, 7)).reshape(c, n, yh * s, yw * s)[:, :, :h, :w].transpose(1, 0, 2, 3)


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
    checked = []

    def gather() -> Any:
        out = col2im_gather(dcols, dshape, 3, 2)
        if not checked:  # a fast wrong answer is worth nothing: compare once, before the timed calls
            if float(xp.abs(out - lines(lambda: col2im(dcols, dshape, 3, 3, 2, 2))()).max()) > 1e-4:
                raise AssertionError("col2im_gather disagrees with col2im")
            checked.append(True)
        return out

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
        (
            "col2im, stride 2: zeros + 9 strided adds (the library's lines)",
            lines(lambda: col2im(dcols, dshape, 3, 3, 2, 2)),
        ),
        (
            "col2im, stride 2: zeros, copy, one sum (col2im_gather)",
            gather,
        ),
        ("matmul 64x576 @ 576x6272", lambda: w @ cols),
        ("matmul 32x32 @ 32x15 (a head)", lambda: h @ w_head.T),
    ]


def fused_variants(xp: Any) -> list[tuple[str, Callable[[], Any]]]:
    """CuPy only: minivae.kernels beside the lines they stand for, and cupy.fuse of ReLU's two lines."""
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.standard_normal((32, 64, 14, 14), dtype=np.float32))
    logits = xp.asarray(rng.standard_normal((32, 1, 28, 28), dtype=np.float32) * 3)
    target = xp.asarray(rng.random((32, 1, 28, 28), dtype=np.float32))
    dcols, dshape = xp.asarray(rng.standard_normal((288, 32 * 14 * 14), dtype=np.float32)), (32, 32, 29, 29)
    relu = ReLU()

    def relu_lines(x: Any) -> Any:
        mask = x > 0
        return x * mask, mask

    relu_fused = xp.fuse(kernel_name="relu_fwd_fused")(relu_lines)
    return [
        ("ReLU forward, the library's lines (2 operations)", lines(lambda: relu.forward(x))),
        ("ReLU forward, minivae.kernels.relu (1 kernel)", lambda: relu.forward(x)),
        ("ReLU forward, cupy.fuse of the same lines", lambda: relu_fused(x)),
        (
            "BCE value and gradient, the library's lines (15 operations)",
            lines(lambda: bce_with_logits(logits, target)),
        ),
        (
            "BCE value and gradient, minivae.kernels (kernel, sum, divide)",
            lambda: bce_with_logits(logits, target),
        ),
        ("col2im, stride 2, minivae.kernels.col2im (1 kernel)", lambda: col2im(dcols, dshape, 3, 3, 2, 2)),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--backend", nargs="+", default=None, help="numpy and/or cupy (default: every one present)"
    )
    p.add_argument("--calls", type=int, default=200, help="calls timed per operation")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    names = backends_present(args.backend)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        xp = get_backend(name)
        rows = operations(xp)
        if xp is not np:
            try:
                rows += fused_variants(xp)
            except Exception as e:  # noqa: BLE001  (a kernel that does not build is a result too)
                results.setdefault(backend_name(xp), {})["fused variants"] = f"failed to build: {e!r}"
        for label, fn in rows:
            try:
                cost: Any = round(per_call_us(fn, xp, args.calls), 2)
            except Exception as e:  # noqa: BLE001
                cost = f"failed: {e!r}"
            results.setdefault(backend_name(xp), {})[label] = cost
    width = max(len(k) for r in results.values() for k in r)
    print(f"| operation | {' | '.join(f'{n} (µs per call)' for n in results)} |")
    print(f"|---|{'---|' * len(results)}")
    for label in dict.fromkeys(k for r in results.values() for k in r):
        cells = [str(r.get(label, "-")) for r in results.values()]
        print(f"| {label:<{width}} | {' | '.join(cells)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
