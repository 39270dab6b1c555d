"""The BLAS thread policy (minivae.threads): the count it picks for a machine's cores and load, that
--threads / the config field / OPENBLAS_NUM_THREADS force it, that a run uses it, and that same-seed runs
at one thread count are bit-identical. No timings: speed lives in benchmarks/bench_train_step.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minivae import threads
from minivae.cli import build_parser, config_from_args
from minivae.errors import UserError
from minivae.training.config import TrainConfig
from minivae.training.loop import Dataset, train

NO_ENV: dict[str, str] = {}


@pytest.mark.parametrize(
    ("cores", "busy", "expected"),
    [
        (2, 0.0, 2),  # idle 2-core laptop: both cores
        (2, 0.3, 2),  # a little background work: the second core is still mostly free
        (2, 0.6, 1),  # more than half a core busy: a second thread would wait on it
        (2, 1.0, 1),  # one busy process beside us
        (2, 3.0, 1),  # three busy processes: never below one thread
        (1, 0.0, 1),
        (8, 1.0, 7),
        (8, 2.4, 6),
        (16, 0.0, 16),
    ],
)
def test_policy_uses_the_free_cores(cores, busy, expected):
    assert threads.pick(cores=cores, busy=busy, env=NO_ENV) == expected


def test_requested_and_the_environment_override_the_policy():
    assert threads.pick(3, cores=2, busy=2.0, env=NO_ENV) == 3
    assert threads.pick(cores=2, busy=2.0, env={"OPENBLAS_NUM_THREADS": "2"}) == 2
    assert threads.pick(1, cores=2, busy=0.0, env={"OPENBLAS_NUM_THREADS": "2"}) == 1
    assert threads.pick(cores=2, busy=0.0, env={"OPENBLAS_NUM_THREADS": "lots"}) == 2  # unusable: the policy
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(UserError, match="--threads must be a whole number >= 1"):
            threads.pick(bad, cores=2, busy=0.0, env=NO_ENV)


def test_busy_cores_is_a_share_of_this_machines_cores():
    busy = threads.busy_cores(seconds=0.05)
    assert 0.0 <= busy <= threads.available_cores() + 0.5  # tick rounding can overshoot a little


def test_cpu_ticks_count_user_nice_system_irq_and_steal_as_busy(tmp_path):
    """/proc/stat's columns: user nice system idle iowait irq softirq steal. Only idle and iowait are
    free: a niced program in another session's scheduling group does not yield its core. cpu1 is left
    out when the affinity is {0}."""
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  999 999 999 999 999 999 999 999 0 0\n"
        "cpu0 10 1000 20 300 40 5 6 7 0 0\n"
        "cpu1 500 500 500 500 500 500 500 500 0 0\n"
        "intr 12345\n"
    )
    busy, total = threads._cpu_ticks({0}, str(stat))
    assert (busy, total) == (10 + 1000 + 20 + 5 + 6 + 7, 10 + 1000 + 20 + 300 + 40 + 5 + 6 + 7)


def test_limit_sets_and_restores_the_blas_threads():
    pytest.importorskip("threadpoolctl")
    before = threads.current()
    with threads.limit(1) as n:
        assert n == 1 and threads.current() == 1
        with threads.limit(2) as m:
            assert m == 2 and threads.current() == 2
        assert threads.current() == 1
    assert threads.current() == before


def test_the_config_field_and_flag():
    assert TrainConfig().threads is None  # the policy
    args = build_parser().parse_args(["train", "--threads", "3"])
    assert config_from_args(args).threads == 3
    with pytest.raises(UserError, match="--threads must be a whole number >= 1, got 0"):
        TrainConfig(threads=0).validate()
    with pytest.raises(UserError, match="--threads must be a whole number or null"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "threads": "two"})
    old = TrainConfig().to_dict()
    del old["threads"]  # a config written before the field existed still loads, on the policy
    assert TrainConfig.from_dict(old).threads is None


def tiny_data(n: int = 64) -> Dataset:
    """Generated images in [0, 1] (no MNIST needed)."""
    rng = np.random.default_rng(0)
    x = lambda k: rng.random((k, 1, 28, 28), dtype=np.float32)  # noqa: E731
    y = lambda k: rng.integers(0, 10, k)  # noqa: E731
    return Dataset(x(n), x(16), x(16), y(n), y(16), y(16), (x(16) * 255).astype(np.uint8))


CFG = dict(latent=2, hidden=32, batch_size=16, tsne_points=0, epochs=1, seed=3)


def weights(model):
    return {k: np.array(p) for k, p, _ in model.named_parameters()}


@pytest.mark.parametrize("n", [1, 2])
def test_threads_forces_the_runs_blas_threads(n, tmp_path, capsys):
    seen: list[int] = []
    train(
        TrainConfig(threads=n, **CFG),
        tmp_path / "run",
        progress=False,
        data=tiny_data(),
        on_step=lambda state: seen.append(threads.current()),
    )
    assert seen and set(seen) == {n}
    assert f"BLAS threads: {n} (--threads)" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == n
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("threads")
    assert [row.split(",")[column] for row in history[1:]] == [str(n)]  # each epoch's count, recorded


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_same_seed_same_thread_count_is_bit_identical(arch, tmp_path):
    cfg = dict(CFG, arch=arch, threads=2)
    a, _, hist_a = train(TrainConfig(**cfg), tmp_path / "a", progress=False, data=tiny_data(32))
    b, _, hist_b = train(TrainConfig(**cfg), tmp_path / "b", progress=False, data=tiny_data(32))
    for k, v in weights(a).items():
        np.testing.assert_array_equal(v, weights(b)[k], err_msg=k)
    assert [r["train_loss"] for r in hist_a] == [r["train_loss"] for r in hist_b]


def test_resume_may_change_threads(tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig(threads=1, **CFG), run, progress=False, data=tiny_data())
    _, _, hist = train(
        None, run, resume=True, progress=False, data=tiny_data(), epochs=2, changes={"threads": 2}
    )
    assert len(hist) == 2
    err = capsys.readouterr().err
    assert "--threads 2 (was 1)" in err and "BLAS threads: 2 (--threads)" in err


@pytest.mark.parametrize(("busy", "expected"), [(0.0, 2), (1.0, 1)])
def test_a_run_without_threads_uses_the_policy(busy, expected, tmp_path, monkeypatch, capsys):
    """No --threads and no OPENBLAS_NUM_THREADS: the run asks the policy, which reads the machine."""
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=threads.SAMPLE_SECONDS: busy)
    seen: list[int] = []
    train(
        TrainConfig(**CFG),
        tmp_path / "run",
        progress=False,
        data=tiny_data(),
        on_step=lambda state: seen.append(threads.current()),
    )
    assert set(seen) == {expected}
    assert f"BLAS threads: {expected} (OPENBLAS_NUM_THREADS or the free cores)" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] is None
