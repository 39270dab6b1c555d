"""Plumbing shared by the lessons: flags, the three sizes, where figures go, MNIST subsets, and printing
a number next to the range the learner should expect. No VAE code lives here: that is minivae's.

Every lesson takes the same flags:
    --smoke            tiny and fast (what the tests run); also MINIVAE_SMOKE=1
    --full             the real-size version (minutes, not seconds)
    --backend cupy     run on the GPU (numpy is the default); a clear message and exit code 2 without CuPy
    --out DIR          where figures go; also MINIVAE_LESSONS_OUT; default lessons/out/
    --seed N           the random seed (default 0)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

try:
    import minivae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib

matplotlib.use("Agg")  # figures go to files; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minivae.backend import backend_name, get_backend  # noqa: E402
from minivae.errors import UserError  # noqa: E402

LESSONS_DIR = Path(__file__).resolve().parent
MODES = ("smoke", "default", "full")


@dataclass
class Lesson:
    """What a lesson needs to know about how it was started."""

    name: str  # "09_train_mlp_vae"
    mode: str  # "smoke" | "default" | "full"
    xp: ModuleType  # numpy or cupy
    out: Path  # figures go here
    seed: int
    args: argparse.Namespace

    @property
    def backend(self) -> str:
        return backend_name(self.xp)

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    def pick(self, smoke: Any, default: Any, full: Any) -> Any:
        """The setting for this mode, e.g. lesson.pick(smoke=64, default=10_000, full=60_000)."""
        return {"smoke": smoke, "default": default, "full": full}[self.mode]

    def figure(self, name: str) -> Path:
        """The path for a figure: <out>/<lesson number>_<name>.png."""
        return self.out / f"{self.name.split('_')[0]}_{name}.png"

    def savefig(self, fig: Any, name: str, what: str) -> Path:
        """Save a matplotlib figure as <out>/<NN>_<name>.png, close it, and say what it shows."""
        path = self.figure(name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        saved(path, what)
        return path

    def run_dir(self, name: str) -> Path:
        """A fresh directory for a minivae training run (a previous lesson run there is removed)."""
        d = self.out / "runs" / f"{self.name.split('_')[0]}_{name}"
        if d.exists():
            shutil.rmtree(d)
        return d


def smoke_from_env() -> bool:
    return os.environ.get("MINIVAE_SMOKE", "").strip() not in ("", "0")


def setup(
    file: str, doc: str | None, add_args: Callable[[argparse.ArgumentParser], None] | None = None
) -> Lesson:
    """Parse the common flags (plus any the lesson adds), pick the backend, make the output folder."""
    name = Path(file).stem
    summary = (doc or "").strip().splitlines()[0] if doc else name
    p = argparse.ArgumentParser(prog=f"python lessons/{name}.py", description=summary)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny and fast, for tests (or MINIVAE_SMOKE=1)")
    size.add_argument("--full", action="store_true", help="the real-size version (takes minutes)")
    p.add_argument(
        "--backend", default="numpy", choices=("numpy", "cupy"), help="array backend (default numpy)"
    )
    p.add_argument("--out", default=None, help="figure folder (default $MINIVAE_LESSONS_OUT or lessons/out)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if add_args:
        add_args(p)
    args = p.parse_args()
    mode = "full" if args.full else "smoke" if (args.smoke or smoke_from_env()) else "default"
    xp = get_backend(args.backend)  # BackendError (a UserError) when CuPy cannot run here
    out = Path(args.out or os.environ.get("MINIVAE_LESSONS_OUT") or LESSONS_DIR / "out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the figure folder {out}: {e.strerror or e}; choose another --out"
        ) from e
    lesson = Lesson(name, mode, xp, out, args.seed, args)
    print(f"== {name}  (mode: {mode}, backend: {lesson.backend}, figures in {out})")
    if mode == "smoke":
        print("   smoke mode: tiny data and shapes; trained numbers will miss their ranges, that is expected")
    return lesson


def main(run: Callable[[], None]) -> None:
    """Run a lesson; a UserError (no CuPy, no data, bad folder) becomes its message and exit code 2."""
    t0 = time.perf_counter()
    try:
        run()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"done in {time.perf_counter() - t0:.1f} s")


def section(title: str) -> None:
    print(f"\n-- {title}")


def expect(
    label: str, value: float, lo: float | None = None, hi: float | None = None, fmt: str = ".3g"
) -> bool:
    """Print `label: value (expect lo..hi)` and whether the value is in that range; returns that."""
    if lo is not None and hi is not None:
        rng = f"expect {lo:{fmt}} .. {hi:{fmt}}"
    elif hi is not None:
        rng = f"expect < {hi:{fmt}}"
    elif lo is not None:
        rng = f"expect > {lo:{fmt}}"
    else:
        rng = ""
    ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    mark = "" if ok else "   <-- outside the expected range"
    print(f"   {label}: {value:{fmt}}" + (f"   ({rng})" if rng else "") + mark)
    return ok


def saved(path: Path, what: str) -> None:
    print(f"   figure: {path}  ({what})")


def mnist(split: str, n: int, xp: ModuleType = np, dtype: str = "float32", start: int = 0):
    """n MNIST images from `split`, starting at `start`: (x (n, 1, 28, 28) floats in [0, 1] on xp,
    labels (n,) NumPy ints). The data comes from minivae's verified cache (fetched on first use)."""
    from minivae.data import as_nchw, load_mnist, to_float

    images, labels = load_mnist(split)
    images, labels = images[start : start + n], labels[start : start + n]
    return as_nchw(to_float(images, xp, dtype)), labels.astype(np.int64)
