"""minivae.kernels on against off: the same training step, the two timed in alternating blocks of steps.

    python benchmarks/ab_kernels.py --backend cupy                 # conv, batches 32 128 256
    python benchmarks/ab_kernels.py --backend cupy --arch mlp --batch 32

Two runs of bench_train_step.py, one with MINIVAE_FUSED=0, are minutes apart, and a GPU machine's host
speed drifts by more than the kernels save (README, Results). Here both steps run in one process on
their own copies of the model, interleaved five steps at a time, so the drift falls on both. On NumPy
the kernels are never used, and the two columns time the same code (a check of the method: expect 1.0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from minivae import kernels
from minivae.backend import get_backend, synchronize
from minivae.training.loop import train_step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import bench_minivae, setup  # noqa: E402


def kernels_off_step(arch: str, batch: int, xp) -> tuple:
    """(step, sync) of a second copy of the benchmark's model, stepped with minivae.kernels off."""
    model, opt, x, eps = setup(arch, batch, xp)

    def step() -> None:
        with kernels.off():
            train_step(model, opt, x, eps, 1.0, "elbo", check_finite=False, check_values=False)

    return step, lambda: synchronize(xp)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", default=["conv"], choices=["mlp", "conv"])
    p.add_argument("--batch", nargs="+", type=int, default=[32, 128, 256])
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    xp = get_backend(args.backend)
    print("| arch | batch | kernels on (ms/step) | kernels off (ms/step) | on / off |")
    print("|---|---|---|---|---|")
    for arch in args.arch:
        for batch in args.batch:
            off = kernels_off_step(arch, batch, xp)
            on_times, _, off_times = bench_minivae(arch, batch, xp, args.warmup, args.steps, off)
            on_ms, off_ms = (statistics.median(t) * 1e3 for t in (on_times, off_times))
            print(f"| {arch} | {batch} | {on_ms:.2f} | {off_ms:.2f} | {on_ms / off_ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
