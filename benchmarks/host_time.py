"""How much of a training step is the host's: the time to queue steps beside the time to finish them.

    python benchmarks/host_time.py --backend cupy                 # conv model, batch 32
    python benchmarks/host_time.py --backend cupy --profile 30    # and the 30 costliest functions

On CuPy, Python queues each kernel and returns; the GPU runs them behind it. When queueing N steps takes
as long as finishing them, the GPU waits on Python: the step is bound by the host (interpreter and
CuPy's dispatch), and a faster CPU, not a faster GPU, makes it quicker. --profile runs cProfile over
the same steps, sorted by time spent in each function itself.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

from minivae.backend import get_backend, synchronize
from minivae.training.loop import train_step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import setup  # noqa: E402  (the benchmark's own model, batch and noise)


def queued_and_done(arch: str, batch: int, backend: str, steps: int) -> tuple[float, float]:
    """(ms per step to queue `steps` steps, ms per step until they are done), after 3 warm-up steps."""
    xp = get_backend(backend)
    model, opt, x, eps = setup(arch, batch, xp)

    def step() -> None:
        train_step(model, opt, x, eps, 1.0, "elbo", check_finite=False, check_values=False)

    for _ in range(3):
        step()
    synchronize(xp)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    queued = time.perf_counter() - t
    synchronize(xp)
    done = time.perf_counter() - t
    return queued / steps * 1e3, done / steps * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="conv", choices=["mlp", "conv"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", type=int, default=0, metavar="N", help="also list the N costliest functions")
    args = p.parse_args()
    for _ in range(args.repeats):
        queued, done = queued_and_done(args.arch, args.batch, args.backend, args.steps)
        print(
            f"{args.arch} batch {args.batch} {args.backend}: queued in {queued:.2f} ms/step, done in {done:.2f}"
        )
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(queued_and_done, args.arch, args.batch, args.backend, args.steps)
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
