"""Interleaved A/B of Adam's update on the CPU: minivae's Adam (nn.optim.adam_in_blocks: its three lines in
place, over slices of --block elements) against the three lines as Adam._update writes them (15 passes, each
into a fresh temporary the size of the parameter), inside the whole training step.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ab_adam.py --rounds 5
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ab_adam.py --arch mlp --block 8192 32768 1000000000

Two copies of bench_train_step.py's model step in alternating blocks of 5 steps, so both see the same
drift in the machine's speed; each round prints the median step times and in blocks / three lines, and
checks that the two copies' weights are still equal bit for bit (adam_in_blocks runs the same operations
in the same order). A --block larger than every parameter is the in-place form without slicing.
"""

from __future__ import annotations

import minivae  # noqa: F401  first: before NumPy loads OpenBLAS, as in `minivae train` (minivae.threads)

# isort: split
import argparse
import math
import statistics

import numpy as np
from bench_train_step import interleaved, setup, warm

from minivae.nn import optim
from minivae.nn.optim import Adam
from minivae.threads import apply
from minivae.training.loop import train_step


def adam_three_lines(self: Adam, state: dict, p: np.ndarray, g: np.ndarray) -> None:
    """Adam._update as its three lines read, with fresh temporaries (the path CuPy takes without kernels)."""
    if not state:
        state["exp_avg"], state["exp_avg_sq"] = np.zeros_like(p), np.zeros_like(p)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    (b1, b2), lr = self.betas, self.lr
    bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * (g * g)
    p -= lr / bc1 * m / (np.sqrt(v) / math.sqrt(bc2) + self.eps)


def adam_blocks_of(block: int):
    """Adam._update with adam_in_blocks at the given block size."""

    def update(self: Adam, state: dict, p: np.ndarray, g: np.ndarray) -> None:
        if not state:
            state["exp_avg"], state["exp_avg_sq"] = np.zeros_like(p), np.zeros_like(p)
        (b1, b2), lr = self.betas, self.lr
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        optim.adam_in_blocks(
            p, g, state["exp_avg"], state["exp_avg_sq"], b1, b2, bc1, bc2, lr, self.eps, block
        )

    return update


def step_of(arch: str, batch: int, update):
    model, opt, x, eps = setup(arch, batch, np)
    opt._update = update.__get__(opt)

    def step() -> None:
        train_step(model, opt, x, eps, 1.0, "elbo", check_finite=False, check_values=False)

    return (step, lambda: None), model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["mlp", "conv"])
    ap.add_argument("--batch", nargs="+", type=int, default=[32, 128])
    ap.add_argument(
        "--block", nargs="+", type=int, default=[optim.ADAM_BLOCK], help="adam_in_blocks' slice sizes"
    )
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: minivae's policy)")
    args = ap.parse_args()
    print(f"BLAS threads: {apply(args.threads)}")
    for arch in args.arch:
        for batch in args.batch:
            for block in args.block:
                ratios = []
                for r in range(args.rounds):
                    (a_run, a_model) = step_of(arch, batch, adam_blocks_of(block))
                    (b_run, b_model) = step_of(arch, batch, adam_three_lines)
                    warm([a_run, b_run], 3)
                    a, b = (statistics.median(t) * 1e3 for t in interleaved([a_run, b_run], args.steps))
                    same = all(
                        np.array_equal(pa, pb)
                        for (_, pa, _), (_, pb, _) in zip(
                            a_model.named_parameters(), b_model.named_parameters()
                        )
                    )
                    ratios.append(a / b)
                    print(
                        f"{arch} @{batch} block {block} round {r + 1}: in blocks {a:.2f} ms, three lines {b:.2f} ms, "
                        f"{a / b:.3f}; weights bit-identical: {same}"
                    )
                print(
                    f"{arch} @{batch} block {block}: in blocks / three lines, median of {args.rounds}: "
                    f"{statistics.median(ratios):.3f}"
                )


if __name__ == "__main__":
    main()
