"""Interleaved A/B of Adam's update on the CPU: minivae.nn.optim.adam_in_place against the three lines it
stands for (fresh temporaries), inside the whole training step, on one machine in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ab_adam.py --rounds 5

Two copies of bench_train_step.py's model step in alternating blocks of 5 steps, so both see the same
drift in the machine's speed; each round prints the median step times and in-place / three lines. The two
give the same weights bit for bit (tests/test_optim.py), so only the time differs.
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np
from bench_train_step import interleaved, setup, warm

from minivae.nn.optim import Adam
from minivae.threads import apply
from minivae.training.loop import train_step


def three_lines(self: Adam, state: dict, p: np.ndarray, g: np.ndarray) -> None:
    """Adam._update as the formula reads, each line's temporaries fresh (the B side)."""
    if not state:
        state["exp_avg"], state["exp_avg_sq"] = np.zeros_like(p), np.zeros_like(p)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    (b1, b2), lr = self.betas, self.lr
    bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * (g * g)
    p -= lr / bc1 * m / (np.sqrt(v) / math.sqrt(bc2) + self.eps)


def step_of(arch: str, batch: int, in_place: bool):
    model, opt, x, eps = setup(arch, batch, np)
    if not in_place:
        opt._update = three_lines.__get__(opt)

    def step() -> None:
        train_step(model, opt, x, eps, 1.0, "elbo", check_finite=False, check_values=False)

    return step, lambda: None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["mlp", "conv"])
    ap.add_argument("--batch", nargs="+", type=int, default=[32, 128])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: minivae's policy)")
    args = ap.parse_args()
    n = apply(args.threads)
    print(f"BLAS threads: {n}")
    for arch in args.arch:
        for batch in args.batch:
            ratios = []
            for r in range(args.rounds):
                runs = [step_of(arch, batch, True), step_of(arch, batch, False)]
                warm(runs, 3)
                a, b = (statistics.median(t) * 1e3 for t in interleaved(runs, args.steps))
                ratios.append(a / b)
                print(
                    f"{arch} @{batch} round {r + 1}: in place {a:.2f} ms, three lines {b:.2f} ms, {a / b:.3f}"
                )
            print(
                f"{arch} @{batch}: in place / three lines, median of {args.rounds}: {statistics.median(ratios):.3f}"
            )


if __name__ == "__main__":
    main()
