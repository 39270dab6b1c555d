"""Sweeps on Dask (minivae.analysis.executors), on a real LocalCluster shared by the file's tests: the
same metrics as the local executor, idempotent reruns, a cut run resumed, a killed worker's run retried,
a failing run reported while the rest finish, and the one-line errors (no extra, a foreign directory)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minivae.analysis import executors
from minivae.analysis.sweep import sweep
from minivae.cli import main
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


def copy_runs(src: Path, dst: Path, names: list[str]) -> None:
    for name in names:
        shutil.copytree(src / name, dst / name, ignore=shutil.ignore_patterns(".lock"))


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


def test_a_cut_run_is_resumed(cluster, local_sweep, tmp_path, capsys):
    """z3_s1 stopped after 3 steps with its checkpoint: the sweep resumes it (and skips the finished ones),
    and it ends with the metrics of the run that was never cut."""
    out = tmp_path / "sweep"
    copy_runs(local_sweep, out, RUNS[:3])
    cfg = TrainConfig.from_dict(json.loads((local_sweep / "z3_s1" / "config.json").read_text()))
    with pytest.raises(Interrupted):
        train(cfg, out / "z3_s1", progress=False, on_step=lambda state: state.step >= 3)
    assert (out / "z3_s1" / "last.npz").is_file() and not (out / "z3_s1" / "metrics.json").exists()
    capsys.readouterr()
    assert dask_sweep(cluster, out) == 0
    err = capsys.readouterr().err
    assert f"{out / 'z3_s1'}: resumed" in err, err
    assert all(f"{out / name}: skipped" in err for name in RUNS[:3]), err
    assert metrics(out, "z3_s1") == metrics(local_sweep, "z3_s1")


def exit_worker_once(marker: str, state) -> None:
    """train()'s on_step: at step 2 of the first run to get there, kill the whole worker process."""
    if state.step == 2:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os._exit(1)


def test_a_killed_workers_run_is_retried(cluster, local_sweep, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    out, marker = tmp_path / "sweep", tmp_path / "killed"
    copy_runs(local_sweep, out, RUNS[:3])
    base = TrainConfig.from_dict(json.loads((local_sweep / "sweep.json").read_text())["base_config"])
    kill = functools.partial(exit_worker_once, str(marker))
    report = sweep(base, [2, 3], 2, out, progress=False, executor="dask", address=cluster, on_step=kill)
    assert marker.exists(), "the worker should have been killed once"
    assert report.is_file()
    assert metrics(out, "z3_s1") == metrics(local_sweep, "z3_s1")


def test_a_failing_run_is_reported_and_the_rest_finish(cluster, mnist_ready, tmp_path, capsys):
    """β = 1e300 overflows float32 at the first step (the non-finite guard stops the run): the sweep says
    so, with the run's directory, finishes the other run and writes the summary, listing the missing run."""
    out = tmp_path / "sweep"
    argv = ["sweep", *TINY, "--latents", "2", "--betas", "1", "1e300", "--out", str(out)]
    assert main([*argv, "--executor", "dask", "--dask-address", cluster]) == 1
    err = capsys.readouterr().err
    assert (
        f"{out / 'b1e+300_z2_s0'}: failed: step 1 (epoch 1, batch 1): the loss or a gradient is NaN/Inf"
        in err
    )
    assert f"{out / 'b1_z2_s0'}: trained" in err and "1 of 2 runs failed" in err
    assert (out / "b1_z2_s0" / "report.md").is_file()
    report = (out / "report.md").read_text()
    assert "## Missing runs" in report and "- `b1e+300_z2_s0`: step 1" in report
    assert {row.split(",")[0] for row in (out / "summary.csv").open()} == {"beta", "1"}
    # the same command again (here on the local executor): the finished run is skipped, the failed one retried
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{out / 'b1_z2_s0'}: skipped" in err and f"{out / 'b1e+300_z2_s0'}: failed: step 1" in err


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
