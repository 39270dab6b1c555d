"""The run directory is owned (one writer, by lock), checked before anything is written, and never silently
changed: each refusal exits 2 (or raises UserError) with one line, and leaves every file byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivae.cli import main
from minivae.errors import UserError
from minivae.training.checkpoint import load_checkpoint
from minivae.training.config import TrainConfig
from minivae.training.loop import Dataset, Interrupted, train

CFG = dict(latent=2, hidden=16, batch_size=16, tsne_points=0, epochs=1)


def tiny_data(n: int = 48, bad: bool = False) -> Dataset:
    """Generated images in [0, 1] (no MNIST needed): 48 training, 16 validation and 16 test images."""
    rng = np.random.default_rng(0)
    x = lambda k: rng.random((k, 1, 28, 28), dtype=np.float32)  # noqa: E731
    y = lambda k: rng.integers(0, 10, k)  # noqa: E731
    x_train = x(n)
    if bad:
        x_train[0, 0, 0, 0] = np.nan
    return Dataset(x_train, x(16), x(16), y(n), y(16), y(16), (x(16) * 255).astype(np.uint8))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones included) -> its SHA-256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def finished(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(**CFG), run, progress=False, data=tiny_data())
    (run / "report.md").write_text("# the run's report\n")  # as `minivae train` leaves it
    return run


def refused(argv, capsys) -> str:
    """Run `minivae argv`, assert exit 2 with one line on stderr, and return that line."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minivae: error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--latent", "5"], ["--latent 5 (the run has 2)"]),
        (
            ["--arch", "conv", "--hidden", "32"],
            ["--arch conv (the run has mlp)", "--hidden 32 (the run has 16)"],
        ),
        (["--train-limit", "64", "--epochs", "3"], ["--train-limit 64 (the run has 0)"]),
        (["--dtype", "float64"], ["--dtype float64 (the run has float32)"]),
    ],
)
def test_resume_refuses_flags_that_change_the_run(finished, flags, named, capsys):
    before = snapshot(finished)
    line = refused(["train", "--resume", str(finished), *flags], capsys)
    assert all(n in line for n in named) and "only --epochs, --patience, --backend" in line
    assert snapshot(finished) == before


def test_resume_of_a_finished_run_says_how_to_extend_it(finished, capsys):
    before = snapshot(finished)
    line = refused(["train", "--resume", str(finished)], capsys)
    assert "is a finished run (1 of 1 epochs)" in line and "--epochs N, N > 1" in line
    line = refused(["train", "--resume", str(finished), "--epochs", "1"], capsys)
    assert "has already trained 1 epochs" in line
    assert snapshot(finished) == before


def test_out_and_preset_with_resume_are_refused(finished, tmp_path, capsys):
    before = snapshot(finished)
    line = refused(["train", "--resume", str(finished), "--out", str(tmp_path / "other")], capsys)
    assert "--out with --resume" in line
    assert "--preset with --resume" in refused(
        ["train", "--resume", str(finished), "--preset", "seed"], capsys
    )
    assert snapshot(finished) == before and not (tmp_path / "other").exists()


def test_out_naming_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("mine")
    line = refused(["train", "--train-limit", "64", "--out", str(f)], capsys)
    assert "is a file, not a directory" in line
    assert f.read_text() == "mine"


def test_resume_applies_and_prints_the_changes(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(TrainConfig(**CFG), run, progress=False, data=tiny_data(), on_step=lambda s: s.step >= 2)
    stale = run / ".last.npz.abc123.tmp"  # what a checkpoint write cut by a crash leaves
    stale.write_bytes(b"partial")
    _, _, hist = train(
        None,
        run,
        resume=True,
        progress=False,
        data=tiny_data(),
        epochs=2,
        changes={"patience": 7, "latent": 2},
    )
    err = capsys.readouterr().err
    assert "resuming with --epochs 2 (was 1), --patience 7 (was 0)" in err
    assert len(hist) == 2 and not stale.exists()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["epochs"] == 2 and cfg["patience"] == 7
    assert load_checkpoint(run / "last.npz")[2]["config"] == cfg


LOCKER = """
import sys, time
from pathlib import Path
from minivae.training.rundir import lock_run_dir
lock = lock_run_dir(Path(sys.argv[1]), resume=sys.argv[2] == "1")
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_writer_is_refused_naming_the_holder(finished, tmp_path, resume, capsys):
    out = finished if resume else tmp_path / "new"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(out), "1" if resume else "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        argv = (
            ["--resume", str(out), "--epochs", "2"] if resume else ["--train-limit", "64", "--out", str(out)]
        )
        line = refused(["train", *argv], capsys)
        assert f"is in use by another minivae run, PID {holder.pid} (" in line
        assert "-c" in line  # the holder's command line
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("existed", [False, True])
def test_a_failure_before_the_first_checkpoint_leaves_a_retryable_directory(tmp_path, existed):
    out = tmp_path / "run"
    if existed:
        out.mkdir()
    with pytest.raises(UserError, match="NaN") as e:
        train(TrainConfig(**CFG), out, progress=False, data=tiny_data(bad=True))
    if existed:
        assert "left as it was before this run, a retry may use the same --out" in str(e.value)
        assert list(out.iterdir()) == []
    else:
        assert f"nothing was kept: {out} was removed" in str(e.value) and not out.exists()
    train(TrainConfig(**CFG), out, progress=False, data=tiny_data())  # the retry
    assert (out / "last.npz").is_file()


def test_free_space_is_checked_before_anything_is_written(finished, monkeypatch):
    import shutil

    from minivae.training import rundir

    usage = shutil.disk_usage(finished)
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    before = snapshot(finished)
    with pytest.raises(UserError, match="only 0.0 MB free"):
        train(None, finished, resume=True, progress=False, data=tiny_data(), epochs=3)
    assert snapshot(finished) == before


RUN = ["--train-limit", "64", "--test-limit", "64", "--epochs", "1", "--tsne-points", "0", "--quiet"]


def test_two_runs_started_together_on_one_out(tmp_path, mnist_ready):
    """The real race, ten times: two processes started at once on one --out. Exactly one trains; the other
    is refused with one line, and the directory's config.json and checkpoints are the winner's."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for i in range(10):
        out = tmp_path / f"race{i}"
        cmd = [sys.executable, "-m", "minivae.cli", "train", *RUN, "--out", str(out)]
        procs = [
            subprocess.Popen(
                [*cmd, "--seed", str(s)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for s in (1, 2)
        ]
        results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
        codes = sorted(rc for rc, _ in results)
        assert codes == [0, 2], results
        winner = 1 + [rc for rc, _ in results].index(0)
        loser_err = next(err for rc, err in results if rc == 2).strip().splitlines()
        assert len(loser_err) == 1, loser_err
        assert (
            "is in use by another minivae run, PID" in loser_err[0] or "already holds files" in loser_err[0]
        )
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["seed"] == winner
        for name in ("last.npz", "best.npz"):
            assert load_checkpoint(out / name)[2]["config"] == cfg


def test_evaluate_is_refused_while_a_run_holds_the_directory(finished, capsys):
    """evaluate rewrites the run's report, so it takes the same lock: refused, naming the holder."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(finished), "1"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(finished)
        line = refused(["evaluate", str(finished)], capsys)
        assert f"is in use by another minivae run, PID {holder.pid} (" in line
        assert snapshot(finished) == before
    finally:
        holder.kill()
        holder.wait()
