"""Backend selection: NumPy always works, CuPy asked for without a GPU is a clear error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import CUPY_OK, needs_cupy

from minivae.backend import BackendError, get_array_module, get_backend, resolve_dtype, to_numpy
from minivae.errors import UserError


def test_numpy_backend(monkeypatch):
    assert get_backend("numpy") is np
    monkeypatch.delenv("MINIVAE_BACKEND", raising=False)
    assert get_backend() is np
    monkeypatch.setenv("MINIVAE_BACKEND", "numpy")
    assert get_backend() is np
    assert get_array_module(np.zeros(2)) is np


def test_unknown_backend():
    with pytest.raises(BackendError, match="unknown backend 'jax'"):
        get_backend("jax")


@pytest.mark.skipif(CUPY_OK, reason="a working CuPy is present, so this error cannot happen here")
def test_cupy_missing_is_a_clear_user_error():
    with pytest.raises(UserError, match="backend 'cupy' asked for.*--backend numpy"):
        get_backend("cupy")


def test_cupy_missing_names_both_install_commands(monkeypatch):
    """One sentence naming the README's command for a clone and the one for an installed package."""
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` fails, as without CuPy
    with pytest.raises(BackendError) as e:
        get_backend("cupy")
    message = str(e.value)
    assert message.startswith("backend 'cupy' asked for, but CuPy is not installed: install it with ")
    assert 'pip install -e ".[gpu]" in a clone of minivae' in message
    assert 'pip install "minivae[gpu]" for the installed package' in message
    assert "gpu13 for CUDA 13" in message and "or use --backend numpy" in message
    assert "\n" not in message and message.count(". ") == 0


def test_import_does_not_need_cupy():
    """`import minivae` and the whole library import with CuPy blocked."""
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import minivae, minivae.models, minivae.nn.losses, minivae.nn.optim, minivae.nn.gradcheck\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_dtypes():
    assert resolve_dtype("float32") == np.float32 and resolve_dtype(np.float64) == np.float64
    with pytest.raises(ValueError, match="float16"):
        resolve_dtype("float16")


@needs_cupy
def test_numpy_and_cupy_agree_float32():
    """The same seeded model on both backends: one training-sized step agrees to 1e-5 relative."""
    import cupy

    from minivae.models import build_model
    from minivae.nn.losses import vae_loss

    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    eps = rng.standard_normal((8, 15)).astype(np.float32)
    results = []
    for xp in (np, cupy):
        model = build_model("conv", 15, seed=0).to(xp)
        logits, mu, logvar = model.forward(xp.asarray(x), eps=xp.asarray(eps))
        out = vae_loss(logits, xp.asarray(x), mu, logvar, form="seed", beta=0.0005)
        model.backward(out.dlogits, out.dmu, out.dlogvar)
        results.append(
            {"logits": to_numpy(logits), **{k: to_numpy(g) for k, _, g in model.named_parameters()}}
        )
    for k in results[0]:
        a, b = results[0][k], results[1][k]
        assert np.abs(a - b).max() <= 1e-5 * max(np.abs(a).max(), 1e-30), k


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_numpy_backend_keeps_freed_memory_for_the_next_step():
    """After get_backend("numpy"), a 58 MB temporary (the conv step's im2col columns at batch 128) made and
    freed again and again comes back from the heap: a few page faults a time, not one per fresh page."""
    code = """
import resource, numpy as np
from minivae.backend import get_backend, keep_freed_memory
get_backend("numpy")
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = np.empty(58_000_000 // 4, np.float32); a[...] = 1.0; del a
print(keep_freed_memory(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 20)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kept, faults = done.stdout.split()
    if kept != "True":
        pytest.skip("this libc has no mallopt (not glibc)")
    assert float(faults) < 100  # without it: about 360 a time (4 KiB and 2 MiB pages of fresh memory)
