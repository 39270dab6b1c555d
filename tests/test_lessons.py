"""The lessons: each runs alone as a script in smoke mode and writes its figures; each is a jupytext
percent-format file that converts to a notebook, and two of them run end to end as notebooks; the READMEs
list exactly the lesson files there and say how to open them.

A script runs as the learner runs it, `python lessons/NN_name.py`, in a subprocess from the repository
root, with MINIVAE_SMOKE=1 (tiny data, one epoch) and its figures redirected to a temporary folder. A
notebook runs as Jupyter runs it: jupytext turns the file into a notebook and nbclient executes it in a
python3 kernel of this interpreter (ipykernel), started in lessons/, with the same environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CUPY_OK, needs_cupy

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
LESSON_FILES = sorted(p.name for p in LESSONS.glob("[0-9][0-9]_*.py"))
NOTEBOOK_LESSONS = ["02_linear_layer.py", "06_reparameterization.py"]  # fast, and they need no MNIST


def smoke_env(out: Path) -> dict[str, str]:
    env = dict(os.environ, MINIVAE_SMOKE="1", MINIVAE_LESSONS_OUT=str(out))
    # Smoke runs are tiny: extra BLAS/OpenMP threads only cost start-up and, on a busy CI machine, contention.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    for var in ("MINIVAE_BACKEND", "MINIVAE_SEED", "MINIVAE_FULL"):
        env.pop(var, None)
    return env


def run_lesson(name: str, out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = dict(smoke_env(out), MPLBACKEND="Agg", **env)
    return subprocess.run(
        [sys.executable, str(LESSONS / name), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_there_are_fourteen_lessons():
    assert [f[:2] for f in LESSON_FILES] == [f"{i:02d}" for i in range(1, 15)], LESSON_FILES


def reads_mnist(name: str) -> bool:
    """Whether a lesson's code (its non-comment lines) loads MNIST or trains on it."""
    code = "\n".join(
        line for line in (LESSONS / name).read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return bool(re.search(r"mnist|TrainConfig|\btrain\(", code, flags=re.I))


MNIST_LESSONS = [n for n in LESSON_FILES if reads_mnist(n)]
OFFLINE_LESSONS = [n for n in LESSON_FILES if not reads_mnist(n)]


@pytest.mark.parametrize("name", MNIST_LESSONS)
def test_lesson_runs_in_smoke_mode(name, tmp_path, mnist_ready):
    check_smoke_run(name, tmp_path, run_lesson(name, tmp_path))


@pytest.mark.parametrize("name", OFFLINE_LESSONS)
def test_lesson_without_mnist_runs_in_smoke_mode(name, tmp_path):
    """The lessons that need no data run (not marked slow) with MINIVAE_DATA naming a file, so any attempt
    to read or fetch MNIST would fail."""
    no_data = tmp_path / "no-data"
    no_data.write_text("not a data folder")
    check_smoke_run(name, tmp_path, run_lesson(name, tmp_path, MINIVAE_DATA=str(no_data)))


def check_smoke_run(name: str, tmp_path: Path, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    pngs = sorted(tmp_path.glob("*.png"))
    assert pngs, f"{name} wrote no figure into {tmp_path}: {sorted(tmp_path.iterdir())}"
    assert all(p.name.startswith(name[:3]) for p in pngs), [p.name for p in pngs]
    for p in pngs:
        assert p.stat().st_size > 1000, f"{p.name} is (nearly) empty"
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{p.name} is not a PNG"
    assert re.search(r"^done in \d+\.\d s$", proc.stdout, flags=re.M), proc.stdout[-500:]
    assert "smoke mode" in proc.stdout


@pytest.mark.parametrize("name", LESSON_FILES)
def test_lesson_is_a_percent_format_chapter(name):
    """It opens with its chapter heading as a markdown cell, has a 'What to look at' heading, and its code
    is module-level cells (a notebook shows each step's output under its text), ending with done()."""
    text = (LESSONS / name).read_text()
    n = int(name[:2])
    assert text.startswith(f"# %% [markdown]\n# # Lesson {n}: "), text[:120]
    assert re.search(r"^# #+ What to look at\s*$", text, flags=re.M), f"{name}: no 'What to look at' heading"
    assert not re.search(r"^def run\(", text, flags=re.M), f"{name} still wraps its code in run()"
    assert "__main__" not in text, f"{name} still has an `if __name__ == '__main__'` wrapper"
    assert f'_common.setup("{name[:-3]}"' in text, f"{name} does not call _common.setup with its own name"
    assert text.rstrip().endswith("lesson.done()"), f"{name} does not end with lesson.done()"


@pytest.mark.parametrize("name", LESSON_FILES)
def test_lesson_converts_with_jupytext(name):
    """jupytext reads markdown and code cells, and the notebook survives ipynb and back unchanged."""
    jupytext = pytest.importorskip("jupytext", reason="the lessons extra: pip install -e '.[lessons]'")
    nbformat = pytest.importorskip("nbformat", reason="the lessons extra: pip install -e '.[lessons]'")
    nb = jupytext.read(LESSONS / name)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown" and nb.cells[0].source.startswith(f"# Lesson {int(name[:2])}: ")
    assert kinds.count("markdown") >= 3 and kinds.count("code") >= 3, kinds
    assert all(c.source.strip() for c in nb.cells), "an empty cell"
    ipynb = nbformat.reads(jupytext.writes(nb, fmt="ipynb"), as_version=4)
    nbformat.validate(ipynb)
    back = jupytext.reads(jupytext.writes(ipynb, fmt="py:percent"), fmt="py:percent")
    assert [(c.cell_type, c.source) for c in back.cells] == [(c.cell_type, c.source) for c in nb.cells]


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A python3 kernelspec that starts this interpreter, and the smoke environment, for nbclient."""
    pytest.importorskip("nbclient", reason="the lessons extra: pip install -e '.[lessons]'")
    pytest.importorskip("ipykernel", reason="the lessons extra: pip install -e '.[lessons]'")
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    out = tmp_path / "figures"
    (tmp_path / "no-data").write_text("not a data folder")  # the notebook lessons need no MNIST
    monkeypatch.setenv("MINIVAE_DATA", str(tmp_path / "no-data"))
    for k, v in smoke_env(out).items():
        monkeypatch.setenv(k, v)
    for var in ("MINIVAE_BACKEND", "MINIVAE_SEED", "MINIVAE_FULL", "MPLBACKEND"):
        monkeypatch.delenv(var, raising=False)  # the kernel picks its own (inline) matplotlib backend
    return out


def execute_notebook(name: str, allow_errors: bool = False):
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(LESSONS / name)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, allow_errors=allow_errors,
        resources={"metadata": {"path": str(LESSONS)}},  # Jupyter starts a kernel in the notebook's folder
    )  # fmt: skip
    client.execute()
    return nb


def outputs(nb, output_type: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == output_type]


@pytest.mark.parametrize("name", NOTEBOOK_LESSONS)
def test_lesson_runs_as_a_notebook(name, kernel_env):
    """Every cell runs without an error, the figure shows inline as a PNG, and the settings came from the
    environment (smoke mode, figures in MINIVAE_LESSONS_OUT)."""
    nb = execute_notebook(name)
    assert not outputs(nb, "error")
    text = "".join(o.text for o in outputs(nb, "stream") if o.name == "stdout")
    assert "mode: smoke" in text and "notebook" in text, text[:500]
    assert re.search(r"^done in \d+\.\d s$", text, flags=re.M), text[-500:]
    pngs = [o for o in outputs(nb, "display_data") if "image/png" in o.data]
    assert pngs, "no figure shown inline"
    saved = sorted(kernel_env.glob("*.png"))
    assert len(pngs) == len(saved) and saved, (len(pngs), saved)
    assert not outputs(nb, "execute_result"), "a cell ends in a value that the notebook prints"


@pytest.mark.skipif(CUPY_OK, reason="a working CuPy is present, so MINIVAE_BACKEND=cupy succeeds here")
def test_user_error_in_a_notebook_is_one_line(kernel_env, monkeypatch):
    """MINIVAE_BACKEND=cupy without CuPy: the setup cell fails with minivae's one-line message, no traceback."""
    monkeypatch.setenv("MINIVAE_BACKEND", "cupy")
    nb = execute_notebook(NOTEBOOK_LESSONS[0], allow_errors=True)
    setup_cell = next(c for c in nb.cells if c.cell_type == "code" and "_common.setup(" in c.source)
    err = "".join(o.text for o in setup_cell.outputs if o.output_type == "stream" and o.name == "stderr")
    assert err.startswith("error: backend 'cupy' asked for"), setup_cell.outputs
    assert "Traceback" not in err and not [o for o in setup_cell.outputs if o.output_type == "error"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MINIVAE_SEED": "x"}, "error: MINIVAE_SEED must be an integer, got 'x'"),
        ({"MINIVAE_BACKEND": "tpu"}, "error: MINIVAE_BACKEND is 'tpu'; use one of numpy, cupy"),
        (
            {"MINIVAE_LESSONS_OUT": "/dev/null/figures"},
            "error: cannot create the figure folder /dev/null/figures",
        ),
    ],
)
def test_a_bad_setting_is_one_error_line(env, message, tmp_path):
    """A UserError at module level of a script ends it with one line on stderr and exit code 2."""
    proc = subprocess.run(
        [sys.executable, str(LESSONS / NOTEBOOK_LESSONS[0])],
        cwd=ROOT, env={**smoke_env(tmp_path), **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@needs_cupy
@pytest.mark.parametrize("name", LESSON_FILES)
def test_lesson_runs_on_cupy(name, tmp_path, mnist_ready):
    """Every lesson's CuPy path, in smoke mode (on a machine with a GPU)."""
    proc = run_lesson(name, tmp_path, "--backend", "cupy")
    assert proc.returncode == 0, (
        f"{name} --backend cupy failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    assert sorted(tmp_path.glob("*.png")), f"{name} wrote no figure"


@pytest.mark.skipif(CUPY_OK, reason="a working CuPy is present, so --backend cupy succeeds here")
@pytest.mark.parametrize("name", ["01_arrays_and_backends.py", "14_cpu_vs_gpu.py"])
def test_backend_cupy_without_cupy_is_a_clear_error(name, tmp_path):
    proc = run_lesson(name, tmp_path, "--backend", "cupy")
    assert proc.returncode == 2, proc.stderr
    assert "backend 'cupy' asked for" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_readme_lists_exactly_the_lessons_in_order():
    readme = (LESSONS / "README.md").read_text()
    listed = re.findall(r"\b(\d\d_[a-z0-9_]+\.py)\b", readme)
    first_mentions = list(dict.fromkeys(listed))
    assert first_mentions == LESSON_FILES


@pytest.mark.parametrize("readme", ["README.md", "lessons/README.md"])
def test_readmes_say_how_to_open_the_lessons_as_notebooks(readme):
    text = (ROOT / readme).read_text()
    assert re.search(r"\bfourteen lessons\b", text, flags=re.I), readme
    assert 'pip install -e ".[lessons]"' in text
    assert "jupytext --to notebook lessons/02_linear_layer.py" in text
    assert "Run Cell" in text
