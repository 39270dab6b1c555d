"""Plumbing shared by the lessons: flags, the three sizes, where figures go, MNIST subsets, and printing
a number next to the range the learner should expect. No VAE code lives here: that is minivae's.

How a lesson is written (jupytext's percent format, so it runs as a script and opens as a notebook)
--------------------------------------------------------------------------------------------------
    # %% [markdown]
    # # Lesson 2: one Linear layer. Forward, backward, the chain rule, and a gradient check you can trust.
    #
    # ## The idea
    # ... chapter text as markdown; math in indented code blocks or $...$ ...

    # %%
    import _common
    ...                                          # the lesson's other imports
    lesson = _common.setup("02_linear_layer")    # optional: add_args=callable(parser) for extra flags
    xp = lesson.xp

    # %% [markdown]
    # ## Forward and backward by hand
    # ... the text for this step ...

    # %%
    ...                                          # module-level code for this step: no def run(), no __main__

    # %%
    lesson.done()                                # prints "done in X.X s"

Rules: the file starts with `# %% [markdown]` and the `# # Lesson N: ...` heading (N from the file name);
one markdown heading is "What to look at"; code cells are plain module-level code, so a notebook shows
each step's output and figures under its text. Helpers a lesson defines (a function, a small class) go
in the code cell that first uses them. `import _common` comes before any `minivae` import (it makes an
uninstalled checkout importable). Save every figure through `lesson.savefig(fig, name, what)` or, for a
file minivae.analysis.figures wrote, `_common.saved(path, what)`: both print where it went and show it
inline in a notebook. `expect()` and `savefig()` return nothing, so a cell ending in one prints no value.

Started as a script, `python lessons/NN_name.py [flags]`, every lesson takes the same flags:
    --smoke            tiny and fast (what the tests run); also MINIVAE_SMOKE=1
    --full             the real-size version (minutes, not seconds); also MINIVAE_FULL=1
    --backend cupy     run on the GPU (numpy is the default); also MINIVAE_BACKEND; exit code 2 without CuPy
    --out DIR          where figures go; also MINIVAE_LESSONS_OUT; default lessons/out/
    --seed N           the random seed (default 0); also MINIVAE_SEED
A UserError raised anywhere in the lesson (no CuPy, no data, a bad folder) ends the script with one
`error: ...` line on stderr and exit code 2 (setup installs a sys.excepthook for it).

Run in a Jupyter kernel (Jupyter, JupyterLab, VS Code's "Run Cell", nbclient), setup reads no command
line: the same settings come from those environment variables, and a lesson's own extra flags take their
defaults. A UserError prints as one `error: ...` line under the cell and stops "Run All" there. Every
figure the lesson saves is also shown inline. The kernel starts in the notebook's folder, lessons/, which
is what makes `import _common` work.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

try:
    import minivae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def in_notebook() -> bool:
    """True inside a Jupyter kernel (ipykernel started by its launcher), False for `python lesson.py`
    and for `%run lesson.py --flags`, whose sys.argv is the script's."""
    if "ipykernel" not in sys.modules:
        return False
    return Path(sys.argv[0]).stem.endswith("kernel_launcher") or "-f" in sys.argv[1:]


import matplotlib  # noqa: E402

if not in_notebook():
    matplotlib.use("Agg")  # a script writes figures to files; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minivae.backend import backend_name, get_backend  # noqa: E402
from minivae.errors import UserError  # noqa: E402

LESSONS_DIR = Path(__file__).resolve().parent
MODES = ("smoke", "default", "full")
BACKENDS = ("numpy", "cupy")


@dataclass
class Lesson:
    """What a lesson needs to know about how it was started."""

    name: str  # "09_train_mlp_vae"
    mode: str  # "smoke" | "default" | "full"
    xp: ModuleType  # numpy or cupy
    out: Path  # figures go here
    seed: int
    args: argparse.Namespace
    notebook: bool = False  # started in a Jupyter kernel
    t0: float = field(default_factory=time.perf_counter)

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

    def savefig(self, fig: Any, name: str, what: str) -> None:
        """Save a matplotlib figure as <out>/<NN>_<name>.png (lesson.figure(name)), close it, say what it
        shows, and show it inline in a notebook. Returns nothing, so a cell ending here prints no value."""
        path = self.figure(name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        saved(path, what)

    def run_dir(self, name: str) -> Path:
        """A fresh directory for a minivae training run (a previous lesson run there is removed)."""
        d = self.out / "runs" / f"{self.name.split('_')[0]}_{name}"
        if d.exists():
            shutil.rmtree(d)
        return d

    def done(self) -> None:
        """The lesson's last line: how long it took since setup."""
        print(f"done in {time.perf_counter() - self.t0:.1f} s")


def env_flag(var: str) -> bool:
    return os.environ.get(var, "").strip() not in ("", "0")


def smoke_from_env() -> bool:
    return env_flag("MINIVAE_SMOKE")


def lesson_title(name: str) -> str:
    """'Lesson N: ...' from the lesson file's `# # Lesson N:` heading (the name when there is none)."""
    path = LESSONS_DIR / f"{name}.py"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    m = re.search(r"^# # (Lesson \d+: .*)$", text, flags=re.M)
    return m.group(1).strip() if m else name


def build_parser(
    name: str, title: str, add_args: Callable[[argparse.ArgumentParser], None] | None
) -> argparse.ArgumentParser:
    """The common flags, their defaults taken from the MINIVAE_* environment, plus the lesson's own."""
    p = argparse.ArgumentParser(prog=f"python lessons/{name}.py", description=title)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny and fast, for tests (or MINIVAE_SMOKE=1)")
    size.add_argument("--full", action="store_true", help="the real-size version (or MINIVAE_FULL=1)")
    p.add_argument(
        "--backend",
        default=os.environ.get("MINIVAE_BACKEND", "").strip() or "numpy",
        choices=BACKENDS,
        help="array backend (default $MINIVAE_BACKEND or numpy)",
    )
    p.add_argument("--out", default=None, help="figure folder (default $MINIVAE_LESSONS_OUT or lessons/out)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default $MINIVAE_SEED or 0)")
    if add_args:
        add_args(p)
    return p


def seed_from_env() -> int:
    raw = os.environ.get("MINIVAE_SEED", "").strip() or "0"
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"MINIVAE_SEED must be an integer, got {raw!r}; set e.g. MINIVAE_SEED=0") from None


def show_user_errors(notebook: bool) -> None:
    """A UserError becomes one `error: ...` line: exit code 2 in a script, a short cell error in Jupyter."""
    if notebook:
        from IPython import get_ipython

        def handler(shell, etype, value, tb, tb_offset=None):
            print(f"error: {value}", file=sys.stderr)
            return []

        shell = get_ipython()
        if shell is not None:
            shell.set_custom_exc((UserError,), handler)
        return

    default_hook = sys.excepthook

    def hook(etype, value, tb):
        if issubclass(etype, UserError):
            sys.stdout.flush()
            print(f"error: {value}", file=sys.stderr)
            sys.exit(2)
        default_hook(etype, value, tb)

    sys.excepthook = hook


def setup(name: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None) -> Lesson:
    """Start a lesson: settings from the flags (a script) or the environment (a notebook), the backend,
    the output folder. `name` is the file's stem ("02_linear_layer"; a path works too); `add_args(parser)`
    adds the lesson's own flags (in a notebook they take their defaults).
    """
    name = Path(name).stem
    notebook = in_notebook()
    show_user_errors(notebook)
    p = build_parser(name, lesson_title(name), add_args)
    args = p.parse_args([] if notebook else None)  # in a notebook: every flag at its default
    if args.backend not in BACKENDS:
        raise UserError(f"MINIVAE_BACKEND is {args.backend!r}; use one of {', '.join(BACKENDS)}")
    if args.seed is None:
        args.seed = seed_from_env()
    smoke = args.smoke or smoke_from_env()
    mode = "full" if args.full else "smoke" if smoke else "full" if env_flag("MINIVAE_FULL") else "default"
    xp = get_backend(args.backend)  # BackendError (a UserError) when CuPy cannot run here
    out = Path(args.out or os.environ.get("MINIVAE_LESSONS_OUT") or LESSONS_DIR / "out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the figure folder {out}: {e.strerror or e}; choose another --out"
        ) from e
    lesson = Lesson(name, mode, xp, out, args.seed, args, notebook)
    where = "notebook, settings from MINIVAE_* variables" if notebook else "script"
    print(f"== {name}  (mode: {mode}, backend: {lesson.backend}, figures in {out}; {where})")
    if mode == "smoke":
        print("   smoke mode: tiny data and shapes; trained numbers will miss their ranges, that is expected")
    return lesson


def section(title: str) -> None:
    print(f"\n-- {title}")


def expect(
    label: str, value: float, lo: float | None = None, hi: float | None = None, fmt: str = ".3g"
) -> None:
    """Print `label: value (expect lo..hi)`, marked when the value is outside that range. Returns nothing,
    so a notebook cell ending in expect() shows no stray value."""
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


def saved(path: Path, what: str) -> None:
    """Say where a figure went and what it shows; in a notebook, also show it under the cell."""
    print(f"   figure: {path}  ({what})")
    if in_notebook():
        from IPython.display import Image, display

        display(Image(filename=str(path)))


def mnist(split: str, n: int, xp: ModuleType = np, dtype: str = "float32", start: int = 0):
    """n MNIST images from `split`, starting at `start`: (x (n, 1, 28, 28) floats in [0, 1] on xp,
    labels (n,) NumPy ints). The data comes from minivae's verified cache (fetched on first use)."""
    from minivae.data import as_nchw, load_mnist, to_float

    images, labels = load_mnist(split)
    images, labels = images[start : start + n], labels[start : start + n]
    return as_nchw(to_float(images, xp, dtype)), labels.astype(np.int64)
