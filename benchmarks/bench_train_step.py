"""Time minivae's batched training step (forward + loss + backward + Adam, float32) on NumPy and CuPy,
beside the same model in PyTorch and the machine's own matrix-multiply rate.

    python benchmarks/bench_train_step.py                       # mlp and conv, batches 32 128 256
    python benchmarks/bench_train_step.py --arch conv --batch 32 --steps 30 --json out.json
    python benchmarks/bench_train_step.py --profile --arch conv --batch 128   # where the step goes
    python benchmarks/bench_train_step.py --backend cupy --arch conv --kernels both --no-torch  # kernels A/B
    python benchmarks/bench_train_step.py --contention 1 3       # again beside 1, then 3, busy processes

It first prints what it runs on: the CPU's model and AVX2 / AVX-512, each BLAS/OpenMP library's kernel and
threads (threadpoolctl), with a warning when OPENBLAS_CORETYPE forces an older kernel than the CPU has, and
the load average. minivae runs on the thread count minivae.threads' policy picks at the start of each
condition (--threads N forces it); every NumPy row also times minivae on one thread, interleaved in blocks
of 5 steps (one thread pool, switched by a ctypes call), so "/ 1 thread" is a ratio within one run.
--contention starts `python -c "while True: pass"` processes, times the table beside them, and stops them.

For each (arch, batch, backend): median ms/step over --steps timed steps after --warmup steps, with the
interquartile range; samples/s; FLOPs per step counted from the layer shapes (3 x the forward's
2 * multiply-adds: forward, input gradient, weight gradient); the achieved GFLOP/s and its fraction
of the float32 GEMM rate measured in the same run. Each backend's step is first checked against
NumPy's on the same weights, batch and noise. CuPy timings synchronise the device. With PyTorch
importable, the same model runs in PyTorch in the same process (on a GPU its steps interleaved with
minivae's in blocks of 5, so that drift in the host's speed falls on both; on the CPU after them, as
interleaved thread pools fight for the cores), and the table shows minivae / PyTorch.

--kernels on|off chooses whether minivae.kernels' fused CuPy kernels run (default: on, unless
MINIVAE_FUSED=0). --kernels both times the step with them on and, on a second copy of the model, off,
interleaved in blocks of 5 steps as PyTorch's is, so that both see the same drift in the host's speed;
a second table gives on / off. NumPy never runs the kernels, so there both columns time the same code (a
check of the method: expect 1.0). Speed goals live here, never in the test suite.
"""

from __future__ import annotations

import minivae  # first: before NumPy loads OpenBLAS, as in `minivae train` (minivae.threads)

# isort: split
import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from minivae import kernels, threads
from minivae.backend import backend_name, cupy_available, get_backend, synchronize, to_numpy
from minivae.models import build_model
from minivae.nn import Conv2d, ConvTranspose2d, Linear, Module, Sequential
from minivae.nn.losses import vae_loss
from minivae.training.config import TrainConfig
from minivae.training.loop import make_optimizer, train_step

LATENT = {"mlp": 20, "conv": 15}


# ------------------------------------------------------------------------------------------ FLOPs


def forward_flops_per_sample(model: Module) -> int:
    """2 x multiply-adds of every Linear / Conv2d / ConvTranspose2d for one image, from their shapes."""
    flops = 0
    shape: tuple[int, ...] = (1, 1, 28, 28)

    def walk(m: Module, shape: tuple[int, ...]) -> tuple[int, ...]:
        nonlocal flops
        if isinstance(m, Sequential):
            for layer in m.layers:
                shape = walk(layer, shape)
            return shape
        y = m.forward(np.zeros(shape, dtype=np.float32))
        w = m.params.get("weight")
        if isinstance(m, Linear):
            flops += 2 * w.size
        elif isinstance(m, Conv2d):
            flops += 2 * w.size * y.shape[2] * y.shape[3]
        elif isinstance(m, ConvTranspose2d):
            flops += 2 * w.size * shape[2] * shape[3]
        return y.shape

    h = walk(model.encoder, shape)
    flops += 2 * (model.fc_mu.params["weight"].size + model.fc_logvar.params["weight"].size)
    walk(model.decoder, (1, model.latent))
    del h
    return flops


def backends_present(asked: list[str] | None) -> list[str]:
    """The backends to run: those asked for (default: every one present), less CuPy if it cannot run
    here, which is said on stderr with the reason."""
    ok, why = cupy_available()
    names = asked or (["numpy", "cupy"] if ok else ["numpy"])
    if "cupy" in names and not ok:
        print(f"cupy skipped: {why}", file=sys.stderr)
        names = [n for n in names if n != "cupy"]
    return names


def gemm_rate(xp: Any, n: int = 2048, reps: int = 10) -> float:
    """float32 GEMM GFLOP/s of this backend: (n x n) @ (n x n), median of reps."""
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    times = []
    for i in range(reps + 2):
        synchronize(xp)
        t = time.perf_counter()
        a @ a
        synchronize(xp)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


# ---------------------------------------------------------------------------------------- minivae


def setup(arch: str, batch: int, xp: Any, dtype: str = "float32"):
    """Model, optimizer, batch and noise. Weights, images and noise are float32 numbers whatever the
    dtype, so a float64 run computes exactly what the float32 runs approximate."""
    model = build_model(arch, LATENT[arch], seed=0).to(xp, dtype)
    opt = make_optimizer(TrainConfig(lr=1e-3), model)  # Adam, as training builds it
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.random((batch, 1, 28, 28), dtype=np.float32).astype(dtype))
    eps = xp.asarray(rng.standard_normal((batch, LATENT[arch]), dtype=np.float32).astype(dtype))
    return model, opt, x, eps


def one_step_numbers(arch: str, batch: int, xp: Any, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Loss and gradients of one step from the shared starting point (for the agreement check)."""
    model, _, x, eps = setup(arch, batch, xp, dtype)
    logits, mu, logvar = model.forward(x, eps=eps)
    out = vae_loss(logits, x, mu, logvar)
    model.backward(out.dlogits, out.dmu, out.dlogvar)
    return {"loss": to_numpy(out.total), **{k: to_numpy(g) for k, _, g in model.named_parameters()}}


class WrongResult(Exception):
    """A backend's loss or gradients disagree with NumPy's beyond float32 rounding."""


def check_against_numpy(arch: str, batch: int, xp: Any) -> dict[str, Any]:
    """The backend's float32 loss and gradients against NumPy's float64 ones, beside NumPy's float32 error.

    The float64 run takes the same float32 weights, images and noise, so its result is what float32
    arithmetic approximates. A weight gradient sums N*H*W products, and float32 rounding of that sum
    depends on the order the library adds them in: at conv batch 256 (200,704 terms for the first conv,
    50,176 for the 64->64 ones) CuPy's came within 9e-5 and 1.6e-4 of the exact value, NumPy's within
    6e-7 (an H200). So the test is "within 10x NumPy's own float32 error, or 1e-3", tensor by tensor,
    each error relative to the tensor's largest entry. A wrong layer is off by far more (a one-pixel
    shift or a missing term gives errors of order 1).

    Returns the largest errors, the tensor with the backend's largest, and every tensor's pair
    [backend, NumPy float32], so the JSON shows where a backend's rounding differs from NumPy's.
    """
    exact = one_step_numbers(arch, batch, np, "float64")
    ours, npy = one_step_numbers(arch, batch, xp), one_step_numbers(arch, batch, np)
    per_tensor: dict[str, list[float]] = {}
    for k, ref in exact.items():
        scale = max(float(np.abs(ref).max()), 1e-30)
        e_ours, e_np = (float(np.abs(a - ref).max()) / scale for a in (ours[k], npy[k]))
        per_tensor[k] = [e_ours, e_np]
        if e_ours > max(10 * e_np, 1e-3):
            raise WrongResult(
                f"{backend_name(xp)} disagrees with NumPy on {arch} batch {batch}, {k}: relative error "
                f"{e_ours:.2e} against float64, where NumPy's float32 has {e_np:.2e}"
            )
    worst_tensor = max(per_tensor, key=lambda k: per_tensor[k][0])
    return {
        "backend": per_tensor[worst_tensor][0],
        "numpy_float32": max(e for _, e in per_tensor.values()),
        "worst_tensor": worst_tensor,
        "per_tensor": per_tensor,
    }


def interleaved(runs: list[tuple[Any, Any]], steps: int, block: int = 5) -> list[list[float]]:
    """`steps` synchronised step times for each (step, sync), taken in alternating blocks of `block` steps.

    A shared machine's speed drifts: on an H200 machine the same CuPy step took from 3.8 to 5.6 ms within
    a few minutes (its host dispatch, docs/performance.md). Timed one after the other, two steps would
    each get a different stretch of that drift; interleaved, both see the same, and their ratio holds.
    """
    times: list[list[float]] = [[] for _ in runs]
    while len(times[0]) < steps:
        for (step, sync), ts in zip(runs, times):
            for _ in range(min(block, steps - len(ts))):
                t = time.perf_counter()
                step()
                sync()
                ts.append(time.perf_counter() - t)
    return times


def warm(runs: list[tuple[Any, Any]], warmup: int) -> None:
    """`warmup` untimed steps of each (step, sync): kernels compiled, memory pools filled."""
    for step, sync in runs:
        for _ in range(warmup):
            step()
        sync()


def warmed_times(run: tuple[Any, Any], warmup: int, steps: int) -> list[float]:
    """`steps` synchronised times of one (step, sync), after `warmup` steps."""
    warm([run], warmup)
    return interleaved([run], steps)[0]


@contextlib.contextmanager
def kernels_set(on: bool) -> Iterator[None]:
    """The block runs with minivae.kernels on or off, whatever MINIVAE_FUSED says; then as it was."""
    saved, kernels.ENABLED = kernels.ENABLED, on
    try:
        yield
    finally:
        kernels.ENABLED = saved


def minivae_step(arch: str, batch: int, xp: Any, kernels_on: bool = True) -> tuple[Any, Any]:
    """(step, sync) of a fresh copy of the benchmark's model, stepped as the training loop steps it (no
    host wait: no NaN guard, the images checked once per data set, not here) with the kernels on or off."""
    model, opt, x, eps = setup(arch, batch, xp)

    def step() -> None:
        with kernels_set(kernels_on):
            train_step(model, opt, x, eps, 1.0, "elbo", check_finite=False, check_values=False)

    return step, lambda: synchronize(xp)


def bench_minivae(
    arch: str,
    batch: int,
    xp: Any,
    warmup: int,
    steps: int,
    beside: list[tuple[Any, Any]] | None = None,
    kernels_on: bool = True,
) -> tuple[list[float], dict, list[list[float]]]:
    """Step times; for CuPy the memory pool's bytes in use after the warm-up and after the timed steps
    (in steady state a step frees all it allocates, so the two must be equal: no growth); and the times
    of each (step, sync) in `beside` (the step with the kernels off, PyTorch's), interleaved with it."""
    runs = [minivae_step(arch, batch, xp, kernels_on), *(beside or [])]
    warm(runs, warmup)
    pool = xp.get_default_memory_pool() if xp is not np else None
    mem: dict[str, int] = {}
    if pool is not None:
        mem["pool_used_after_warmup"] = pool.used_bytes()
    times = interleaved(runs, steps)
    if pool is not None:
        mem["pool_used_after_steps"] = pool.used_bytes()
        mem["pool_total"] = pool.total_bytes()
    return times[0], mem, times[1:]


# ---------------------------------------------------------------------------------------- PyTorch


def torch_model(arch: str, torch: Any):
    nn = torch.nn
    if arch == "mlp":
        enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU())
        heads = nn.Linear(400, 20), nn.Linear(400, 20)
        dec = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784), nn.Unflatten(1, (1, 28, 28)))
    else:
        enc = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(32, 64, 3, stride=2),
            nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(12544, 32), nn.ReLU(),
        )  # fmt: skip
        heads = nn.Linear(32, 15), nn.Linear(32, 15)
        dec = nn.Sequential(
            nn.Linear(15, 12544), nn.ReLU(), nn.Unflatten(1, (64, 14, 14)), nn.ConvTranspose2d(64, 32, 3, stride=2),
            nn.ZeroPad2d((0, -1, 0, -1)), nn.ReLU(), nn.ConvTranspose2d(32, 1, 3, padding=1),
        )  # fmt: skip
    return enc, heads, dec


def torch_step(arch: str, batch: int, device: str) -> tuple[Any, Any] | None:
    """(step, sync) for the same model, batch and noise in PyTorch eager; None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    enc, (fc_mu, fc_lv), dec = torch_model(arch, torch)
    mods = torch.nn.ModuleList([enc, fc_mu, fc_lv, dec]).to(device)
    opt = torch.optim.Adam(mods.parameters(), lr=1e-3)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((batch, 1, 28, 28), dtype=np.float32)).to(device)
    eps = torch.from_numpy(rng.standard_normal((batch, LATENT[arch]), dtype=np.float32)).to(device)
    F = torch.nn.functional

    def step():
        opt.zero_grad(set_to_none=True)
        h = enc(x)
        mu, logvar = fc_mu(h), fc_lv(h)
        logits = dec(mu + torch.exp(0.5 * logvar) * eps)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / batch
        kl = 0.5 * (logvar.exp() + mu * mu - 1 - logvar).sum() / batch
        (recon + kl).backward()
        opt.step()

    return step, (torch.cuda.synchronize if device == "cuda" else (lambda: None))


# ---------------------------------------------------------------------------------------- profile


def profile(arch: str, batch: int, xp: Any, steps: int) -> list[tuple[str, float]]:
    """Mean ms per step of each layer's forward and backward, the loss, and Adam."""
    model, opt, x, eps = setup(arch, batch, xp)
    totals: dict[str, float] = {}

    def timed(name: str, fn):
        def wrapper(*a, **k):
            synchronize(xp)
            t = time.perf_counter()
            r = fn(*a, **k)
            synchronize(xp)
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t
            return r

        return wrapper

    for part in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, part).layers):
            tag = f"{part}.{i} {type(layer).__name__}"
            layer.forward, layer.backward = (
                timed(tag + " fwd", layer.forward),
                timed(tag + " bwd", layer.backward),
            )
    for head in ("fc_mu", "fc_logvar"):
        layer = getattr(model, head)
        layer.forward, layer.backward = (
            timed(head + " fwd", layer.forward),
            timed(head + " bwd", layer.backward),
        )
    loss_fn = timed("loss (BCE + KL)", vae_loss)
    opt.step = timed("Adam step", opt.step)

    def step():
        logits, mu, logvar = model.forward(x, eps=eps, check_values=False)  # as train_step in training
        out = loss_fn(logits, x, mu, logvar)
        model.backward(out.dlogits, out.dmu, out.dlogvar)
        opt.step()

    step()
    totals.clear()
    for _ in range(steps):
        step()
    return sorted(((k, v / steps * 1e3) for k, v in totals.items()), key=lambda kv: -kv[1])


# ---------------------------------------------------------------------------- the machine, the load


AVX512_KERNELS = ("SkylakeX", "Cooperlake", "SapphireRapids")  # OpenBLAS kernels that use AVX-512
AVX2_KERNELS = AVX512_KERNELS + ("Haswell", "Zen")  # ... and those that use AVX2 at least


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and its vector extensions (AVX2, AVX-512F), from /proc/cpuinfo (Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"cpu_model": model, "avx2": "avx2" in flags, "avx512": "avx512f" in flags}


def blas_info() -> list[dict[str, Any]]:
    """Each BLAS / OpenMP library loaded, from threadpoolctl: its kernel (OpenBLAS's architecture) and threads."""
    from threadpoolctl import threadpool_info

    keys = ("internal_api", "prefix", "version", "architecture", "num_threads")
    return [{k: lib.get(k) for k in keys} for lib in threadpool_info()]


def coretype_warning(cpu: dict[str, Any], blas: list[dict[str, Any]], env: dict[str, str]) -> str | None:
    """A warning when OPENBLAS_CORETYPE makes OpenBLAS run an older kernel than the CPU's extensions allow."""
    forced = env.get("OPENBLAS_CORETYPE")
    kernels_ = [lib["architecture"] for lib in blas if lib["internal_api"] == "openblas"]
    if not forced or not kernels_:
        return None
    best = "AVX-512" if cpu["avx512"] else "AVX2" if cpu["avx2"] else None
    allowed = {"AVX-512": AVX512_KERNELS, "AVX2": AVX2_KERNELS}.get(best or "", ())
    old = [k for k in kernels_ if best and k not in allowed]
    if not old:
        return None
    return (
        f"WARNING: OPENBLAS_CORETYPE={forced} runs OpenBLAS's {old[0]} kernel on a CPU with {best}; "
        "for the CPU's own kernel run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python "
        "benchmarks/bench_train_step.py ..."
    )


def describe_machine() -> tuple[dict[str, Any], list[str]]:
    """What the run ran on (CPU, BLAS kernel and threads, load average at start) and the lines that say it."""
    cpu, blas = cpu_info(), blas_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    info = {**cpu, "blas": blas, "loadavg_at_start": list(load), "cores": threads.available_cores()}
    ext = "AVX-512" if cpu["avx512"] else "AVX2" if cpu["avx2"] else "no AVX2"
    lines = [f"CPU: {cpu['cpu_model']}, {info['cores']} cores for this process, {ext}"]
    lines += [
        f"{lib['internal_api']} {lib['version']} ({lib['prefix']}): kernel {lib['architecture'] or '-'}, "
        f"{lib['num_threads']} threads"
        for lib in blas
    ]
    spin = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset: 28")
    sleep = "sleep soon after a product" if threads.blas_threads_sleep() else "spin"
    info["openblas_thread_timeout"] = spin
    lines.append(f"OPENBLAS_THREAD_TIMEOUT={spin}: OpenBLAS's idle threads {sleep} (minivae.threads)")
    lines.append(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)")
    warning = coretype_warning(cpu, blas, dict(os.environ))
    if warning:
        lines.append(warning)
    return info, lines


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[list[subprocess.Popen]]:
    """`n` processes spinning on a core each (`python -c "while True: pass"`) for the block, then stopped."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(1.0 if n else 0.0)  # started and spinning before anything is timed
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def openblas_setter() -> Any:
    """set(n): OpenBLAS's thread count and minivae's parts (threads.set_parts), in microseconds (a ctypes
    call), leaving PyTorch's OpenMP alone."""
    from threadpoolctl import ThreadpoolController

    libs = [c for c in ThreadpoolController().lib_controllers if c.internal_api == "openblas"]

    def set_threads(n: int) -> None:
        for lib in libs:
            lib.set_num_threads(n)
        threads.set_parts(n)  # NumPy's passes follow, as threads.apply sets them

    return set_threads


def on_threads(run: tuple[Any, Any], n: int, back: int) -> tuple[Any, Any]:
    """The (step, sync) run on `n` OpenBLAS threads, then set back to `back` for the runs beside it."""
    step, sync = run
    set_threads = openblas_setter()

    def step_on_n() -> None:
        set_threads(n)
        step()
        set_threads(back)

    return step_on_n, sync


# ------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
    p.add_argument("--batch", nargs="+", type=int, default=[32, 128, 256])
    p.add_argument(
        "--backend", nargs="+", default=None, help="numpy and/or cupy (default: every one present)"
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps (>= 20 for the table)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument(
        "--kernels", choices=["on", "off", "both"], default="on" if kernels.ENABLED else "off",
        help="minivae.kernels on, off, or both interleaved (default: on, unless MINIVAE_FUSED=0)",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None,
        help="minivae's BLAS threads (default: minivae.threads' policy, picked at the start of each "
        "condition); every NumPy row also times minivae on 1 thread, interleaved",
    )  # fmt: skip
    p.add_argument(
        "--contention", nargs="*", type=int, default=None, metavar="N",
        help="after the idle table, the table again beside N busy processes (python -c 'while True: "
        "pass', started and stopped here) for each N given (default N: 1; e.g. --contention 1 3)",
    )  # fmt: skip
    p.add_argument("--profile", action="store_true", help="time each layer instead")
    p.add_argument("--json", default=None, help="write the results here")
    return p.parse_args()


def print_profile(args: argparse.Namespace, backends: list[str], settings: list[bool]) -> None:
    for name, arch, batch, on in (
        (n, a, b, on) for n in backends for a in args.arch for b in args.batch for on in settings
    ):
        with kernels_set(on), threads.limit(args.threads):  # the threads and parts a run would use
            rows = profile(arch, batch, get_backend(name), args.steps)
        total = sum(v for _, v in rows)
        print(
            f"\n{arch}, batch {batch}, {name}, kernels {'on' if on else 'off'}: {total:.2f} ms/step "
            "measured layer by layer"
        )
        for k, v in rows:
            print(f"  {k:<34} {v:8.3f} ms  {100 * v / total:5.1f} %")


def main() -> int:
    args = parse_args()
    backends = backends_present(args.backend)
    settings = {"on": [True], "off": [False], "both": [True, False]}[args.kernels]  # first: the main table's
    if args.profile:
        print_profile(args, backends, settings)
        return 0

    machine, lines = describe_machine()
    print("\n".join(lines))
    info: dict[str, Any] = {"machine": platform.machine(), "processor": platform.processor(),
                            "python": platform.python_version(), "numpy": np.__version__,
                            "minivae_from": str(Path(minivae.__file__).parent),
                            "kernels": args.kernels, "fused_kernels": settings[0], **machine}  # fmt: skip
    print(f"timing the minivae in {info['minivae_from']}, kernels {args.kernels}", file=sys.stderr)
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    rates = {}
    for name in backends:
        rates[name] = info[f"gemm_gflops_{name}"] = gemm_rate(get_backend(name))
        if name == "cupy":
            xp = get_backend(name)
            info["gpu"] = xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
            info["cupy"] = xp.__version__
        print(f"{name}: float32 GEMM {rates[name]:.0f} GFLOP/s (2048 x 2048)", file=sys.stderr)
    contention = [] if args.contention is None else (args.contention or [1])
    results = []
    for n_busy in [0, *contention]:
        with busy_processes(n_busy):
            rows = bench_condition(args, backends, settings, rates, n_busy)
        results += rows
        n_threads = rows[0].get("threads", "-") if rows else "-"
        print(f"\n{condition_name(n_busy)}: minivae on {n_threads} BLAS thread(s)")
        print(table(rows))
        if args.kernels == "both":
            print("\n" + kernels_table(rows))
    for line in speedups(results):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=2)
    return 0


def condition_name(n_busy: int) -> str:
    return (
        "no busy process started"
        if n_busy == 0
        else f"beside {n_busy} busy process{'es' if n_busy > 1 else ''}"
    )


def bench_condition(
    args: argparse.Namespace, backends: list[str], settings: list[bool], rates: dict[str, float], n_busy: int
) -> list[dict[str, Any]]:
    """Every (backend, arch, batch) row in one condition, minivae on the policy's threads (or --threads)."""
    n = threads.pick(args.threads)  # with the busy processes already spinning
    openblas_setter()(n)
    print(f"{condition_name(n_busy)}: minivae on {n} BLAS thread(s)", file=sys.stderr)
    results = []
    for name in backends:
        xp = get_backend(name)
        for arch in args.arch:
            flops = 3 * forward_flops_per_sample(build_model(arch, LATENT[arch]))
            for batch in args.batch:
                rec = bench_row(args, settings, name, xp, arch, batch, flops, rates[name], n)
                rec["condition"] = condition_name(n_busy)
                results.append(rec)
                if "wrong_result" not in rec:
                    print(_row(rec), file=sys.stderr)
    return results


def bench_row(
    args: argparse.Namespace, settings: list[bool], name: str, xp: Any, arch: str, batch: int, flops: int,
    rate: float, n: int,
) -> dict[str, Any]:  # fmt: skip
    """One row: minivae's step (on n threads; beside it, interleaved, the kernels-off copy and the 1-thread
    copy), then PyTorch's, with its agreement check against NumPy first."""
    try:  # each kernel setting timed is checked
        agree = [{}] * len(settings)
        if name != "numpy":
            for i, on in enumerate(settings):
                with kernels_set(on):
                    agree[i] = check_against_numpy(arch, batch, xp)
    except WrongResult as e:  # no timing for a wrong result; the other rows still run
        print(f"  {arch} batch {batch} {name}: NOT TIMED: {e}", file=sys.stderr)
        return {"arch": arch, "batch": batch, "backend": name, "wrong_result": str(e)}
    device = "cuda" if name == "cupy" else "cpu"
    other = None if args.no_torch else torch_step(arch, batch, device)
    # On a GPU the two steps are interleaved, so drift in the host's speed falls on both. On the CPU they
    # run one after the other: interleaved, each library's worker threads, still spinning after its block,
    # take the cores from the other's (PyTorch's MLP step at batch 128 went from 11.7 to 25 ms on the
    # 2-core machine). minivae's own 1-thread copy shares its thread pool, so it is interleaved.
    beside = [minivae_step(arch, batch, xp, on) for on in settings[1:]]  # kernels off, for both
    one = [on_threads(minivae_step(arch, batch, xp, settings[0]), 1, n)] if name == "numpy" else []
    together = other is not None and name == "cupy"
    runs = beside + one + ([other] if together else [])
    times, mem, more = bench_minivae(arch, batch, xp, args.warmup, args.steps, runs, settings[0])
    tt = more[-1] if together else warmed_times(other, args.warmup, args.steps) if other else None
    med = statistics.median(times)
    q = statistics.quantiles(times, n=4)
    rec = {
        "arch": arch, "batch": batch, "backend": name, "threads": n, "ms_median": med * 1e3,
        "ms_iqr": [q[0] * 1e3, q[2] * 1e3], "samples_per_s": batch / med,
        "gflop_per_step": flops * batch / 1e9, "gflops": flops * batch / med / 1e9,
        "fraction_of_gemm": flops * batch / med / 1e9 / rate, "agreement_with_numpy": agree[0],
        "kernels": "on" if settings[0] else "off",
    }  # fmt: skip
    if beside:  # --kernels both: the same step with the kernels off, interleaved with it
        off = more[0]
        q_off = statistics.quantiles(off, n=4)
        rec["kernels_off_ms_median"] = statistics.median(off) * 1e3
        rec["kernels_off_ms_iqr"] = [q_off[0] * 1e3, q_off[2] * 1e3]
        rec["kernels_on_over_off"] = rec["ms_median"] / rec["kernels_off_ms_median"]
        rec["agreement_kernels_off"] = agree[1]
    if one:
        rec["one_thread_ms_median"] = statistics.median(more[len(beside)]) * 1e3
        rec["over_one_thread"] = rec["ms_median"] / rec["one_thread_ms_median"]
    if mem:
        rec["memory"] = mem
        rec["memory_growth_bytes"] = mem["pool_used_after_steps"] - mem["pool_used_after_warmup"]
    if tt:
        rec["torch_ms_median"] = statistics.median(tt) * 1e3
        rec["ratio_vs_torch"] = rec["ms_median"] / rec["torch_ms_median"]
    return rec


def speedups(results: list[dict[str, Any]]) -> list[str]:
    """CuPy against NumPy for each (arch, batch) timed on both, and the GPU memory check."""
    by = {(r["arch"], r["batch"], r["backend"]): r for r in results if "wrong_result" not in r}
    lines = []
    for (arch, batch, backend), r in by.items():
        if backend == "cupy" and (arch, batch, "numpy") in by:
            x = by[(arch, batch, "numpy")]["ms_median"] / r["ms_median"]
            lines.append(f"{arch} batch {batch}: cupy is {x:.1f}x faster than numpy")
        if "memory_growth_bytes" in r:
            lines.append(
                f"{arch} batch {batch} {backend}: memory pool in use grew by {r['memory_growth_bytes']} bytes "
                f"over the timed steps ({r['memory']['pool_used_after_steps'] / 2**20:.1f} MiB in use)"
            )
    return lines


def _row(r: dict[str, Any]) -> str:
    t = f", kernels off {r['kernels_off_ms_median']:.2f} ms" if "kernels_off_ms_median" in r else ""
    if "one_thread_ms_median" in r:
        t += f", 1 thread {r['one_thread_ms_median']:.2f} ms"
    if "torch_ms_median" in r:
        t += f", torch {r['torch_ms_median']:.2f} ms ({r['ratio_vs_torch']:.2f}x)"
    a = r.get("agreement_with_numpy") or {}
    if a:  # the backend's worst relative error against float64 beside NumPy's float32 one
        t += f"; worst error {a['backend']:.1e} ({a['worst_tensor']}), NumPy float32 {a['numpy_float32']:.1e}"
    return f"  {r['arch']:>4} batch {r['batch']:>3} {r['backend']} ({r['threads']} threads): {r['ms_median']:.2f} ms/step{t}"


def table(results: list[dict[str, Any]]) -> str:
    """The main table: minivae's step on the row's threads, on 1 thread, and PyTorch's."""
    head = ("| arch | batch | backend | ms/step (median) | IQR | samples/s | GFLOP/s | of GEMM | PyTorch ms | "
            "minivae / PyTorch | threads | 1 thread ms | / 1 thread |")  # fmt: skip
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "wrong_result" in r:
            lines.append(
                f"| {r['arch']} | {r['batch']} | {r['backend']} | wrong result, not timed | | | | | | | | | |"
            )
            continue
        tm = f"{r['torch_ms_median']:.2f}" if "torch_ms_median" in r else "-"
        ratio = f"{r['ratio_vs_torch']:.2f}x" if "ratio_vs_torch" in r else "-"
        one = f"{r['one_thread_ms_median']:.2f}" if "one_thread_ms_median" in r else "-"
        over = f"{r['over_one_thread']:.2f}x" if "over_one_thread" in r else "-"
        lines.append(
            f"| {r['arch']} | {r['batch']} | {r['backend']} | {r['ms_median']:.2f} | "
            f"{r['ms_iqr'][0]:.2f}-{r['ms_iqr'][1]:.2f} | {r['samples_per_s']:,.0f} | {r['gflops']:.1f} | "
            f"{100 * r['fraction_of_gemm']:.0f} % | {tm} | {ratio} | {r['threads']} | {one} | {over} |"
        )
    return "\n".join(lines)


def kernels_table(results: list[dict[str, Any]]) -> str:
    """--kernels both: each row's step with minivae.kernels on beside the same step with them off."""
    lines = [
        "| arch | batch | backend | kernels on (ms/step) | kernels off (ms/step) | on / off |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "kernels_off_ms_median" in r:
            lines.append(
                f"| {r['arch']} | {r['batch']} | {r['backend']} | {r['ms_median']:.2f} | "
                f"{r['kernels_off_ms_median']:.2f} | {r['kernels_on_over_off']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
