"""The lessons: each runs alone in smoke mode and writes its figures; the README lists exactly the files there.

Each lesson runs as the learner runs it, `python lessons/NN_name.py`, in a subprocess from the repository
root, with MINIVAE_SMOKE=1 (tiny data, one epoch) and its figures redirected to a temporary folder.
"""

from __future__ import annotations

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


def run_lesson(name: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINIVAE_SMOKE="1", MINIVAE_LESSONS_OUT=str(out), MPLBACKEND="Agg")
    # Smoke runs are tiny: extra BLAS/OpenMP threads only cost start-up and, on a busy CI machine, contention.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return subprocess.run(
        [sys.executable, str(LESSONS / name), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_there_are_twelve_lessons():
    assert [f[:2] for f in LESSON_FILES] == [f"{i:02d}" for i in range(1, 13)], LESSON_FILES


@pytest.mark.parametrize("name", LESSON_FILES)
def test_lesson_runs_in_smoke_mode(name, tmp_path, mnist_ready):
    proc = run_lesson(name, tmp_path)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    pngs = sorted(tmp_path.glob("*.png"))
    assert pngs, f"{name} wrote no figure into {tmp_path}: {sorted(tmp_path.iterdir())}"
    assert all(p.name.startswith(name[:3]) for p in pngs), [p.name for p in pngs]
    for p in pngs:
        assert p.stat().st_size > 1000, f"{p.name} is (nearly) empty"
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{p.name} is not a PNG"
    assert "done in" in proc.stdout
    assert "smoke mode" in proc.stdout


def test_lesson_docstrings_are_chapters():
    """Each lesson opens with its chapter: a 'Lesson N:' title and a 'What to look at' section."""
    for name in LESSON_FILES:
        text = (LESSONS / name).read_text()
        n = int(name[:2])
        assert text.startswith(f'"""Lesson {n}: '), name
        assert "What to look at" in text.split('"""')[1], name


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
