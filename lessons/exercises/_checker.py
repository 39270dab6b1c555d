"""The checker's machinery: what an exercise is, how its errors are measured, how a student's file is
loaded and run, and how a failure is turned into one readable line.

An exercise's check(student, out) runs the student's code, records each measured error with its
tolerance (out.measure) and keeps what the diagnoses need in out.probe. A diagnosis is a test on that
probe: it compares the student's numbers with the reference and with the signature of one planted bug
(a ratio of exactly 1/N, a transposed shape, a flipped sign, a matching buggy variant). Nothing here
reads the student's source.
"""

from __future__ import annotations

import importlib.util
import math
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from minivae.nn.gradcheck import rel_error

TOL_FD = 1e-6  # float64 central differences: a right gradient agrees to ~1e-9, a wrong one to ~1e-1
TOL_REF = 1e-8  # against minivae's own float64 implementation: only rounding differs


# ------------------------------------------------------------------------------- what an exercise is


@dataclass(frozen=True)
class Diagnosis:
    """A recognisable bug: its key (the tests name it), what the student reads, and its signature."""

    key: str
    message: str
    matches: Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Exercise:
    name: str  # the command-line name
    filename: str  # the stub in lessons/exercises/
    lesson: int  # the lesson that teaches it
    covers: str  # one line for --list
    check: Callable[[Any, Outcome], None]
    diagnoses: tuple[Diagnosis, ...]
    solution: Callable[[], Any]  # minivae's implementation, shaped like the student's module


@dataclass
class Measure:
    what: str
    error: float
    tol: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.error <= self.tol  # False for NaN too


@dataclass
class Outcome:
    """What one exercise's check found. status: PASS, FAIL, NOT DONE or ERROR."""

    exercise: Exercise
    measures: list[Measure] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)
    status: str = "PASS"
    detail: str = ""  # the one line for NOT DONE / ERROR
    bugs: list[Diagnosis] = field(default_factory=list)

    def measure(self, what: str, student: Any, reference: Any, tol: float = TOL_REF, note: str = "") -> float:
        """Record the relative error of student against reference (inf, with the reason, if they cannot
        be compared); returns the error."""
        error, why = mismatch(student, reference)
        self.measures.append(Measure(what, error, tol, "; ".join(s for s in (why, note) if s)))
        return error

    def record(self, what: str, error: float, tol: float, note: str = "") -> None:
        self.measures.append(Measure(what, error, tol, note))

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


# --------------------------------------------------------------------------------- error measurement


def as_array(a: Any) -> np.ndarray | None:
    """a as a float64 NumPy array, or None if it is not numbers."""
    if a is None:
        return None
    try:
        return np.asarray(a.get() if hasattr(a, "get") else a, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def mismatch(student: Any, reference: Any) -> tuple[float, str]:
    """(relative error, why it is infinite): rel_error when shapes agree and values are finite."""
    a, b = as_array(student), as_array(reference)
    if a is None:
        return math.inf, f"got {type(student).__name__}, expected an array"
    if a.shape != b.shape:
        return math.inf, f"shape {a.shape}, expected {b.shape}"
    if not np.isfinite(a).all():
        return math.inf, "not finite (nan or inf)"
    return rel_error(a, b), ""


def close(student: Any, reference: Any, tol: float = 1e-6) -> bool:
    """Same shape, finite, and equal to tol relative: the test every signature uses."""
    return mismatch(student, reference)[0] <= tol


def ratio(student: Any, reference: Any) -> float | None:
    """The scalar c with student = c * reference (to 1e-6 relative), or None if there is none."""
    a, b = as_array(student), as_array(reference)
    if a is None or b is None or a.shape != b.shape or not np.isfinite(a).all():
        return None
    bb = float((b * b).sum())
    if bb == 0.0:
        return None
    c = float((a * b).sum()) / bb
    return c if close(a, c * b) else None


def is_ratio(student: Any, reference: Any, c: float) -> bool:
    r = ratio(student, reference)
    return r is not None and abs(r - c) <= 1e-6 * abs(c)


class Worst:
    """The largest error over many shapes, and the shape where it happened (for the note)."""

    def __init__(self, out: Outcome) -> None:
        self.out, self.worst, self.n = out, {}, 0

    def add(self, what: str, student: Any, reference: Any, case: dict[str, int]) -> None:
        error, why = mismatch(student, reference)
        if what not in self.worst or not error <= self.worst[what][0]:
            self.worst[what] = (error, why, case)

    def record(self, tol: float = TOL_REF) -> None:
        for what, (error, why, case) in self.worst.items():
            at = ", ".join(f"{k}={v}" for k, v in case.items())
            note = f"worst of {self.n} shapes, at {at}" if error else f"{self.n} shapes, every one exact"
            note += f"; {why}" if why else ""
            self.out.record(what, error, tol, note)


def for_cases(draw: Callable[[Callable[[int, int], int]], dict[str, int]], run: Callable, n: int = 6) -> int:
    """Call run(case) for n cases, case = draw(ints) with ints(lo, hi) an integer in [lo, hi].

    With hypothesis installed the cases come from it (derandomized: the same cases every time, the
    small corners first); without it, from a seeded generator. An exception in run stops the cases and
    is raised again, with its own traceback, so that the runner can name the student's line.
    """
    failure: list[BaseException] = []

    def once(ints: Callable[[int, int], int]) -> None:
        case = draw(ints)  # drawn every time: hypothesis wants the same draws on every run
        if not failure:
            try:
                run(case)
            except Exception as e:  # re-raised below, outside hypothesis
                failure.append(e)

    try:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import strategies as st
    except ImportError:
        rng = np.random.default_rng(0)
        for _ in range(n):
            once(lambda lo, hi: int(rng.integers(lo, hi + 1)))
    else:
        config = settings(
            max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate]
        )
        config = settings(config, suppress_health_check=list(HealthCheck))
        given(st.data())(config(lambda data: once(lambda lo, hi: data.draw(st.integers(lo, hi)))))()
    if failure:
        raise failure[0]
    return n


# ------------------------------------------------------------------------- loading and running code


class NotDone(Exception):
    """The student's file could not be graded for a reason that is not a bug in it (missing file)."""


def load_student(path: Path) -> ModuleType:
    """Import the student's file as a fresh module (a second run sees the edits)."""
    if not path.is_file():
        raise NotDone(f"no file {path}: restore it with `git checkout {path}`")
    spec = importlib.util.spec_from_file_location(f"exercise_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def where(exc: BaseException, student_file: Path) -> str:
    """file:line of the deepest frame in the student's file (else the deepest frame of all)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{Path(exc.filename).name}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve() == student_file.resolve()]
    frame = (mine or frames or [None])[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}" if frame else student_file.name


def first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def grade(exercise: Exercise, directory: Path | None) -> Outcome:
    """Run one exercise's check on the student's file in directory (None: minivae's own solution)."""
    out = Outcome(exercise)
    path = (directory / exercise.filename) if directory is not None else Path("minivae")
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            student = exercise.solution() if directory is None else load_student(path)
            exercise.check(student, out)
    except NotDone as e:
        out.status, out.detail = "NOT DONE", str(e)
    except NotImplementedError as e:
        out.status = "NOT DONE"
        out.detail = f"not done yet ({where(e, path)}: {first_line(e) or 'NotImplementedError'})"
    except Exception as e:
        out.status, out.detail = "ERROR", f"{type(e).__name__} at {where(e, path)}: {first_line(e)}"
    if out.status == "NOT DONE":
        return out
    out.bugs = [d for d in exercise.diagnoses if _safe_match(d, out.probe)]
    if out.status == "PASS" and (out.bugs or not all(m.ok for m in out.measures) or not out.measures):
        out.status = "FAIL"
    return out


def _safe_match(d: Diagnosis, probe: dict[str, Any]) -> bool:
    """A signature test that cannot run on this probe (a value missing, a shape off) does not match."""
    try:
        with np.errstate(all="ignore"):
            return bool(d.matches(probe))
    except Exception:
        return False


def report(out: Outcome, file: Any = None) -> None:
    """Print one exercise's result: a header line, then each measure, then the likely bugs."""
    ex = out.exercise
    head = {"PASS": "PASS", "FAIL": "FAIL", "NOT DONE": "TODO", "ERROR": "FAIL"}[out.status]
    print(f"[{head}] {ex.name:<11} {ex.covers} (lesson {ex.lesson}, {ex.filename})", file=file)
    if out.detail:
        print(f"       {out.detail}", file=file)
    for m in out.measures:
        mark = "ok  " if m.ok else "FAIL"
        note = f"  [{m.note}]" if m.note else ""
        print(f"       {mark} {m.what:<46} {m.error:8.1e} (tolerance {m.tol:.0e}){note}", file=file)
    for d in out.bugs:
        print(f"       likely bug: {d.message}", file=file)
