"""Fault injection: signals at random steps, a full disk, damaged and foreign checkpoints."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minivae.errors import UserError
from minivae.training import checkpoint
from minivae.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minivae.training.config import TrainConfig
from minivae.training.loop import train

ARGS = ["--train-limit", "192", "--val-fraction", "0.25", "--test-limit", "100", "--batch-size", "16",
        "--epochs", "3", "--latent", "3", "--hidden", "32", "--tsne-points", "0", "--quiet"]  # fmt: skip


def _weights(run):
    model, optim, meta = load_checkpoint(run / "last.npz")
    return model, optim, meta


# `minivae ARGS...` with every training step 30 ms slower: the command's train() gets an on_step that sleeps
SLOW_CLI = """
import functools, sys, time
import minivae.training.loop as loop
from minivae.cli import main
loop.train = functools.partial(loop.train, on_step=lambda state: time.sleep(0.03))
sys.exit(main(sys.argv[1:]))
"""


def test_signals_at_random_steps_then_resume_bit_identical(tmp_path, mnist_ready):
    """SIGINT and SIGTERM land at random moments (mid-epoch included); each time the run saves, exits,
    and is resumed; the final weights equal an uninterrupted run's, bit for bit."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    fast, cmd = [sys.executable, "-m", "minivae.cli", "train"], [sys.executable, "-c", SLOW_CLI, "train"]
    ref = tmp_path / "ref"
    subprocess.run([*fast, *ARGS, "--out", str(ref)], check=True, capture_output=True)

    run = tmp_path / "cut"
    rnd = random.Random(1234)
    interruptions, resumed = 0, False
    for _ in range(12):
        argv = [*cmd, "--resume", str(run), "--quiet"] if resumed else [*cmd, *ARGS, "--out", str(run)]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err = ""
        if interruptions < 4:
            # train() announces "starting/resuming RUN at epoch E, step S" as its loop begins
            for line in proc.stderr:
                err += line
                if line.startswith(("starting", "resuming")):
                    break
            time.sleep(rnd.uniform(0.0, 0.6))  # ~30 ms a step: lands anywhere in the remaining steps
            proc.send_signal(signal.SIGINT if interruptions % 2 == 0 else signal.SIGTERM)
        out, rest = proc.communicate(timeout=120)
        err += rest
        if proc.returncode == 0:
            break
        assert proc.returncode == 130, err
        if (run / "last.npz").exists():
            assert "resume with: minivae train --resume" in err
            resumed, interruptions = True, interruptions + 1
        else:  # the signal came before the first step: nothing to resume, start again
            import shutil

            shutil.rmtree(run)
    assert interruptions >= 3, "the signals should have landed inside the training loop"
    a, _, meta_a = _weights(ref)
    b, _, meta_b = _weights(run)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in meta_a["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in meta_b["history"]]


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    save_checkpoint(path, {"w": np.ones(3)}, {"t": np.array(1)}, {"config": {}})
    before = path.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", no_space)
    with pytest.raises(
        CheckpointError, match="No space left on device.*previous checkpoint there.*unchanged"
    ):
        save_checkpoint(path, {"w": np.zeros(3)}, {"t": np.array(2)}, {"config": {}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]  # no temporary file left behind


def test_too_little_free_disk_is_refused_before_training(tmp_path, monkeypatch, mnist_ready):
    import shutil

    from minivae.training import rundir as train_module

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(train_module.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(UserError, match=r"only 0.0 MB free.*needs about"):
        train(TrainConfig(epochs=1, train_limit=64), tmp_path / "run", progress=False)


def test_newer_checkpoint_version_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    monkeypatch.setattr(checkpoint, "VERSION", 99)
    save_checkpoint(path, {"w": np.ones(2)}, {}, {})
    monkeypatch.setattr(checkpoint, "VERSION", 1)
    with pytest.raises(CheckpointError, match="format version 99, this minivae reads version 1"):
        load_checkpoint(path)


def test_no_pickle_in_checkpoints(tmp_path):
    """Every array in a checkpoint loads with allow_pickle=False: no object arrays."""
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.ones(2)}, {"t": np.array(3)}, {"config": {"a": [1, 2]}})
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
