"""Interleaved A/B of Adam's update on the CPU: minivae's Adam (its three lines, fresh temporaries) against
the same arithmetic written in place into two scratch arrays, inside the whole training step.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ab_adam.py --rounds 5

Two copies of bench_train_step.py's model step in alternating blocks of 5 steps, so both see the same
drift in the machine's speed; each round prints the median step times and in place / three lines, and
checks that the two copies' weights are still equal bit for bit (the in-place form runs the same
operations in the same order). It measures what the in-place form would gain if minivae's Adam took it.
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


def adam_in_place(self: Adam, state: dict, p: np.ndarray, g: np.ndarray) -> None:
    """Adam._update's three lines with no array allocated: Python evaluates `b1 * m + (1 - b1) * g` as
    two products and a sum, each into a fresh temporary, then copies it into m; here m *= b1 is the
    first product, s = (1 - b1) * g the second and m += s the sum, and so on, each rounding as it did."""
    if not state:
        state["exp_avg"], state["exp_avg_sq"] = np.zeros_like(p), np.zeros_like(p)
        state["scratch"] = (np.empty_like(p), np.empty_like(p))
    m, v, (s, t) = state["exp_avg"], state["exp_avg_sq"], state["scratch"]
    (b1, b2), lr = self.betas, self.lr
    bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
    m *= b1
    np.multiply(g, 1 - b1, out=s)
    m += s  # m = b1 m + (1 - b1) g
    v *= b2
    np.multiply(g, g, out=s)
    s *= 1 - b2
    v += s  # v = b2 v + (1 - b2) g^2
    np.multiply(m, lr / bc1, out=t)
    np.sqrt(v, out=s)
    s /= math.sqrt(bc2)
    s += self.eps
    t /= s
    p -= t  # p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)


def step_of(arch: str, batch: int, in_place: bool):
    model, opt, x, eps = setup(arch, batch, np)
    if in_place:
        opt._update = adam_in_place.__get__(opt)

    def step() -> None:
        train_step(model, opt, x, eps, 1.0, "elbo", check_finite=False, check_values=False)

    return (step, lambda: None), model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["mlp", "conv"])
    ap.add_argument("--batch", nargs="+", type=int, default=[32, 128])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: minivae's policy)")
    args = ap.parse_args()
    print(f"BLAS threads: {apply(args.threads)}")
    for arch in args.arch:
        for batch in args.batch:
            ratios = []
            for r in range(args.rounds):
                (a_run, a_model), (b_run, b_model) = step_of(arch, batch, True), step_of(arch, batch, False)
                warm([a_run, b_run], 3)
                a, b = (statistics.median(t) * 1e3 for t in interleaved([a_run, b_run], args.steps))
                same = all(
                    np.array_equal(pa, pb)
                    for (_, pa, _), (_, pb, _) in zip(a_model.named_parameters(), b_model.named_parameters())
                )
                ratios.append(a / b)
                print(
                    f"{arch} @{batch} round {r + 1}: in place {a:.2f} ms, three lines {b:.2f} ms, "
                    f"{a / b:.3f}; weights bit-identical: {same}"
                )
            print(
                f"{arch} @{batch}: in place / three lines, median of {args.rounds}: {statistics.median(ratios):.3f}"
            )


if __name__ == "__main__":
    main()
