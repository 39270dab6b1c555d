"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU, one code path for both.

The backend is chosen once, at the edge (a config field, the CLI's ``--backend`` or the
``MINIVAE_BACKEND`` environment variable). Everything inside the library takes its array module
from the arrays it is given::

    xp = get_array_module(x)      # numpy or cupy, whichever owns x
    y = xp.maximum(x, 0)

CuPy is imported lazily, the first time it is asked for, so minivae imports and runs without it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from types import ModuleType
from typing import Any

import numpy as np

from minivae.errors import UserError

BACKENDS = ("numpy", "cupy")
DTYPES = ("float32", "float64")


class BackendError(UserError):
    """The requested backend cannot run here; the message says why and what to do."""


def _import_cupy() -> ModuleType:
    """Import CuPy and check that it can reach a GPU, or raise BackendError saying why not."""
    try:
        import cupy  # noqa: PLC0415  (lazy on purpose)
    except ImportError as e:
        raise BackendError(
            "backend 'cupy' asked for, but CuPy is not installed: install it with "
            'pip install -e ".[gpu]" in a clone of minivae or pip install "minivae[gpu]" for the '
            f"installed package (CUDA 12; gpu13 for CUDA 13), or use --backend numpy ({e})"
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, driver too old, ...
        raise BackendError(
            "backend 'cupy' asked for, but CuPy cannot reach a GPU: "
            f"{type(e).__name__}: {e}. Check `nvidia-smi` (driver installed and new enough for "
            "this CuPy wheel's CUDA version), or use --backend numpy."
        ) from e
    if n == 0:
        raise BackendError("backend 'cupy' asked for, but no CUDA device is visible; use --backend numpy.")
    return cupy


def cupy_available() -> tuple[bool, str]:
    """(True, "") when CuPy is importable and sees a GPU, else (False, the reason)."""
    try:
        _import_cupy()
    except BackendError as e:
        return False, str(e)
    return True, ""


def get_backend(name: str | None = None) -> ModuleType:
    """The array module for a backend name; None reads $MINIVAE_BACKEND (default 'numpy')."""
    name = name or os.environ.get("MINIVAE_BACKEND", "numpy")
    if name == "numpy":
        keep_freed_memory()
        return np
    if name == "cupy":
        return _import_cupy()
    raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


@functools.cache
def keep_freed_memory() -> bool:
    """Let the process reuse the memory of a step's large temporaries instead of faulting in fresh pages.

    glibc's malloc serves a request above its mmap threshold (at most 32 MB by default) with new pages
    from the OS and returns them on free, so every step the conv model's im2col columns (58 MB at batch
    128) arrive as zeroed pages that fault in one by one: about 360 page faults a request, against 18
    when the memory comes back from the heap. Raising the mmap threshold to 1 GiB and the trim threshold
    to 2 GiB keeps freed memory in the heap for the next step. The layers then need no scratch buffers
    of their own. On the 2-core CPU it makes the conv step at batch 128 about 10 % faster and the MLP
    step about 5 % (interleaved runs of benchmarks/bench_train_step.py, docs/performance.md).
    Linux with glibc only (returns False elsewhere); called once, when the NumPy backend is chosen.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


def get_array_module(*arrays: Any) -> ModuleType:
    """numpy or cupy, whichever owns the arrays (NumPy when CuPy is not even imported)."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy  # noqa: PLC0415

            return cupy
    return np


def backend_name(xp: ModuleType) -> str:
    return "numpy" if xp is np else "cupy"


def to_numpy(a: Any) -> np.ndarray:
    """Bring an array (or scalar) to the host as a NumPy array."""
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


def to_device(a: Any, xp: ModuleType) -> Any:
    """Move a host array onto the backend xp (a no-op for NumPy)."""
    return a if xp is np else xp.asarray(a)


def resolve_dtype(dtype: str | np.dtype | type) -> np.dtype:
    """float32 or float64, from a name or dtype; anything else is a clear error."""
    d = np.dtype(dtype)
    if d.name not in DTYPES:
        raise ValueError(f"dtype {d.name!r} is not supported: choose one of {', '.join(DTYPES)}")
    return d


def default_rng(seed: int | None, xp: ModuleType = np) -> Any:
    """A seeded generator on the backend: numpy.random.Generator or cupy.random.Generator."""
    return xp.random.default_rng(seed)


def synchronize(xp: ModuleType) -> None:
    """Wait for queued GPU work (for honest timings); nothing to wait for on NumPy."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()
