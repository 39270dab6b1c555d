"""Sweeps on Dask (minivae.analysis.executors), on a real LocalCluster shared by the file's tests: the
same metrics as the local executor, idempotent reruns, a cut run resumed, a killed worker's run retried,
a failing run reported while the rest finish, and the one-line errors (no extra, a foreign directory)."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minivae.analysis import executors
from minivae.analysis.sweep import SweepIncomplete, sweep
from minivae.cli import main
from minivae.errors import UserError
from minivae.training.config import TrainConfig
from minivae.training.loop import Interrupted, train

TINY = ["--train-limit", "256", "--test-limit", "100", "--batch-size", "32", "--epochs", "1", "--hidden", "32",
        "--tsne-points", "0", "--quiet"]  # fmt: skip
SWEEP = ["sweep", *TINY, "--latents", "2", "3", "--seeds", "2"]
RUNS = ["z2_s0", "z2_s1", "z3_s0", "z3_s1"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run on one BLAS thread (this process, the pool's and the cluster's workers read it), so that
    runs are bit-identical wherever they train."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENBLAS_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def cluster(one_thread):
    """The scheduler address of a 2-worker LocalCluster, made as `--executor dask` makes one."""
    pytest.importorskip("distributed")
    with executors.start_cluster(2, dashboard_address=None) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, mnist_ready):
    """The 4-run sweep with --executor local on 2 worker processes: the reference."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    assert main([*SWEEP, "--jobs", "2", "--out", str(out)]) == 0
    return out


def dask_sweep(address: str, out: Path, *extra: str) -> int:
    return main([*SWEEP, *extra, "--executor", "dask", "--dask-address", address, "--out", str(out)])


def metrics(out: Path, name: str) -> dict:
    return json.loads((out / name / "metrics.json").read_text())


def copy_runs(src: Path, dst: Path, runs: list[str], names: list[str] | None = None) -> None:
    """Copy finished runs of src into dst (under other names if given): the sweep finds them done."""
    for run, name in zip(runs, names or runs):
        shutil.copytree(src / run, dst / name, ignore=shutil.ignore_patterns(".lock"))


def test_dask_equals_local_and_a_rerun_trains_nothing(cluster, local_sweep, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert dask_sweep(cluster, out) == 0
    for name in RUNS:
        assert metrics(out, name) == metrics(local_sweep, name), name
        assert (out / name / "per_digit.csv").read_bytes() == (
            local_sweep / name / "per_digit.csv"
        ).read_bytes()
    assert (out / "summary.csv").read_bytes() == (local_sweep / "summary.csv").read_bytes()
    err = capsys.readouterr().err
    assert all(f"{out / name}: trained" in err for name in RUNS), err

    files = {p: p.stat().st_mtime_ns for p in out.glob("z*/*")}
    summary, report = (out / "summary.csv").read_bytes(), (out / "report.md").read_bytes()
    (out / "summary.csv").unlink()
    assert dask_sweep(cluster, out) == 0
    err = capsys.readouterr().err
    assert all(f"{out / name}: skipped" in err for name in RUNS), err
    assert {p: p.stat().st_mtime_ns for p in out.glob("z*/*")} == files  # no run directory was touched
    assert (out / "summary.csv").read_bytes() == summary and (out / "report.md").read_bytes() == report


def exit_worker_once(marker: str, state) -> None:
    """train()'s on_step: at step 5 of the first run to get there, kill the whole worker process."""
    if state.step == 5:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os._exit(1)


def test_cut_run_resumed_killed_worker_retried_failing_run_reported(cluster, local_sweep, tmp_path, capsys):
    """One sweep, β 1 and 1e300 at latent sizes 2 and 3 (β 1 is the local sweep's config):
    - b1_z2_s0 is finished (a copy of the local sweep's z2_s0): skipped;
    - b1_z3_s0 was cut after 3 steps, leaving its checkpoint: the sweep resumes it; at step 5 its task
      kills its worker process, Dask runs the task again, which resumes from the same checkpoint, and the
      run ends with the metrics of the local run that was never cut;
    - β = 1e300 overflows float32 at the first step, so the non-finite guard stops both its runs (twice
      each, retries=1): each is reported with its directory and error, and the summary is written from
      the runs that finished, listing the missing ones."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    out, marker = tmp_path / "sweep", tmp_path / "killed"
    copy_runs(local_sweep, out, ["z2_s0"], names=["b1_z2_s0"])
    cfg = TrainConfig.from_dict(json.loads((local_sweep / "z3_s0" / "config.json").read_text()))
    with pytest.raises(Interrupted):
        train(cfg, out / "b1_z3_s0", progress=False, on_step=lambda state: state.step >= 3)
    assert (out / "b1_z3_s0" / "last.npz").is_file() and not (out / "b1_z3_s0" / "metrics.json").exists()
    base = TrainConfig.from_dict(json.loads((local_sweep / "sweep.json").read_text())["base_config"])
    kill = functools.partial(exit_worker_once, str(marker))
    capsys.readouterr()
    with pytest.raises(SweepIncomplete) as e:
        sweep(
            base,
            [2, 3],
            1,
            out,
            progress=False,
            betas=[1, 1e300],
            executor="dask",
            address=cluster,
            on_step=kill,
        )
    assert marker.exists(), "the worker should have been killed once"
    err = capsys.readouterr().err
    assert f"{out / 'b1_z2_s0'}: skipped" in err and f"{out / 'b1_z3_s0'}: resumed" in err, err
    assert metrics(out, "b1_z3_s0") == metrics(local_sweep, "z3_s0")
    failed = [str(out / "b1e+300_z2_s0"), str(out / "b1e+300_z3_s0")]
    assert sorted(e.value.failed) == failed and str(e.value).startswith("2 of 4 runs failed")
    nonfinite = "step 1 (epoch 1, batch 1): the loss or a gradient is NaN/Inf"
    assert all(why.startswith(nonfinite) for why in e.value.failed.values())
    assert f"{failed[0]}: failed: {nonfinite}" in err
    report = e.value.report.read_text()
    assert "## Missing runs" in report and f"- `b1e+300_z2_s0`: {nonfinite}" in report
    assert {row.split(",")[0] for row in (out / "summary.csv").open()} == {"beta", "1"}


def test_run_states_and_a_dead_start_cleared(tmp_path):
    """What a run directory holds decides what the sweep does with it; the files of a start that died
    before its first checkpoint are removed, under the directory's lock, before it starts again."""
    cfg, d = TrainConfig(latent=2).to_dict(), tmp_path / "z2_s0"
    assert executors.run_state(cfg, d) == "new"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "history.csv").write_text("epoch\n")
    assert executors.run_state(cfg, d) == "restart"
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT)  # another process holding the run
    fcntl.flock(fd, fcntl.LOCK_EX)
    with pytest.raises(UserError, match="is in use by another minivae run"):
        executors.clear_unstarted(d)
    os.close(fd)
    executors.clear_unstarted(d)
    assert sorted(p.name for p in d.iterdir()) == [".lock"] and executors.run_state(cfg, d) == "new"
    for name in ("config.json", "last.npz"):
        (d / name).write_text(json.dumps(cfg) if name == "config.json" else "")
    assert executors.run_state(cfg, d) == "resume"
    (d / "metrics.json").write_text("{}")
    (d / "report.md").write_text("")
    assert executors.run_state(cfg, d) == "finished"
    with pytest.raises(
        UserError, match=r"holds a run of another config \(--latent 2 there, 3 in this sweep\)"
    ):
        executors.run_state({**cfg, "latent": 3}, d)


def test_every_run_failing_writes_no_summary(mnist_ready, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", *TINY, "--latents", "2", "--betas", "1e300", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "1 of 1 runs failed" in err and "no summary written" in err and not (out / "summary.csv").exists()


def test_a_directory_of_another_config_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    (out / "z2_s0").mkdir(parents=True)
    cfg = TrainConfig(latent=2, seed=0, hidden=64).to_dict()
    (out / "z2_s0" / "config.json").write_text(json.dumps(cfg))
    assert main([*SWEEP, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"minivae: error: {out / 'z2_s0'} holds a run of another config (" in err
    assert "nothing was changed" in err and sorted(p.name for p in out.iterdir()) == ["z2_s0"]


def test_without_the_dask_extra_one_line(tmp_path):
    """distributed hidden from the import system: `--executor dask` says which extra to install."""
    code = "import sys; sys.modules['distributed'] = None; from minivae.cli import main; sys.exit(main(sys.argv[1:]))"
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-c", code, *SWEEP, "--executor", "dask", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr
        == 'minivae: error: --executor dask needs Dask\'s distributed scheduler: pip install -e ".[dask]"\n'
    )
    assert not out.exists()
