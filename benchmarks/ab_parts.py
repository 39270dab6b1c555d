"""Interleaved A/B of NumPy's passes in parts on the BLAS threads' cores (minivae.threads.in_parts: im2col's
copy, col2im's adds, the BCE's rows, Adam's update) against the same passes whole, inside the training step.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ab_parts.py --arch mlp conv --batch 32 128 256

Two copies of bench_train_step.py's model step in alternating blocks of 5 steps, one with the passes cut into
as many parts as there are BLAS threads, one with every pass whole (threads.set_parts(1)), so both see the
same drift in the machine's speed. Each round prints the median step times and parts / whole, and checks that
the two copies' weights are still equal bit for bit (a part computes its elements as the whole pass does).

Both copies run with OpenBLAS's idle threads going to sleep soon after a product, as `import minivae` asks
when it comes before NumPy's import (OPENBLAS_THREAD_TIMEOUT, minivae.threads). The step as it ran before
that, threads spinning and passes whole, is `OPENBLAS_THREAD_TIMEOUT=28 python benchmarks/bench_train_step.py`
(28 is OpenBLAS's default); its runs alternate with plain runs of the same command.
"""

from __future__ import annotations

import minivae.threads as threads  # first: before NumPy loads OpenBLAS (minivae.threads)

# isort: split
import argparse
import statistics
import sys

import numpy as np
from bench_train_step import interleaved, setup, warm

from minivae.training.loop import train_step


def step_of(arch: str, batch: int, n_parts: int):
    """(step, sync) of a fresh model copy whose passes run in n_parts parts (at most the BLAS threads)."""
    model, opt, x, eps = setup(arch, batch, np)

    def step() -> None:
        before = threads.parts()
        threads.set_parts(n_parts)
        train_step(model, opt, x, eps, 1.0, "elbo", check_finite=False, check_values=False)
        threads.set_parts(before)

    return (step, lambda: None), model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["mlp", "conv"])
    ap.add_argument("--batch", nargs="+", type=int, default=[32, 128, 256])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: minivae's policy)")
    args = ap.parse_args()
    n = threads.apply(args.threads)
    print(f"BLAS threads: {n}; passes in {threads.parts()} parts")
    if threads.parts() < 2:
        print(
            "nothing to compare: passes stay whole here (one BLAS thread, a BLAS other than OpenBLAS, or "
            "OPENBLAS_THREAD_TIMEOUT above 20: its idle threads spin); see minivae.threads",
            file=sys.stderr,
        )
        return 2
    for arch in args.arch:
        for batch in args.batch:
            ratios = []
            for r in range(args.rounds):
                a_run, a_model = step_of(arch, batch, n)
                b_run, b_model = step_of(arch, batch, 1)
                warm([a_run, b_run], 3)
                a, b = (statistics.median(t) * 1e3 for t in interleaved([a_run, b_run], args.steps))
                same = all(
                    np.array_equal(pa, pb)
                    for (_, pa, _), (_, pb, _) in zip(a_model.named_parameters(), b_model.named_parameters())
                )
                ratios.append(a / b)
                print(
                    f"{arch} @{batch} round {r + 1}: in {n} parts {a:.2f} ms, whole {b:.2f} ms, {a / b:.3f}; "
                    f"weights bit-identical: {same}",
                    flush=True,
                )
            print(f"{arch} @{batch}: parts / whole, median of {args.rounds}: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
