"""The seed study's runs on one GPU, several at once, under a deadline (issue 4 on a lent GPU).

    python benchmarks/seed_study_gpu.py --out runs/seed_study_gpu --parallel 6 --deadline 400

At batch 32 a CuPy training step is bound by kernel launches, not arithmetic: one process leaves the
GPU mostly idle, so --parallel processes share it (each its own `minivae train --backend cupy`).
Runs go in priority order: every seed of the first latent size (issue 4: "latent 15 with 3 seeds
comes first"), then the other latent sizes seed by seed, each for the seed's architecture (ReLU
bottleneck, runs/<out>/relu) and the LeakyReLU variant (runs/<out>/leaky). A run starts only while
the time left exceeds the longest finished run (so nothing starts that cannot finish); at the
deadline the runs still going get SIGTERM, which saves last.npz (resume with `minivae train --resume`).
Afterwards `minivae sweep --preset seed --latents ... --seeds 3 --out <out>/relu` (and seed-leaky)
finds the finished runs and writes the comparison without training them again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"relu": "seed", "leaky": "seed-leaky"}  # run folder -> --preset


def queue(
    latents: list[int], seeds: int, seed_major: bool = False, skip: tuple[str, ...] = ()
) -> list[tuple[str, int, int]]:
    """(variant, latent, seed) in priority order: all seeds of latents[0], then the rest seed by seed
    (seed_major: every latent size's seed 0 first, then seed 1, ...); runs named in skip
    ("relu/z5_s0", finished elsewhere) left out."""
    if seed_major:
        runs = [(v, z, s) for s in range(seeds) for z in latents for v in VARIANTS]
    else:
        runs = [(v, latents[0], s) for s in range(seeds) for v in VARIANTS]
        runs += [(v, z, s) for s in range(seeds) for z in latents[1:] for v in VARIANTS]
    return [r for r in runs if f"{r[0]}/z{r[1]}_s{r[2]}" not in skip]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/seed_study_gpu")
    p.add_argument("--latents", nargs="+", type=int, default=[15, 5, 10, 20])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--parallel", type=int, default=6, help="runs sharing the GPU at once")
    p.add_argument("--deadline", type=float, default=3600.0, help="seconds from now; then stop")
    p.add_argument("--backend", default="cupy")
    p.add_argument(
        "--seed-major", action="store_true", help="seed 0 of every latent size first, then seed 1, ..."
    )
    p.add_argument(
        "--skip",
        nargs="+",
        default=[],
        metavar="VARIANT/zZ_sS",
        help="runs finished elsewhere (e.g. relu/z5_s0 trained on a CPU): not queued",
    )
    p.add_argument("--extra", default="", help="more `minivae train` flags, e.g. for a quick try on the CPU")
    args = p.parse_args()

    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    todo = queue(args.latents, args.seeds, args.seed_major, tuple(args.skip))
    running: dict[tuple[str, int, int], tuple[subprocess.Popen, float]] = {}
    status: dict[str, dict] = {}
    longest = 0.0
    t0 = time.monotonic()

    def left() -> float:
        return args.deadline - (time.monotonic() - t0)

    while todo or running:
        while todo and len(running) < args.parallel and left() > 1.1 * longest:
            variant, z, s = todo.pop(0)
            run = out / variant / f"z{z}_s{s}"
            if (run / "metrics.json").is_file():
                status[str(run)] = {"state": "done already"}
                continue
            cmd = [sys.executable, "-m", "minivae", "train", "--preset", VARIANTS[variant], "--latent", str(z), "--seed", str(s),
                   "--backend", args.backend, "--quiet"]  # fmt: skip
            cmd += (
                ["--resume", str(run)]
                if (run / "last.npz").is_file()
                else ["--out", str(run), *shlex.split(args.extra)]
            )
            log = open(out / "logs" / f"{variant}_z{z}_s{s}.log", "w")  # noqa: SIM115 (closed with the process)
            running[(variant, z, s)] = (
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env),
                time.monotonic(),
            )
            print(f"[{time.monotonic() - t0:6.0f}s] start {run}", flush=True)
        if not todo and not running:
            break
        if not running and todo:  # nothing running and nothing may start: out of time
            break
        time.sleep(2)
        if left() <= 0:  # out of time: SIGTERM makes a training run save last.npz at the step boundary
            for proc, _ in running.values():
                proc.send_signal(signal.SIGTERM)
            for proc, _ in running.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for key, (proc, started) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            if left() <= 0 and not (out / key[0] / f"z{key[1]}_s{key[2]}" / "metrics.json").is_file():
                rc = "stopped at the deadline"
            secs = time.monotonic() - started
            del running[key]
            run = out / key[0] / f"z{key[1]}_s{key[2]}"
            ok = rc == 0 and (run / "metrics.json").is_file()
            status[str(run)] = {"state": "done" if ok else f"failed: {rc}", "seconds": round(secs, 1)}
            if ok:
                longest = max(longest, secs)
            print(
                f"[{time.monotonic() - t0:6.0f}s] {status[str(run)]['state']} {run} ({secs:.0f} s)",
                flush=True,
            )
    for variant, z, s in todo:
        status[str(out / variant / f"z{z}_s{s}")] = {"state": "not started (no time left)"}
    (out / "status.json").write_text(json.dumps(status, indent=1))
    done = sum(v["state"].startswith("done") for v in status.values())
    print(f"{done} of {len(status)} runs finished; status in {out / 'status.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
