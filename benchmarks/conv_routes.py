"""Other routes to the conv step on the CPU, timed against the library's, so that a CPU where they pay shows it.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/conv_routes.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/conv_routes.py --batch 32 128 --rows 1 7 --rounds 5
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/conv_routes.py --step --batch 32 128 256

One layer (default): a 64-channel 3x3 stride-1 convolution at 14 x 14 (the conv VAE's encoder.5 and
encoder.7: 11.1 of the step's 17.4 GFLOP at batch 128), its forward, weight gradient and input
gradient, by three routes:
- im2col: minivae's Conv2d, forward then backward: the forward's columns (C*9 x 14*14*N floats, 58 MB
  at batch 128) cached for dW = dy_mat @ cols.T, and dx a convolution of dy with the flipped kernel.
- bands R: the same products over bands of R output rows: a band's columns (4.1 MB for one row at
  batch 128) are written and read back while they are still in cache, instead of 58 MB going out to
  memory and back. The weight gradient takes each band's columns again (caching them would be the 58 MB).
- shifted: no column matrix. Over the padded width Wp = W + 2, the padded image flattened to (C, Hp*Wp*N)
  holds every kernel offset (i, j) as a view, shifted by (i*Wp + j)*N floats, that BLAS reads in place:
      y_wide = sum_{i,j} W[:, :, i, j] @ shift(x_pad, i, j)     (C_out, H*Wp*N), two columns per row dropped
      dW[:, :, i, j] = dy_wide @ shift(x_pad, i, j).T            dy_wide: dy with zeros in those columns
      dx = the same sum as y, over dy padded, with the kernel flipped and its channels swapped.
  Nine products with K = C_in instead of one with K = 9*C_in, 1/7 more arithmetic (the dropped
  columns), and eight adds into y.
Each route's y, dW and dx are checked against the layer's first. In each round every route runs once
per call, in turn, --calls times; the table gives medians and each route over im2col.

--step: the whole conv training step (bench_train_step.py's), with the two Linear layers at the conv model's
boundaries (encoder.10, decoder.0) writing y and dx in the batch-last layout the convolutions keep
(y^T = W x^T and dx^T = W^T dy^T, so that no copy and no ReLU over mixed layouts follows), against the
library's Linear; two models in one process, their steps interleaved in blocks of 5.

Before timing, a few 2048 x 2048 products: on the 2-core AVX2 CPU, in a fresh process, this layer's
product took 42 to 47 ms until a square product had run (one of 256 x 256 is enough), and 25 to 28 ms
after it. The training step needs no such warm-up: its own products do it.
"""

from __future__ import annotations

import minivae  # noqa: F401  first: before NumPy loads OpenBLAS, as in `minivae train` (minivae.threads)

# isort: split
import argparse
import statistics
import time
from typing import Any

import numpy as np
from bench_train_step import describe_machine, gemm_rate, interleaved, setup, warm

from minivae.backend import keep_freed_memory
from minivae.nn import Conv2d, Linear
from minivae.nn.conv import batch_last, im2col
from minivae.nn.module import pad2d
from minivae.threads import apply
from minivae.training.loop import train_step

# ---------------------------------------------------------------------------------------- routes


def flipped(weight: Any) -> Any:
    """Conv2d's weight (C_out, C_in, k, k) as the kernel of its input gradient: flipped, channels swapped."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def conv_in_bands(x_pad: Any, weight: Any, rows: int) -> Any:
    """Stride-1 convolution of x_pad (N, C, Hp, Wp), batch-last, over bands of `rows` output rows.
    -> (C_out, Ho*Wo*N): the product's output as Conv2d's forward has it."""
    c_out, _, k, _ = weight.shape
    n, _, hp, wp = x_pad.shape
    ho, wo = hp - k + 1, wp - k + 1
    w_mat, y, band = weight.reshape(c_out, -1), np.empty((c_out, ho * wo * n), x_pad.dtype), wo * n
    for r in range(0, ho, rows):
        rr = min(rows, ho - r)
        cols = im2col(x_pad[:, :, r : r + rr + k - 1], k, k, 1, 1)  # (C_in*k*k, rr*Wo*N): this band's
        np.matmul(w_mat, cols, out=y[:, r * band : (r + rr) * band])
    return y


def dw_in_bands(x_pad: Any, dy_mat: Any, k: int, rows: int) -> Any:
    """dW = dy_mat @ cols.T summed band by band, each band's columns made again. -> (C_out, C_in*k*k)."""
    n, _, hp, wp = x_pad.shape
    ho, band = hp - k + 1, (wp - k + 1) * n
    dw = 0
    for r in range(0, ho, rows):
        rr = min(rows, ho - r)
        cols = im2col(x_pad[:, :, r : r + rr + k - 1], k, k, 1, 1)
        dw = dw + dy_mat[:, r * band : (r + rr) * band] @ cols.T
    return dw


def wide_padded(x: Any, p: int, k: int) -> Any:
    """x (N, C, H, W) zero-padded by p and flattened batch-last: (C, Hp*Wp*N + (k-1)*N), the tail so that
    the last shifted view stays inside."""
    n, c, h, w = x.shape
    hp, wp = h + 2 * p, w + 2 * p
    flat = np.zeros((c, (hp * wp + k - 1) * n), x.dtype)
    flat[:, : hp * wp * n].reshape(c, hp, wp, n)[:, p : p + h, p : p + w] = x.transpose(1, 2, 3, 0)
    return flat


def shift(flat: Any, i: int, j: int, wp: int, n: int, length: int) -> Any:
    """The padded image seen from kernel offset (i, j): (C, length), a view BLAS reads in place."""
    start = (i * wp + j) * n
    return flat[:, start : start + length]


def conv_shifted(x: Any, weight: Any, p: int) -> tuple[Any, Any]:
    """Stride-1 convolution as nine shifted products. -> y (C_out, Ho, Wo, N), a view of the wide result,
    and the flattened padded x, which the weight gradient reads again (as Conv2d keeps its columns)."""
    c_out, _, k, _ = weight.shape
    n, _, h, w = x.shape
    ho, wo, wp = h + 2 * p - k + 1, w + 2 * p - k + 1, w + 2 * p
    flat, length = wide_padded(x, p, k), ho * wp * n
    y = weight[:, :, 0, 0] @ shift(flat, 0, 0, wp, n, length)
    for i in range(k):
        for j in range(k):
            if i or j:
                y += weight[:, :, i, j] @ shift(flat, i, j, wp, n, length)
    return y.reshape(c_out, ho, wp, n)[:, :, :wo], flat


def dw_shifted(flat: Any, dy: Any, k: int) -> Any:
    """dW[:, :, i, j] = dy_wide @ shift(x_pad, i, j).T, nine products, no columns; flat: conv_shifted's
    padded x. -> (C_out, C_in, k, k)."""
    n, c_out, ho, wo = dy.shape
    wp = wo + k - 1  # stride 1: the padded width
    length = ho * wp * n
    dy_wide = np.zeros((c_out, ho, wp, n), dy.dtype)
    dy_wide[:, :, :wo] = dy.transpose(1, 2, 3, 0)
    dy_wide = dy_wide.reshape(c_out, -1)
    dw = np.empty((c_out, flat.shape[0], k, k), dy.dtype)
    for i in range(k):
        for j in range(k):
            dw[:, :, i, j] = dy_wide @ shift(flat, i, j, wp, n, length).T
    return dw


def layer_routes(layer: Conv2d, x: Any, dy: Any, rows: list[int]) -> dict[str, Any]:
    """Each route as a function returning (y, dW, dx), y and dx as (C, H, W, N) arrays."""
    w, k, p, n = layer.params["weight"], layer.kernel_size[0], layer.padding[0], x.shape[0]
    c_out, c_in = w.shape[:2]
    hw = x.shape[2:]
    as_chwn = lambda a: a.transpose(1, 2, 3, 0)  # noqa: E731  (N, C, H, W) -> its batch-last memory order
    dy_mat = as_chwn(dy).reshape(c_out, -1)

    def im2col_route():
        y = layer.forward(x)
        dx = layer.backward(dy)
        return as_chwn(y), layer.grads["weight"], as_chwn(dx)

    def bands_route(r: int):
        def run():
            x_pad = pad2d(x, (p, p, p, p))
            y = conv_in_bands(x_pad, w, r)
            y += layer.params["bias"][:, None]
            dw = dw_in_bands(x_pad, dy_mat, k, r).reshape(w.shape)
            dx = conv_in_bands(pad2d(dy, (k - 1 - p,) * 4), flipped(w), r)
            return y.reshape(c_out, *hw, n), dw, dx.reshape(c_in, *hw, n)

        return run

    def shifted_route():
        y, x_flat = conv_shifted(x, w, p)
        y += layer.params["bias"][:, None, None, None]
        return y, dw_shifted(x_flat, dy, k), conv_shifted(dy, flipped(w), k - 1 - p)[0]

    return {"im2col": im2col_route, **{f"bands {r}": bands_route(r) for r in rows}, "shifted": shifted_route}


def bench_layer(batch: int, rows: list[int], calls: int, rounds: int) -> None:
    rng = np.random.default_rng(0)
    layer = Conv2d(64, 64, 3, padding=1, rng=rng)
    x = batch_last(rng.standard_normal((batch, 64, 14, 14), dtype=np.float32))
    dy = batch_last(rng.standard_normal((batch, 64, 14, 14), dtype=np.float32))
    routes = layer_routes(layer, x, dy, rows)
    ref = [np.array(a) for a in routes["im2col"]()]
    for name, route in routes.items():
        for what, a, b in zip(("y", "dW", "dx"), route(), ref):
            err = float(np.abs(a - b).max() / np.abs(b).max())
            assert err < 1e-5, f"{name}: {what} off by {err:.1e} relative"
    medians: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(rounds):
        times: dict[str, list[float]] = {name: [] for name in routes}
        for _ in range(calls):
            for name, route in routes.items():
                t = time.perf_counter()
                route()
                times[name].append(time.perf_counter() - t)
        for name in routes:
            medians[name].append(statistics.median(times[name]) * 1e3)
    base = medians["im2col"]
    print(f"\none 64-channel 3x3 layer, 14 x 14, batch {batch}: y, dW, dx in ms, median of {calls} calls")
    print("| route | " + " | ".join(f"round {r + 1}" for r in range(rounds)) + " | / im2col, each round |")
    print("|---|" + "---|" * (rounds + 1))
    for name, ms in medians.items():
        ratios = ", ".join(f"{m / b:.2f}" for m, b in zip(ms, base))
        print(f"| {name} | " + " | ".join(f"{m:.1f}" for m in ms) + f" | {ratios} |")


# ------------------------------------------------------------------------------------ whole step


class BatchLastLinear(Linear):
    """Linear whose y and dx come out laid out (features, N), the batch innermost, as the convolutions keep
    their arrays: the same products transposed, y^T = W x^T and dx^T = W^T dy^T, which BLAS writes in
    that order at no cost."""

    def forward(self, x: Any) -> Any:
        self.x = x
        return (self.params["weight"] @ x.T).T + self.params["bias"]  # (N, out), stored (out, N)

    def backward(self, dy: Any) -> Any:
        self.grads["weight"][...] = dy.T @ self.x
        self.grads["bias"][...] = dy.sum(axis=0)
        return (self.params["weight"].T @ dy.T).T if self.needs_input_grad else None


def conv_step(batch: int, boundaries_batch_last: bool) -> tuple[Any, Any]:
    model, opt, x, eps = setup("conv", batch, np)
    if boundaries_batch_last:
        model.encoder.layers[10].__class__ = BatchLastLinear  # Linear(12544, 32), after the Flatten
        model.decoder.layers[0].__class__ = BatchLastLinear  # Linear(latent, 12544), before the Reshape

    def step() -> None:
        train_step(model, opt, x, eps, 1.0, "elbo", check_finite=False, check_values=False)

    return step, lambda: None


def bench_step(batch: int, steps: int, rounds: int) -> None:
    ratios = []
    for r in range(rounds):
        runs = [conv_step(batch, True), conv_step(batch, False)]
        warm(runs, 3)
        new, old = (statistics.median(t) * 1e3 for t in interleaved(runs, steps))
        ratios.append(new / old)
        print(f"conv step @{batch}, round {r + 1}: batch-last boundaries {new:.1f} ms, library {old:.1f} ms")
    each = ", ".join(f"{q:.3f}" for q in ratios)
    print(f"conv step @{batch}: batch-last boundaries / library, each round: {each}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", nargs="+", type=int, default=[128])
    ap.add_argument("--rows", nargs="+", type=int, default=[1, 2, 7], help="band heights, in output rows")
    ap.add_argument("--calls", type=int, default=11, help="calls of each route a round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--step", action="store_true", help="the whole step, Linear boundaries batch-last or not")
    ap.add_argument("--steps", type=int, default=20, help="with --step: timed steps of each model a round")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: minivae's policy)")
    args = ap.parse_args()
    keep_freed_memory()  # as the training loop runs
    n_threads = apply(args.threads)
    for line in describe_machine()[1]:
        print(line)
    print(f"BLAS threads: {n_threads}; float32 GEMM {gemm_rate(np):.0f} GFLOP/s (2048 x 2048; the warm-up)")
    for batch in args.batch:
        if args.step:
            bench_step(batch, args.steps, args.rounds)
        else:
            bench_layer(batch, args.rows, args.calls, args.rounds)


if __name__ == "__main__":
    main()
