"""Lesson 14: CPU against GPU. Time the training step on NumPy and CuPy; where the time goes; when the GPU pays.

The idea
--------
Every array operation in a training step (a matrix product, an exp, a sum, each Adam update) is one call
into NumPy on the CPU, or one (or a few) CUDA kernel launches on the GPU through CuPy. A step's time is then
roughly

    time = (number of operations) x (fixed cost per operation) + (arithmetic) / (throughput)

- On the GPU the fixed cost dominates small problems: each launch costs some microseconds of Python, CuPy and
  driver work, whatever the array size, and a step has a hundred or two operations (142 for the conv VAE
  and 64 for the MLP on CuPy, 209 and 99 as NumPy runs them: python benchmarks/count_ops.py lists them).
  Below some batch size the step takes the same time however few images it holds: it is launch-bound.
  Anything that makes the host wait for the GPU (float(loss), a NaN check, printing) adds a full round trip
  on top.
- With enough work per operation the arithmetic dominates and time grows with the batch: compute-bound.
  There a GPU does tens of TFLOP/s against a laptop CPU's tens to hundreds of GFLOP/s.
- On the CPU there is almost no fixed cost (microseconds per NumPy call), so it is compute-bound from small
  batches on, and time grows in proportion to the batch.

So the GPU pays off when each step has a lot of arithmetic: big batches, and convolutional models (lesson 9's
conv VAE does 35 times the multiply-adds per image of the MLP). For the small MLP at batch 128 a GPU may be
barely faster than a CPU; for the conv VAE it is many times faster.

Measuring honestly
------------------
- CuPy returns before the GPU finishes: call minivae.backend.synchronize(xp) before reading the clock.
- Warm up first: the first CuPy calls compile kernels and fill the memory pool.
- Check the two backends agree (same weights, same batch, same eps) before timing them: a fast wrong
  answer is worth nothing.
- On the CPU, BLAS runs its own threads. On a machine whose cores are busy with other work, threads fight
  for them and a matrix product can be ten times slower: OPENBLAS_NUM_THREADS=1 (or OMP_NUM_THREADS=1) then
  helps.

Time per step is measured here with minivae.training.loop.train_step as the training loop calls it: it checks the
loss and gradients for NaN/Inf (one host round trip a step on a GPU), and skips the check that the images
are finite and in [0, 1], which the loop makes once per data set; the breakdown below times forward, loss,
backward and the Adam update one by one.

What it looks like on a GPU (docs/performance.md has the tables, with the machine and the command behind
each number): on an NVIDIA H200 on 2026-11-28, minivae at commit f8b0513, the conv step took 4.48 ms at
batch 32, 5.95 at 128 and 5.04 at 256, against PyTorch CUDA's 5.02, 6.35 and 5.62 ms (the current code makes more operations a
step than that commit, and has not run on a GPU). Eight times the arithmetic, the same time:
launch-bound. NumPy on that machine's 16 cores took 525.72 ms at batch 256, 104 times CuPy's step. Each
CuPy operation cost 11 to 25 microseconds there, on 480 numbers or on 400,000, so what makes such a step
faster is fewer launches: minivae/kernels.py runs a few lines as one CuPy kernel each (col2im, ReLU's
forward, BCE, KL and Adam's update), and with the first four on, the conv step took 0.75 to 0.82 of its
time with them off. The step is bound by the host: Python and CuPy issue the launches no faster than the
GPU runs them, so the host's speed sets the step's, and as it drifted the same step took from 3.8 to 5.6
ms within two minutes on one machine. That is why the benchmark (benchmarks/bench_train_step.py)
interleaves the two things it compares, so that both see the same drift. On the CPU, laying all
parameters end to end for one Adam update is slower (one big array falls out of cache between Adam's
passes), so there the update stays per parameter: what pays on one machine can cost on the other, and
only a measurement tells.

Without CuPy (or a GPU) the lesson times NumPy only and says why CuPy was skipped; --backend cupy makes CuPy
required.

What to look at
---------------
- the agreement check (expect < 1e-5) when CuPy is present;
- the table: ms per step, images per second and GFLOP/s against the batch size;
- 14_step_time.png: time per step against batch size, log-log. A slope-1 line is compute-bound; a flat
  line is launch-bound; where the GPU line crosses below the CPU line the GPU starts to pay.
- the breakdown: which phase takes the time at a small and at a large batch. Adam's share is large at
  small batches: its cost is per parameter (several passes over 650,000 numbers), whatever the batch.
"""

from __future__ import annotations

import os
import platform
import time

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.backend import cupy_available, get_backend, synchronize, to_numpy
from minivae.models import build_model
from minivae.nn import Conv2d, ConvTranspose2d, Linear
from minivae.nn.gradcheck import rel_error
from minivae.nn.losses import vae_loss
from minivae.nn.optim import Adam
from minivae.training.loop import train_step

LATENT = {"mlp": 20, "conv": 15}


def setup_step(arch: str, batch: int, xp):
    """A model, its optimizer and one fixed batch (x, eps) on the backend, all from seed 0."""
    model = build_model(arch, LATENT[arch], seed=0).to(xp)
    opt = Adam(model.named_parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.random((batch, 1, 28, 28), dtype=np.float32))
    eps = xp.asarray(rng.standard_normal((batch, LATENT[arch]), dtype=np.float32))
    return model, opt, x, eps


def flops_per_step(model, x, eps) -> float:
    """Floating-point operations of one training step, from the shapes each layer cached in a forward:
    2 per multiply-add, and backward costs twice the forward (one product for dW, one for dx)."""
    model.forward(x, eps=eps)
    macs = 0
    for _, layer in walk(model):
        if isinstance(layer, Linear):  # caches x (N, in)
            macs += layer.x.size * layer.out_features
        elif isinstance(layer, Conv2d):  # caches cols (C_in kH kW, N H_out W_out)
            macs += layer.cols.size * layer.out_channels
        elif isinstance(layer, ConvTranspose2d):  # caches x_mat (C_in, N H W)
            macs += layer.x_mat.size * int(np.prod(layer.params["weight"].shape[1:]))
    return 2.0 * 3.0 * macs


def walk(module, prefix=""):
    """(dotted name, module) for a module and everything inside it."""
    yield prefix, module
    for name, child in module.children():
        yield from walk(child, f"{prefix}{name}.")


def time_steps(arch: str, batch: int, xp, min_time: float, max_reps: int = 200) -> float:
    """Seconds per train_step, after 2 warm-up steps, repeated until min_time has passed."""
    model, opt, x, eps = setup_step(arch, batch, xp)
    model.check_input(x)  # once, as the training loop checks its data sets
    for _ in range(2):
        train_step(model, opt, x, eps, 1.0, "elbo", check_values=False)
    synchronize(xp)
    reps, t0 = 0, time.perf_counter()
    while reps < max_reps and (reps == 0 or time.perf_counter() - t0 < min_time):
        train_step(model, opt, x, eps, 1.0, "elbo", check_values=False)
        reps += 1
        synchronize(xp)  # only matters for CuPy: the clock must not stop before the GPU does
    return (time.perf_counter() - t0) / reps


def breakdown(arch: str, batch: int, xp, reps: int) -> dict[str, float]:
    """Milliseconds in each phase of a step, synchronizing between phases."""
    model, opt, x, eps = setup_step(arch, batch, xp)
    phases = dict.fromkeys(("forward", "loss", "backward", "adam"), 0.0)
    for r in range(reps + 1):  # the first round is a warm-up
        synchronize(xp)
        t0 = time.perf_counter()
        logits, mu, logvar = model.forward(x, eps=eps)
        synchronize(xp)
        t1 = time.perf_counter()
        out = vae_loss(logits, x, mu, logvar, 1.0, "elbo")
        synchronize(xp)
        t2 = time.perf_counter()
        model.backward(out.dlogits, out.dmu, out.dlogvar)
        synchronize(xp)
        t3 = time.perf_counter()
        opt.step()
        synchronize(xp)
        t4 = time.perf_counter()
        if r:
            for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[k] += dt * 1e3 / reps
    return phases


def run() -> None:
    lesson = _common.setup(__file__, __doc__)
    ok, why = cupy_available()
    backends = {"numpy": np}
    if ok:
        backends["cupy"] = get_backend("cupy")
    section("backends")
    print(f"   numpy on {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads visible, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")  # fmt: skip
    if ok:
        cp = backends["cupy"]
        name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
        print(f"   cupy on {name.decode() if isinstance(name, bytes) else name}")
    else:
        print(f"   CuPy timing skipped: {why}")
        print(
            "   (the NumPy half of the lesson still runs; on a machine with an NVIDIA GPU, "
            "install CuPy to compare)"
        )

    batches = {
        "mlp": lesson.pick(smoke=[16], default=[16, 64, 256, 1024], full=[16, 64, 256, 1024, 4096]),
        "conv": lesson.pick(smoke=[4], default=[8, 32], full=[8, 32, 128, 512]),
    }
    min_time = lesson.pick(smoke=0.02, default=0.4, full=2.0)

    if "cupy" in backends:
        section("check before timing: one step on each backend from the same weights and batch")
        for arch in ("mlp", "conv"):
            losses, grads = {}, {}
            for bname, xp in backends.items():
                model, opt, x, eps = setup_step(arch, 8, xp)
                out, _ = train_step(model, opt, x, eps, 1.0, "elbo")
                losses[bname] = float(out.total)
                grads[bname] = to_numpy(model.fc_mu.grads["weight"])
            expect(
                f"{arch}: relative loss difference numpy vs cupy",
                abs(losses["numpy"] - losses["cupy"]) / abs(losses["numpy"]),
                hi=1e-5,
                fmt=".1e",
            )
            expect(
                f"{arch}: fc_mu.weight gradient, numpy vs cupy",
                rel_error(grads["numpy"], grads["cupy"]),
                hi=1e-4,
                fmt=".1e",
            )

    section("time per training step")
    print("   arch  batch  backend   ms/step    images/s   GFLOP/s")
    results = {}
    for arch, bs in batches.items():
        for bname, xp in backends.items():
            for batch in bs:
                sec = time_steps(arch, batch, xp, min_time)
                model, _, x, eps = setup_step(arch, batch, xp)
                gflops = flops_per_step(model, x, eps) / sec / 1e9
                results[(arch, bname, batch)] = sec
                print(
                    f"   {arch:4s}  {batch:5d}  {bname:7s}  {sec * 1e3:8.2f}  "
                    f"{batch / sec:10.0f}  {gflops:8.1f}"
                )
    mlp_b = batches["mlp"]
    if len(mlp_b) > 1:
        ratio = results[("mlp", "numpy", mlp_b[-1])] / results[("mlp", "numpy", mlp_b[0])]
        expect(
            f"numpy: time ratio batch {mlp_b[-1]} / {mlp_b[0]} (batches {mlp_b[-1] // mlp_b[0]}x: compute-bound)",
            ratio,
            lo=(mlp_b[-1] / mlp_b[0]) / 8,
            fmt=".1f",
        )
    if "cupy" in backends and len(mlp_b) > 1:
        ratio = results[("mlp", "cupy", mlp_b[1])] / results[("mlp", "cupy", mlp_b[0])]
        expect(
            f"cupy: time ratio batch {mlp_b[1]} / batch {mlp_b[0]} (flat: launch-bound)",
            ratio,
            hi=2.0,
            fmt=".2f",
        )
        for arch, bs in batches.items():
            b = bs[-1]
            speedup = results[(arch, "numpy", b)] / results[(arch, "cupy", b)]
            print(f"   {arch} at batch {b}: the GPU is {speedup:.1f}x faster than the CPU")

    section("where the time goes (ms per phase)")
    reps = lesson.pick(smoke=1, default=5, full=20)
    for bname, xp in backends.items():
        cases = dict.fromkeys(
            (("mlp", batches["mlp"][0]), ("mlp", batches["mlp"][-1]), ("conv", batches["conv"][-1]))
        )
        for arch, batch in cases:
            ph = breakdown(arch, batch, xp, reps)
            total = sum(ph.values())
            parts = ", ".join(f"{k} {v:.2f} ({100 * v / total:.0f}%)" for k, v in ph.items())
            print(f"   {bname:5s} {arch:4s} batch {batch:4d}: {parts}")

    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    for i, arch in enumerate(batches):
        for bname, style in (("numpy", "-o"), ("cupy", "--s")):
            if bname in backends:
                bs = batches[arch]
                ax.loglog(
                    bs,
                    [results[(arch, bname, b)] * 1e3 for b in bs],
                    style,
                    color=f"C{i}",
                    label=f"{arch}, {bname}",
                )
    b_all = np.array(sorted({b for bs in batches.values() for b in bs}), dtype=float)
    b_ref = batches["mlp"][-1]  # a slope-1 line through the largest MLP batch on NumPy
    t_ref = results[("mlp", "numpy", b_ref)] * 1e3
    ax.loglog(
        b_all, t_ref * b_all / b_ref, ":", color="gray", lw=1, label="slope 1 (time proportional to batch)"
    )
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per training step")
    title = "training step time" + ("" if "cupy" in backends else " (NumPy only: CuPy not available here)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    lesson.savefig(fig, "step_time", "ms per step against batch size, per model and backend")


if __name__ == "__main__":
    _common.main(run)
