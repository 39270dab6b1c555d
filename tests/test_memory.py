"""The memory check: an estimate from the configuration alone, before anything is allocated."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from minivae.errors import UserError
from minivae.models import build_model
from minivae.nn import sigmoid
from minivae.training.config import PRESETS, TrainConfig
from minivae.training.memory import check_memory, estimate_bytes, host_available, parameter_count

GB = 10**9


@pytest.mark.parametrize("preset", [None, *PRESETS])
def test_default_configs_pass(preset):
    cfg = TrainConfig(**(PRESETS[preset] if preset else {})).validate()
    check_memory(cfg)  # on this machine
    check_memory(cfg, available=4 * GB)  # and on a small laptop
    assert estimate_bytes(cfg)["total"] < 2 * GB


@pytest.mark.parametrize(
    ("change", "named"),
    [({"latent": 100_000_000}, "latent 100000000"), ({"hidden": 1_000_000_000}, "hidden 1000000000")],
)
def test_absurd_sizes_are_refused_with_the_estimate_quickly(change, named):
    cfg = TrainConfig(**change).validate()
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        check_memory(cfg, available=64 * GB)
    elapsed, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 1 << 20  # nothing the size of the model was allocated
    msg = str(e.value)
    parts = estimate_bytes(cfg)
    assert f"{parts['total'] / 1e12:,.2f} TB" in msg and "64.00 GB is available" in msg
    for part in ("parameters", "gradients", "optimizer", "activations", "data"):
        assert part in msg
    assert "lower --hidden or --latent" in msg and named in msg and "\n" not in msg


def test_refused_on_the_real_machine_too():
    if host_available() is None:
        pytest.skip("no way to read the available memory here")
    with pytest.raises(UserError, match="is available"):
        check_memory(TrainConfig(hidden=1_000_000_000))


def test_big_batch_names_the_batch_size_and_float64_suggests_float32():
    cfg = TrainConfig(arch="conv", latent=15, batch_size=100_000, dtype="float64")
    with pytest.raises(UserError, match=r"lower --batch-size \(now 100000\).*--dtype float32"):
        check_memory(cfg, available=8 * GB)


def test_cupy_backend_compares_with_the_device_without_the_host_copy():
    cfg = TrainConfig(backend="cupy")
    need = estimate_bytes(cfg)["total"] - 70_000 * 784  # the uint8 images stay on the host
    check_memory(cfg, available=int(need / 0.9) + 1)
    with pytest.raises(UserError, match="free on the GPU"):
        check_memory(cfg, available=int(need / 0.9) - 10)


def test_unknown_available_memory_passes(monkeypatch):
    import minivae.training.memory as memory

    monkeypatch.setattr(memory, "host_available", lambda: None)
    check_memory(TrainConfig(hidden=1_000_000_000))


def _step_peak(model, n: int) -> int:
    """Bytes a forward + backward of n images allocates at its peak (NumPy reports to tracemalloc)."""
    x = np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)
    rng = np.random.default_rng(1)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    logits, mu, logvar = model.forward(x, rng=rng)
    model.backward(sigmoid(logits) - x, mu, 0.5 * (np.exp(logvar) - 1))
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    ("arch", "kw", "n"),
    [("mlp", {"latent": 20, "hidden": 400}, 64), ("mlp", {"latent": 50, "hidden": 1000}, 16)]
    + [("conv", {"latent": 15}, 8), ("conv", {"latent": 64}, 4)],
)
def test_estimate_against_real_arrays(arch, kw, n):
    cfg = TrainConfig(arch=arch, batch_size=n, **kw).validate()
    model = build_model(arch, cfg.latent, hidden=cfg.hidden)
    assert parameter_count(cfg) == model.num_parameters()  # the same shapes models.py builds
    parts = estimate_bytes(cfg)
    held = sum(int(p.nbytes) for _, p, _ in model.named_parameters())
    assert parts["parameters"] == held == parts["gradients"] and parts["optimizer"] == 2 * held
    peak = _step_peak(model, n)
    assert peak <= parts["activations"] <= 4 * peak  # generous, but within a factor of a few


def test_train_refuses_a_run_that_cannot_fit_before_making_its_directory(tmp_path, capsys):
    """`minivae train --hidden 1000000000`: one line with the estimate, exit 2, and no run directory."""
    from minivae.cli import main

    out = tmp_path / "run"
    assert main(["train", "--hidden", "1000000000", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("minivae: error: this run needs about") and "--hidden" in err[0]
    )
    assert not out.exists()
