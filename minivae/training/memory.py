"""Will a run fit in memory? An estimate from the configuration alone, made before anything is allocated.

    estimate_bytes(cfg) -> {"parameters": ..., "gradients": ..., "optimizer": ..., "activations": ...,
                            "data": ..., "total": ...}            bytes, nothing allocated
    check_memory(cfg)   -> None, or a UserError naming the estimate, what is available and what to lower

The parameter count follows the layer shapes models.py builds (mlp: 784-hidden-latent x2-hidden-784; conv:
the seed study's fixed layers around the latent), so it is exact. Gradients are as many numbers again, and
Adam keeps two more buffers per parameter (SGD none). Activations are a generous count of one training
step at cfg.batch_size: every forward output and cache (the conv layers' im2col columns included), the
loss's temporaries, as much again for backward's temporaries, and the largest layer's weight gradient
formed before it is copied into place. The data are the training, validation
and test images in cfg.dtype, plus the uint8 arrays they were converted from.

The budget is 90 % of what is available: MemAvailable of /proc/meminfo (capped by a cgroup's memory.max),
or on the cupy backend the device's free bytes (cupy.cuda.runtime.memGetInfo, plus what CuPy's pool holds
free). Where nothing can be measured the check passes: it must never be the reason a run fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from minivae.errors import UserError

HEADROOM = 0.9  # refuse a run whose estimate exceeds this fraction of the available memory
PIXELS = 784
N_TRAIN_SET, N_TEST_SET = 60_000, 10_000  # MNIST and Fashion-MNIST alike
CONV_FLAT = 64 * 14 * 14  # 12,544: the conv model's encoder output before its Linear 32


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k + c_out


def _hidden(cfg: Any) -> list[int]:
    """The mlp model's hidden sizes (a list; one number in a config of one layer)."""
    return [int(cfg.hidden)] if isinstance(cfg.hidden, int) else [int(h) for h in cfg.hidden]


def parameter_count(cfg: Any) -> int:
    """The model's number of parameters, counted from the layer shapes models.build_model uses."""
    latent = int(cfg.latent)
    if cfg.arch == "mlp":
        enc = [PIXELS, *_hidden(cfg)]  # 784 -> h1 -> ... -> hL; heads hL -> latent; the decoder mirrors
        dec = [latent, *_hidden(cfg)[::-1], PIXELS]
        pairs = [*zip(enc, enc[1:]), *zip(dec, dec[1:])]
        return sum(_linear(a, b) for a, b in pairs) + 2 * _linear(enc[-1], latent)

    if cfg.arch == "conv":
        encoder = _conv(1, 32) + _conv(32, 64) + 2 * _conv(64, 64) + _linear(CONV_FLAT, 32)
        decoder = _linear(latent, CONV_FLAT) + _conv(64, 32) + _conv(32, 1)
        return encoder + 2 * _linear(32, latent) + decoder
    raise UserError(f"--arch {cfg.arch!r} is not known: choose mlp or conv")


def _activation_numbers_per_image(cfg: Any) -> int:
    """A generous count of the numbers one training step holds per image: forward + loss + backward."""
    latent = int(cfg.latent)
    heads = 6 * latent  # mu, logvar, std, eps, z and the KL's temporaries
    loss = 4 * PIXELS  # logits' sigmoid, BCE terms, their gradient, the batch's images
    if cfg.arch == "mlp":
        h = sum(_hidden(cfg))
        forward = PIXELS + 4 * h + heads + 2 * PIXELS  # input, 2 x (linear out, activation out), logits
    else:
        k9 = 9
        encoder = (
            k9 * PIXELS + 2 * 32 * PIXELS  # conv1: im2col columns, output, relu
            + 32 * 29 * 29  # zero-padded input of conv2
            + 32 * k9 * 196 + 2 * CONV_FLAT  # conv2: columns (stride 2), output, relu
            + 2 * (64 * k9 * 196 + 2 * CONV_FLAT)  # conv3, conv4
            + 2 * 32  # linear 32, bottleneck activation
        )  # fmt: skip
        decoder = (
            2 * CONV_FLAT  # linear latent -> 12,544, relu
            + CONV_FLAT + 32 * k9 * 196 + 32 * 29 * 29  # convT1: input matrix, columns, scattered output
            + 2 * 32 * PIXELS  # cropped, relu
            + 32 * PIXELS + k9 * PIXELS + PIXELS  # convT2: input matrix, columns, logits
        )  # fmt: skip
        forward = encoder + decoder + heads
    return 2 * forward + loss  # backward's temporaries (dcols, col2im targets, ...): as much again


def _largest_weight(cfg: Any) -> int:
    """The largest layer's weight: backward forms its gradient (x.T @ dy) before copying it into place."""
    latent = int(cfg.latent)
    if cfg.arch == "mlp":
        return max(PIXELS, latent) * max(_hidden(cfg))
    return max(CONV_FLAT * 32, CONV_FLAT * latent, 64 * 64 * 9)


def _data_images(cfg: Any) -> int:
    """How many images a run holds converted to cfg.dtype: training + validation rows, and test rows."""
    train_rows = N_TRAIN_SET
    if getattr(cfg, "train_limit", 0):
        val = round(cfg.train_limit * cfg.val_fraction) + 1 if cfg.val_fraction else 0
        train_rows = min(N_TRAIN_SET, cfg.train_limit + val)
    test_rows = min(N_TEST_SET, cfg.test_limit) if getattr(cfg, "test_limit", 0) else N_TEST_SET
    return train_rows + test_rows


def estimate_bytes(cfg: Any) -> dict[str, int]:
    """The bytes a training run of `cfg` needs, by part, and their "total". Nothing is allocated."""
    size = np.dtype(cfg.dtype).itemsize
    n_params = parameter_count(cfg)
    parts = {
        "parameters": n_params * size,
        "gradients": n_params * size,
        "optimizer": (2 if str(cfg.optimizer).startswith("adam") else 0) * n_params * size,
        # k samples per image under --objective iwae: the decoder (counted whole, generously) runs on k N rows
        "activations": (
            int(cfg.batch_size) * int(getattr(cfg, "k", 1)) * _activation_numbers_per_image(cfg)
            + _largest_weight(cfg)
        )
        * size,
        "data": _data_images(cfg) * PIXELS * (size + 1),  # as cfg.dtype, and the uint8 they came from
    }
    parts["total"] = sum(parts.values())
    return parts


def _cgroup_limit() -> int | None:
    """What a cgroup (v2, then v1) still lets this process have, or None where there is no limit."""
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            text = Path(limit).read_text().strip()
            if text == "max":
                return None
            cap = int(text)
            if cap >= 1 << 60:  # v1's "no limit"
                return None
            return max(0, cap - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def host_available() -> int | None:
    """Bytes of host memory available now (MemAvailable, capped by a cgroup limit), or None if unknown."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    cap = _cgroup_limit()
    if cap is not None:
        avail = cap if avail is None else min(avail, cap)
    return avail


def device_available() -> int | None:
    """Free bytes on the current CUDA device (CuPy imported only here), plus CuPy's pool's free blocks."""
    try:
        import cupy  # noqa: PLC0415

        free, _total = cupy.cuda.runtime.memGetInfo()
        return int(free) + int(cupy.get_default_memory_pool().free_bytes())
    except Exception:  # noqa: BLE001 - no CuPy, no device: nothing to measure
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB" if n < 1e12 else f"{n / 1e12:,.2f} TB"


def check_memory(cfg: Any, available: int | None = None) -> None:
    """Raise a UserError when the run's estimate exceeds 90 % of the available memory; else return None.

    available: bytes to compare with (for tests); by default the host's available memory, or the device's
    free memory on the cupy backend (where the host only holds the uint8 data). Unknown: the check passes.
    """
    parts = estimate_bytes(cfg)
    on_device = cfg.backend == "cupy"
    need = parts["total"] - (_data_images(cfg) * PIXELS if on_device else 0)  # the uint8 stays on the host
    where = "free on the GPU" if on_device else "available"
    if available is None:
        available = device_available() if on_device else host_available()
    if available is None or need <= HEADROOM * available:
        return
    named = ", ".join(f"{k} {_gb(v)}" for k, v in parts.items() if k != "total" and v)
    lower = "--hidden or --latent" if cfg.arch == "mlp" else "--latent"
    biggest = max((k for k in parts if k != "total"), key=parts.__getitem__)
    hint = {
        "activations": f"--batch-size (now {cfg.batch_size}) or {lower}",
        "data": "--train-limit / --test-limit",
    }.get(
        biggest,
        f"{lower} (now latent {cfg.latent}"
        + (f", hidden {' '.join(map(str, _hidden(cfg)))})" if cfg.arch == "mlp" else ")"),
    )
    raise UserError(
        f"this run needs about {_gb(need)} of memory ({named}; {parameter_count(cfg):,} parameters in "
        f"{cfg.dtype}) but only {_gb(available)} is {where} (at most {HEADROOM:.0%} of it is used): "
        f"lower {hint}" + (", or use --dtype float32" if cfg.dtype == "float64" else "")
    )
