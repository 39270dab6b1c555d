"""Shared fixtures: the array backends to run on. CuPy cases skip, saying why, without a GPU."""

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
