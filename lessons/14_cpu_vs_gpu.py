# %% [markdown]
# # Lesson 14: CPU against GPU. Time the training step on NumPy and CuPy; where the time goes; when the GPU pays.
#
# ## The idea
#
# Every array operation in a training step (a matrix product, an exp, a sum, each Adam update) is one call
# into NumPy on the CPU, or one (or a few) CUDA kernel launches on the GPU through CuPy. A step's time is
# then roughly
#
#     time = (number of operations) x (fixed cost per operation) + (arithmetic) / (throughput)
#
# - On the GPU the fixed cost dominates small problems. Each launch costs some microseconds of Python,
#   CuPy and driver work, whatever the array size, and a step has a hundred or two operations
#   (`python benchmarks/count_ops.py` counts them). Below some batch size the step takes the same time
#   however few images it holds: it is **launch-bound**. Anything that makes the host wait for the GPU
#   (float(loss), a NaN check, printing) adds a full round trip on top.
# - With enough work per operation the arithmetic dominates and time grows with the batch:
#   **compute-bound**. There a GPU does tens of TFLOP/s against a laptop CPU's tens to hundreds of GFLOP/s.
# - On the CPU the cost per call is small (microseconds per NumPy call). Some work does not shrink with
#   the batch, though: Adam's passes over every parameter. Above that floor the CPU is compute-bound,
#   and time grows in proportion to the batch.
#
# So the GPU pays when each step has a lot of arithmetic: big batches, and convolutional models (lesson
# 10's conv VAE does 35 times the multiply-adds per image of the MLP: 22.7 million against 651,000). The
# **crossover** is the batch at which the CPU's rising line passes the GPU's nearly flat one. Below it
# the CPU is faster.
#
# ## Measuring honestly
#
# - CuPy returns before the GPU finishes: call `minivae.backend.synchronize(xp)` before reading the clock.
# - Warm up first: the first CuPy calls compile kernels and fill the memory pool.
# - Check the two backends agree (same weights, same batch, same eps) before timing them: a fast wrong
#   answer is worth nothing.
# - Repeat, and take the **median**: one slow moment (another program waking up, the OS moving the process)
#   then does not decide the result, as it would decide a mean or a single run.
# - Look at the machine. If another program keeps a core busy, every time here is slower and noisier
#   than on an idle machine, and the lesson says so. BLAS (the library under NumPy's matrix products)
#   starts one thread per core and splits every product between them. A thread waiting for a core that
#   another program holds makes the whole product wait, so small steps, which have many short products,
#   slow down most. `minivae.threads.apply()` sets the BLAS thread count to the cores no other program
#   is using (one, beside one busy process on two cores); `OPENBLAS_NUM_THREADS` overrides it.
#
# A step here is `minivae.training.loop.train_step` as the training loop calls it. It checks the loss and
# gradients for NaN/Inf (one host round trip a step on a GPU) and skips the check that the images are
# finite and in [0, 1], which the loop makes once per data set. The breakdown at the end times forward,
# loss, backward and the Adam update one by one.
#
# **Without CuPy** the lesson times NumPy and draws the GPU from recorded numbers: `lessons/data/
# gpu_step_times.csv`, an NVIDIA H200 on 2026-11-28 running minivae at commit f8b0513 (docs/performance.md
# has the machine, the commands and what else was measured there). That commit's steps make fewer array
# operations than the current code's (116 against 142 for the conv step), so the current code on the
# same card is expected to be slower; docs/performance.md estimates 0.3 to 0.6 ms more for the conv step
# at batch 32. The figure and the printout name the card, the date and the commit. `--backend cupy` makes CuPy required;
# with CuPy present the GPU is also timed live.
#
# ## What to look at
#
# - the machine check: cores, load average, what other programs use now, and the BLAS threads chosen;
# - the agreement check (expect < 1e-5) when CuPy is present;
# - the table: ms per step (median of several repeats), images per second and GFLOP/s against the batch;
#   the MLP's time ratio between batch 1024 and 16, interleaved (compute-bound: expect > 8);
# - `14_step_time.png`: time per step against batch size, log-log, this CPU beside the H200's recorded
#   steps. A slope-1 line is compute-bound, a flat line launch-bound, and where the GPU's line crosses
#   below the CPU's the GPU starts to pay;
# - the breakdown: which phase takes the time at a small and at a large batch. Adam's share is large at
#   small batches: its cost is per parameter (several passes over 650,000 numbers), whatever the batch.

# %%
import csv
import os
import platform
import statistics
import time

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae import threads
from minivae.backend import cupy_available, get_backend, synchronize, to_numpy
from minivae.models import build_model
from minivae.nn import Conv2d, ConvTranspose2d, Linear
from minivae.nn.gradcheck import rel_error
from minivae.nn.losses import vae_loss
from minivae.nn.optim import Adam
from minivae.training.loop import train_step

lesson = _common.setup("14_cpu_vs_gpu")
# the two models of the course, and the MLP made narrow (hidden 16: 27,000 parameters against 650,000)
MODELS = {
    "mlp": dict(arch="mlp", latent=20, hidden=400),
    "conv": dict(arch="conv", latent=15),
    "mlp16": dict(arch="mlp", latent=20, hidden=16),
}

# %% [markdown]
# ## The machine, and who else is using it
#
# `os.sched_getaffinity(0)` is the set of cores this process may run on. The load average
# (`os.getloadavg()`, the mean number of runnable processes over the last minute) counts this lesson
# too, so a load near the number of cores on an otherwise idle machine is only this process.
# `threads.busy_cores()` measures what other programs use now, over a 0.2 s window.

# %%
section("the machine")
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
busy = threads.busy_cores()
n_threads = threads.apply()
print(f"   numpy on {platform.processor() or platform.machine()}: {cores} cores for this process")
print(f"   load average (1 min) {load1:.2f}; other programs are using {busy:.1f} cores' worth of CPU now")
print(f"   BLAS threads: {n_threads} (OPENBLAS_NUM_THREADS if set, else the cores no other program is using)")
if busy >= 0.5 or load1 > cores:
    print(
        f"   the machine is busy with other work: times below are slower and noisier than on an idle "
        f"machine (medians keep single slow moments out; {n_threads} BLAS thread(s) keep BLAS off the busy cores)"
    )
else:
    print("   no other busy program seen: the times below are this machine's own")

ok, why = cupy_available()
backends = {"numpy": np}
if ok:
    backends["cupy"] = get_backend("cupy")
    cp = backends["cupy"]
    gpu_name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
    print(f"   cupy on {gpu_name.decode() if isinstance(gpu_name, bytes) else gpu_name}")
else:
    print(f"   CuPy timing skipped: {why}")
    print(
        "   (the GPU comes from the recorded numbers below; with an NVIDIA GPU, install CuPy to time it here)"
    )

# %% [markdown]
# ## The same step on both backends, checked before it is timed
#
# One step of each model from the same weights, images and noise on NumPy and on CuPy (only when CuPy
# is present). float32 on both, so the two agree to float32 rounding, not exactly.

# %%


def setup_step(name: str, batch: int, xp):
    """A model of MODELS, its optimizer and one fixed batch (x, eps) on the backend, all from seed 0."""
    spec = dict(MODELS[name])
    model = build_model(spec.pop("arch"), spec.pop("latent"), seed=0, **spec).to(xp)
    opt = Adam(model.named_parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.random((batch, 1, 28, 28), dtype=np.float32))
    eps = xp.asarray(rng.standard_normal((batch, model.latent), dtype=np.float32))
    return model, opt, x, eps


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

# %% [markdown]
# ## Time per step, as a median
#
# Each (model, batch, backend) is warmed up with 2 steps, then timed in several blocks of steps. The
# time per step is the median over the blocks. GFLOP/s counts the multiply-adds of every Linear and
# convolution from the shapes each layer cached (2 flops each, the backward twice the forward).
#
# With the arithmetic in proportion to the batch, a compute-bound step at 64 times the batch takes
# nearly 64 times as long. The MLP's step at batch 16 is not all arithmetic: Adam's passes over the
# 650,000 parameters take about half of it whatever the batch (the breakdown below), so the ratio
# between batch 1024 and 16 lands near 10 to 13 on the 2-core development CPU, idle or beside one busy
# process. The check asks for more than 8. It is timed apart from the table: blocks of the two batches
# alternate, so that both see the same moments of the machine, the ratio is the median over the pairs,
# and BLAS runs one thread (a second thread would speed up the large batch only, and on an idle
# 2-core machine brings the ratio down to about 8).

# %%


def walk(module, prefix=""):
    """(dotted name, module) for a module and everything inside it."""
    yield prefix, module
    for name, child in module.children():
        yield from walk(child, f"{prefix}{name}.")


def flops_per_step(model, x, eps) -> float:
    """Floating-point operations of one training step, from the shapes each layer cached in a forward:
    2 per multiply-add, and backward costs twice the forward (one product for dW, one for dx)."""
    model.forward(x, eps=eps)
    macs = 0
    for _, layer in walk(model):
        if isinstance(layer, Linear):  # caches x (N, in)
            macs += layer.x.size * layer.out_features
        elif isinstance(layer, Conv2d):  # caches cols (C_in kH kW, H_out W_out N)
            macs += layer.cols.size * layer.out_channels
        elif isinstance(layer, ConvTranspose2d):  # caches x_mat (C_in, N H W)
            macs += layer.x_mat.size * int(np.prod(layer.params["weight"].shape[1:]))
    return 2.0 * 3.0 * macs


def step_block(name: str, batch: int, xp):
    """A warmed-up training step on a fixed batch (2 steps first), as block(seconds): run whole steps
    for at least `seconds` (at least one) and return the seconds per step."""
    model, opt, x, eps = setup_step(name, batch, xp)
    model.check_input(x)  # once, as the training loop checks its data sets
    for _ in range(2):
        train_step(model, opt, x, eps, 1.0, "elbo", check_values=False)
    synchronize(xp)

    def block(seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            train_step(model, opt, x, eps, 1.0, "elbo", check_values=False)
            n += 1
            synchronize(xp)  # only matters for CuPy: the clock must not stop before the GPU does
        return (time.perf_counter() - t0) / n

    return block


def time_steps(name: str, batch: int, xp, repeats: int, block_seconds: float) -> float:
    """Seconds per train_step: the median over `repeats` blocks of at least block_seconds each."""
    block = step_block(name, batch, xp)
    return statistics.median(block(block_seconds) for _ in range(repeats))


batches = {
    "mlp": lesson.pick(
        smoke=[4, 16], default=[1, 4, 16, 64, 256, 1024], full=[1, 4, 16, 64, 256, 1024, 4096]
    ),
    "conv": lesson.pick(smoke=[4], default=[1, 8, 32], full=[1, 8, 32, 128, 512]),
    "mlp16": lesson.pick(smoke=[4, 16], default=[1, 4, 16, 64, 256], full=[1, 4, 16, 64, 256, 1024]),
}
repeats = lesson.pick(smoke=3, default=5, full=9)
block_seconds = lesson.pick(smoke=0.005, default=0.08, full=0.3)

section(f"time per training step (median of {repeats} blocks)")
print("   model  batch  backend   ms/step    images/s   GFLOP/s")
results = {}
for name, bs in batches.items():
    for bname, xp in backends.items():
        for batch in bs:
            sec = time_steps(name, batch, xp, repeats, block_seconds)
            model, _, x, eps = setup_step(name, batch, xp)
            gflops = flops_per_step(model, x, eps) / sec / 1e9
            results[(name, bname, batch)] = sec
            print(
                f"   {name:5s}  {batch:5d}  {bname:7s}  {sec * 1e3:8.2f}  {batch / sec:10.0f}  {gflops:8.1f}"
            )
if not lesson.smoke:  # batch 16 against 1024, interleaved: both sizes see the same moments of the machine
    with threads.limit(1):  # one BLAS thread: a second one would speed up the large batch only
        small, large = step_block("mlp", 16, np), step_block("mlp", 1024, np)
        pairs = [large(block_seconds) / small(block_seconds) for _ in range(repeats + 2)]
    print(f"   mlp 1024 / 16, {len(pairs)} interleaved pairs of blocks: {min(pairs):.1f} to {max(pairs):.1f}")
    expect(
        "numpy: time ratio batch 1024 / 16, median of the pairs (64x the images; compute-bound)",
        statistics.median(pairs),
        lo=8.0,
        fmt=".1f",
    )
if "cupy" in backends:
    b0, b1 = batches["mlp"][0], batches["mlp"][1]
    expect(
        f"cupy: time ratio batch {b1} / batch {b0} (flat: launch-bound)",
        results[("mlp", "cupy", b1)] / results[("mlp", "cupy", b0)],
        hi=2.0,
        fmt=".2f",
    )
    for name, bs in batches.items():
        b = bs[-1]
        speedup = results[(name, "numpy", b)] / results[(name, "cupy", b)]
        print(f"   {name} at batch {b}: the GPU is {speedup:.1f}x faster than the CPU")

# %% [markdown]
# ## When the GPU pays: the crossover
#
# `lessons/data/gpu_step_times.csv` holds the training step of `benchmarks/bench_train_step.py` on an
# NVIDIA H200 (2026-11-28, minivae at commit f8b0513, batches 32, 128 and 256), and one NumPy step on
# that machine's 16 host CPUs. Between batch 32 and 256 the H200's step barely moves (launch-bound).
# Below batch 32 its time is taken as flat, at its batch-32 value: a dotted line on the figure, an
# extrapolation. The crossover is where this CPU's line reaches that floor. Below it this CPU is faster
# than the H200 was.
#
# For the course's two models the H200 is faster at every batch. The CPU's MLP step has a floor of its
# own: Adam makes several passes over 650,000 parameters whatever the batch, and that alone takes longer
# than the H200's whole step. The narrow MLP (hidden 16, 27,000 parameters) has almost no such floor,
# and its line crosses: on the 2-core development CPU near batch 70 to 130. Its GPU steps are an
# assumption too. It makes the same operations as the wide MLP, and on the H200 an operation cost the
# same 11 to 25 µs on 480 numbers as on 400,000 (docs/performance.md), so its GPU steps are taken as
# the wide MLP's recorded ones. It was not run on a GPU. The crossover moves with the CPU: a faster or
# idler one moves it to larger batches.

# %%


def gpu_ms_at(pts: list[tuple[int, float]], batch: float) -> float:
    """The recorded GPU step at `batch`: flat at the first point below it (launch-bound, an
    extrapolation), log-log interpolation between points, flat beyond the last."""
    bs, ms = np.log([b for b, _ in pts]), np.log([m for _, m in pts])
    return float(np.exp(np.interp(np.log(batch), bs, ms)))


def crossover(batches_: list[int], cpu_ms: list[float], pts: list[tuple[int, float]]) -> float | None:
    """The batch where a CPU line (ms against batch) rises past the GPU's, interpolated in log-log:
    None if the CPU is slower from the first batch on, inf if it is faster at every batch timed."""
    diff = [np.log(c / gpu_ms_at(pts, b)) for b, c in zip(batches_, cpu_ms)]  # > 0: the GPU is faster
    above = [i for i, d in enumerate(diff) if d > 0]
    if not above:
        return float("inf")
    i = above[0]
    if i == 0:
        return None
    lb = np.log(batches_[i - 1 : i + 1])
    return float(np.exp(lb[0] + (0 - diff[i - 1]) / (diff[i] - diff[i - 1]) * (lb[1] - lb[0])))


section("the crossover against the recorded H200 steps")
with open(_common.LESSONS_DIR / "data" / "gpu_step_times.csv", encoding="utf-8") as f:
    recorded = list(csv.DictReader(f))
gpu = {}  # arch -> sorted [(batch, ms)]: minivae on CuPy, recorded
for row in recorded:
    if row["backend"] == "cupy":
        gpu.setdefault(row["arch"], []).append((int(row["batch"]), float(row["ms_per_step"])))
gpu = {arch: sorted(v) for arch, v in gpu.items()}
((card, card_date, card_commit),) = {
    (r["device"], r["date"], r["commit"]) for r in recorded if r["backend"] == "cupy"
}
gpu_label = f"{card}, {card_date}, minivae {card_commit}"
print(f"   recorded GPU steps: {gpu_label}")
curves = {"mlp": gpu["mlp"], "conv": gpu["conv"], "mlp16": gpu["mlp"]}  # mlp16: the mlp's, assumed
cross = {}
for name, bs in batches.items():
    cpu_ms = [results[(name, "numpy", b)] * 1e3 for b in bs]
    cross[name] = crossover(bs, cpu_ms, curves[name])
    if cross[name] is None:
        what = f"is slower than the GPU already at batch {bs[0]} ({cpu_ms[0]:.2f} ms against {curves[name][0][1]:.2f})"
    elif cross[name] == float("inf"):
        what = f"is faster than the GPU at every batch timed (up to {bs[-1]})"
    else:
        what = f"is faster than the GPU below batch {cross[name]:.0f}, slower above"
    print(f"   {name:5s}: this CPU {what}")
for row in recorded:
    if row["backend"] == "numpy":  # the H200 machine's own CPUs, against its GPU at the same step
        ratio = float(row["ms_per_step"]) / dict(gpu[row["arch"]])[int(row["batch"])]
        print(
            f"   {row['device']}: {row['arch']} batch {row['batch']} "
            f"{float(row['ms_per_step']):.2f} ms on NumPy, {ratio:.0f} times the GPU's step"
        )
if not lesson.smoke:
    crossed = cross["mlp16"] if cross["mlp16"] not in (None, float("inf")) else float("nan")
    expect("mlp16: the crossover batch (lower on a slower or busier CPU)", crossed, lo=4, hi=500, fmt=".0f")
    expect(
        "conv: this CPU's step at batch 32 over the H200's (recorded)",
        results[("conv", "numpy", 32)] * 1e3 / dict(gpu["conv"])[32],
        lo=3.0,
        fmt=".0f",
    )

fig, ax = plt.subplots(figsize=(7.6, 5.0))
for i, (name, bs) in enumerate(batches.items()):
    cpu_ms = [results[(name, "numpy", b)] * 1e3 for b in bs]
    ax.loglog(bs, cpu_ms, "-o", color=f"C{i}", label=f"{name}: numpy, this CPU")
    if "cupy" in backends:
        cupy_ms = [results[(name, "cupy", b)] * 1e3 for b in bs]
        ax.loglog(bs, cupy_ms, "-^", color=f"C{i}", label=f"{name}: cupy, this GPU")
    if name in gpu:
        gb, gms = zip(*gpu[name])
        ax.loglog(gb, gms, "--s", color=f"C{i}", mfc="white", label=f"{name}: cupy, {gpu_label}")
    first_b, first_ms = curves[name][0]
    if min(bs) < first_b:  # launch-bound: flat below the smallest recorded batch (an extrapolation)
        ax.loglog([min(bs), first_b], [first_ms] * 2, ":", color=f"C{i}", lw=1.2)
ax.plot(
    [], [], ":", color="gray", label="GPU, flat below batch 32 (extrapolated); mlp16: the mlp's (assumed)"
)
b_all = np.array(sorted({b for bs in batches.values() for b in bs}), dtype=float)
b_ref = batches["mlp"][-1]  # a slope-1 line through the largest MLP batch on NumPy
t_ref = results[("mlp", "numpy", b_ref)] * 1e3
ax.loglog(
    b_all, t_ref * b_all / b_ref, ":", color="gray", lw=0.8, label="slope 1: time in proportion to batch"
)
ax.set_xlabel("batch size")
ax.set_ylabel("ms per training step")
ax.set_title(f"this CPU (BLAS threads: {n_threads}) against the {card} (recorded {card_date})", fontsize=9)
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=7)
lesson.savefig(fig, "step_time", f"ms per step against batch size; GPU: {gpu_label}")

# %% [markdown]
# ## Where the time goes
#
# The same step cut into its four phases, synchronizing between them, at the smallest and largest MLP
# batch and the largest conv batch. Forward, loss and backward grow with the batch. Adam's update does
# not: it makes several passes over every parameter, whatever the batch, so its share is largest at
# small batches.

# %%


def breakdown(name: str, batch: int, xp, reps: int) -> dict[str, float]:
    """Milliseconds in each phase of a step (median over reps), synchronizing between phases."""
    model, opt, x, eps = setup_step(name, batch, xp)
    phases = {k: [] for k in ("forward", "loss", "backward", "adam")}
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
                phases[k].append(dt * 1e3)
    return {k: statistics.median(v) for k, v in phases.items()}


section("where the time goes (ms per phase, medians)")
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

# %%
lesson.done()
