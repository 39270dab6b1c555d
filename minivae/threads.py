"""How many BLAS threads a step uses: as many as there are cores no other program is using.

OpenBLAS starts one thread per core and splits every large product between them; each product
waits for its slowest thread. On an idle 2-core machine two threads make the conv step about 1.4
times faster than one; beside one busy process the second thread waits on a core that process
holds, and the step becomes slower than on one thread (`benchmarks/bench_train_step.py
--contention` measures both). So the policy counts the cores that are free when it is asked:

    free    = cores - busy        busy: cores' worth of CPU time other programs used just now
    threads = clamp(round(free), 1, cores)

`cores` is this process's CPU affinity (`os.sched_getaffinity`), capped by a cgroup CPU quota;
`busy` is read from /proc/stat over a short window (Linux), else from the 1-minute load average.
`requested` (the `--threads N` flag, the `threads` config field) overrides the policy, and so does
OPENBLAS_NUM_THREADS when it is set.

The thread count is part of "the same run": same-seed runs are bit-identical at the same thread
count, so pass `--threads N` to reproduce a run exactly on a machine whose load changes.

The same cores serve NumPy's own passes (`in_parts`, at the end of this module): a pass over a large
array that runs between two products, such as im2col's copy or the loss, is cut into as many parts as
there are BLAS threads and the parts run at once. That changes no number: each part computes its own
elements exactly as the whole pass would.

This module sits at the bottom of the import graph (stdlib, threadpoolctl, minivae.errors), so the
lessons, minivae.nn and minivae.training may all use it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from minivae.errors import UserError

SAMPLE_SECONDS = 0.2  # /proc/stat window: long enough for 20 clock ticks per core at USER_HZ 100


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 `cpu.max` quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _cpu_ticks(cpus: set[int] | None, path: str = "/proc/stat") -> tuple[int, int]:
    """(busy, total) clock ticks since boot, summed over `cpus` (all when None), from /proc/stat.

    A `cpuN` line reads: user nice system idle iowait irq softirq steal ...; idle and iowait are
    the free time, steal (time the hypervisor gave to another machine) counts as busy, and so does
    nice time. A `nice -n 19` program yields its core only to processes of its own scheduling group:
    Linux's autogroup puts each terminal session in a group of its own, and groups share the cores
    equally whatever their members' nice values. Beside a niced busy loop started in another session,
    two BLAS threads made the step 2.3 to 9.2 times slower than one (docs/performance.md), so a niced
    program's time is counted as busy: at worst a run beside a niced job of its own session takes one
    thread where two would have been up to 1.3 times faster.
    """
    busy = total = 0
    with open(path) as f:
        for line in f:
            name, *ticks = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if cpus is not None and int(name[3:]) not in cpus:
                continue
            t = [int(v) for v in ticks[:8]]
            busy += t[0] + t[1] + t[2] + t[5] + t[6] + t[7]  # user nice system irq softirq steal
            total += sum(t)
    return busy, total


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores' worth of CPU time that other processes use now (0.0 on an idle machine).

    Linux: (busy ticks of our cores - our own CPU time) / wall time, over a `seconds` window.
    Elsewhere: the 1-minute load average (0.0 where there is none).
    """
    try:
        cpus = os.sched_getaffinity(0)
        busy0, total0 = _cpu_ticks(cpus)
        own0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        busy1, total1 = _cpu_ticks(cpus)
        own1, wall1 = time.process_time(), time.perf_counter()
    except (AttributeError, OSError, ValueError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    if total1 <= total0:
        return 0.0
    # fraction of our cores' ticks that were busy, in cores, minus our own share of it
    busy = (busy1 - busy0) / (total1 - total0) * len(cpus)
    return max(0.0, busy - (own1 - own0) / (wall1 - wall0))


def pick(
    requested: int | None = None,
    *,
    cores: int | None = None,
    busy: float | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """The BLAS thread count the policy picks now: `requested` if given, else OPENBLAS_NUM_THREADS if
    set, else round(cores - busy) between 1 and cores.

    cores: cores this process may use (default `available_cores()`);
    busy:  cores' worth of CPU other processes use (default `busy_cores()`, a 0.2 s sample);
    env:   the environment (default os.environ).
    They are arguments so a test can pass a machine's state instead of reading this one's.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise UserError(
                f"--threads must be a whole number >= 1 (got {requested!r}); omit it for the policy"
            )
        return requested
    fixed = (os.environ if env is None else env).get("OPENBLAS_NUM_THREADS", "")
    if fixed.isdigit() and int(fixed) >= 1:
        return int(fixed)
    if cores is None:
        cores = available_cores()
    if busy is None:
        busy = busy_cores()
    free = cores - busy
    return max(1, min(cores, math.floor(free + 0.5)))


def apply(requested: int | None = None) -> int:
    """Set this process's BLAS and OpenMP thread count to `pick(requested)`; return that count.

    It lasts until the next `apply` (or the end of a `limit` block that started before it).
    """
    from threadpoolctl import threadpool_limits

    n = pick(requested)
    threadpool_limits(limits=n)
    set_parts(n)
    return n


@contextlib.contextmanager
def limit(requested: int | None = None) -> Iterator[int]:
    """`with threads.limit(1) as n:` runs the block on `pick(requested)` BLAS threads, then restores."""
    from threadpoolctl import threadpool_limits

    global _parts
    n = pick(requested)
    before = _parts
    with threadpool_limits(limits=n):
        set_parts(n)
        try:
            yield n
        finally:
            _parts = before


def current() -> int:
    """The BLAS thread count in effect now (the largest over the BLAS libraries loaded; 1 if none)."""
    from threadpoolctl import threadpool_info

    counts = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return max(counts, default=1)


# ------------------------------------------------------------------- NumPy's passes on the BLAS cores

SPIN_EXPONENT = 16  # OPENBLAS_THREAD_TIMEOUT minivae sets: idle OpenBLAS threads spin 2^16 cycles, then sleep
MAX_SPIN_EXPONENT = 20  # above 2^20 cycles (about 0.4 ms) the spinning threads hold the cores a part needs
SPLIT_ELEMENTS = 1 << 16  # a smaller pass stays whole: handing a part to a thread costs tens of microseconds

_parts = 1  # how many parts in_parts cuts a pass into: set_parts(n), called by apply() and limit()
_blas_threads_sleep = False  # set by let_blas_threads_sleep(), when minivae is imported
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (the process that made it, its threads, the pool)


def let_blas_threads_sleep(environ: Any = None, numpy_loaded: bool | None = None) -> bool:
    """Before NumPy loads OpenBLAS, ask OpenBLAS's idle threads to go to sleep soon after a product.

    After each product OpenBLAS's worker threads spin, waiting for the next one, for
    2^OPENBLAS_THREAD_TIMEOUT clock cycles before they sleep: 2^28 by default, about 0.1 s. A pass that
    in_parts hands to a second thread between two products would share its core with a spinning
    worker and gain nothing (docs/performance.md measured 1.03 to 1.07 of the conv step). With
    OPENBLAS_THREAD_TIMEOUT=16 they spin about 20 microseconds, long enough to catch back-to-back
    products, then give the core back. OpenBLAS reads the variable once, when it loads, so this runs
    when `import minivae` comes before NumPy's import (minivae/__init__.py); a value the user set is kept.
    Returns whether the idle threads sleep soon, i.e. whether in_parts may use their cores.
    environ and numpy_loaded default to os.environ and whether NumPy is imported (arguments for tests).
    """
    global _blas_threads_sleep
    environ = os.environ if environ is None else environ
    numpy_loaded = "numpy" in sys.modules if numpy_loaded is None else numpy_loaded
    if not numpy_loaded:
        environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(SPIN_EXPONENT))
    value = environ.get("OPENBLAS_THREAD_TIMEOUT", "")
    _blas_threads_sleep = value.isdigit() and int(value) <= MAX_SPIN_EXPONENT
    return _blas_threads_sleep


def blas_threads_sleep() -> bool:
    """Whether OpenBLAS's idle threads go to sleep soon after a product (let_blas_threads_sleep)."""
    return _blas_threads_sleep


@functools.cache
def _blas_is_openblas() -> bool:
    """Whether NumPy's BLAS is OpenBLAS (other libraries' threads keep their own spinning rules)."""
    from threadpoolctl import threadpool_info

    return any(p["user_api"] == "blas" and p["internal_api"] == "openblas" for p in threadpool_info())


def set_parts(n: int) -> int:
    """Let in_parts cut a pass into n parts (the BLAS thread count) when OpenBLAS's idle threads sleep
    soon, else keep passes whole; return the number of parts now in effect. apply() and limit() call it."""
    global _parts
    _parts = n if n > 1 and _blas_threads_sleep and _blas_is_openblas() else 1
    return _parts


def in_parts(fn: Callable[[slice], object], n: int, array: Any) -> None:
    """Call fn(part) for slices that cut range(n) into contiguous parts, the parts on separate threads.

    fn(slice(a, b)) must compute exactly the elements of rows a to b of its output, reading and writing
    nothing another part writes; then the parts together compute what fn(slice(0, n)) alone computes,
    bit for bit. NumPy releases the GIL while it copies or runs a ufunc over an array, so the parts run
    on separate cores. `array` is the largest array the pass touches: a pass over a CuPy array (the GPU
    runs it as it is), over fewer than SPLIT_ELEMENTS elements, or with one part in effect (set_parts)
    is the single call fn(slice(0, n)).
    """
    k = min(_parts, n)
    if k <= 1 or type(array).__module__ != "numpy" or array.size < SPLIT_ELEMENTS:
        fn(slice(0, n))
        return
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] < k - 1:  # a forked child makes its own
        _pool = os.getpid(), k - 1, ThreadPoolExecutor(k - 1, thread_name_prefix="minivae-parts")
    ends = [n * i // k for i in range(k + 1)]
    others = [_pool[2].submit(fn, slice(a, b)) for a, b in zip(ends[1:-1], ends[2:])]
    fn(slice(ends[0], ends[1]))
    for f in others:
        f.result()  # re-raises a part's exception here


def parts() -> int:
    """How many parts in_parts cuts a large pass into now (1: passes stay whole)."""
    return _parts
