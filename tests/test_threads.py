"""The BLAS thread policy (minivae.threads): the count it picks for a machine's cores and load, that
--threads / the config field / OPENBLAS_NUM_THREADS force it, that a run uses it, and that same-seed runs
at one thread count are bit-identical; that NumPy's passes in parts (in_parts) cover their range once and
change no bit, and when they are cut. No timings: speed lives in benchmarks/bench_train_step.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

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


# ---------------------------------------------------------- NumPy's passes in parts (threads.in_parts)


@pytest.fixture
def parts(monkeypatch):
    """set(k): in_parts cuts passes of any size into k parts, whatever this process's BLAS does."""
    monkeypatch.setattr(threads, "SPLIT_ELEMENTS", 1)

    def set_parts(k: int) -> None:
        monkeypatch.setattr(threads, "_parts", k)

    return set_parts


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_in_parts_cuts_the_range_into_contiguous_parts_that_cover_it_once(k, n, parts):
    parts(k)
    seen: list[tuple[int, int, int]] = []  # (start, stop, thread)
    threads.in_parts(lambda s: seen.append((s.start, s.stop, threading.get_ident())), n, np.zeros(n))
    spans = sorted((a, b) for a, b, _ in seen)
    assert len(spans) == min(k, n)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(b > a for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    here = [a for a, _, t in seen if t == threading.get_ident()]
    assert here == [0]  # the first part on the calling thread, the others on the pool's threads


def test_in_parts_keeps_small_and_non_numpy_passes_whole(monkeypatch):
    monkeypatch.setattr(threads, "_parts", 2)
    seen: list[slice] = []
    threads.in_parts(seen.append, 10, np.zeros(threads.SPLIT_ELEMENTS - 1))
    assert seen == [slice(0, 10)]

    class NotNumPy:  # a CuPy array: the GPU runs the pass as it is
        size = 1 << 30

    seen.clear()
    threads.in_parts(seen.append, 10, NotNumPy())
    assert seen == [slice(0, 10)]


def test_in_parts_raises_a_parts_exception(parts):
    parts(2)

    def fail_on_the_second_part(s: slice) -> None:
        if s.start > 0:
            raise ValueError("part two failed")

    with pytest.raises(ValueError, match="part two failed"):
        threads.in_parts(fail_on_the_second_part, 4, np.zeros(4))


def _sum_in_parts() -> float:
    out = np.zeros(6)
    threads.in_parts(lambda s: out.__setitem__(s, np.arange(6.0)[s]), 6, out)
    return float(out.sum())


def test_in_parts_works_in_a_forked_child(parts):
    """A forked child has none of its parent's threads: it makes its own pool instead of waiting forever."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    parts(2)
    assert _sum_in_parts() == 15.0  # the parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_sum_in_parts).get(timeout=30) == 15.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_passes_in_parts_are_bit_identical_to_whole_passes(dtype, parts):
    """im2col's copy, col2im's adds, the BCE's rows and Adam's update, in 3 parts (uneven) against whole,
    on batch-last and on (N, C, H, W)-contiguous input."""
    from minivae.nn.conv import batch_last, col2im, im2col
    from minivae.nn.losses import bce_with_logits
    from minivae.nn.optim import adam_in_parts

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7, 9, 8)).astype(dtype)
    cols = rng.standard_normal((7 * 9, 4 * 3 * 5)).astype(dtype)  # a 3x3 kernel at stride 2 over 9 x 8
    logits = (rng.standard_normal((11, 1, 28, 28)) * 4).astype(dtype)
    target = rng.random((11, 1, 28, 28)).astype(dtype)
    results = []
    for k in (1, 3):
        parts(k)
        results.append(
            [im2col(x, 3, 3, 1, 1), im2col(batch_last(x), 3, 3, 2, 2), col2im(cols, (5, 7, 9, 8), 3, 3, 2, 2)]
            + list(bce_with_logits(logits, target))
            + list(bce_with_logits(batch_last(logits), target, "mean"))
        )
        p, g, m, v = (np.random.default_rng(i).standard_normal((101, 7)).astype(dtype) for i in range(4))
        adam_in_parts(p, g, m, v * v, 0.9, 0.999, 0.19, 0.002, 1e-3, 1e-8)  # v * v: a variance, >= 0
        results[-1].append(p)
    for whole, in_parts in zip(*results):
        np.testing.assert_array_equal(in_parts, whole)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_a_run_in_parts_is_bit_identical_to_one_with_whole_passes(arch, tmp_path, monkeypatch):
    """The training step with every pass in parts (2 threads) gives the weights of the step with none."""
    pytest.importorskip("threadpoolctl")
    if not threads._blas_is_openblas():
        pytest.skip("NumPy's BLAS is not OpenBLAS: passes stay whole")
    monkeypatch.setattr(threads, "SPLIT_ELEMENTS", 1)
    runs = []
    for sleep in (True, False):
        monkeypatch.setattr(threads, "_blas_threads_sleep", sleep)
        seen: list[int] = []
        model, _, hist = train(
            TrainConfig(**dict(CFG, arch=arch, threads=2)),
            tmp_path / f"run_{sleep}",
            progress=False,
            data=tiny_data(32),
            on_step=lambda state, seen=seen: seen.append(threads.parts()),
        )
        assert set(seen) == {2 if sleep else 1}
        runs.append((weights(model), [r["train_loss"] for r in hist]))
    (w_parts, loss_parts), (w_whole, loss_whole) = runs
    for k, v in w_parts.items():
        np.testing.assert_array_equal(v, w_whole[k], err_msg=k)
    assert loss_parts == loss_whole
    assert threads.parts() == 1  # limit() put it back


def test_let_blas_threads_sleep_sets_the_timeout_only_before_numpy_loads(monkeypatch):
    monkeypatch.setattr(threads, "_blas_threads_sleep", False)  # restored after the test
    env: dict[str, str] = {}
    assert threads.let_blas_threads_sleep(env, numpy_loaded=False) is True
    assert env == {"OPENBLAS_THREAD_TIMEOUT": str(threads.SPIN_EXPONENT)}
    env = {"OPENBLAS_THREAD_TIMEOUT": "28"}  # the user's value is kept: OpenBLAS's threads spin
    assert threads.let_blas_threads_sleep(env, numpy_loaded=False) is False
    assert env == {"OPENBLAS_THREAD_TIMEOUT": "28"}
    assert threads.let_blas_threads_sleep({"OPENBLAS_THREAD_TIMEOUT": "8"}, numpy_loaded=True) is True
    env = {}  # NumPy (and OpenBLAS) already loaded: too late to ask, so passes stay whole
    assert threads.let_blas_threads_sleep(env, numpy_loaded=True) is False
    assert env == {}
    assert threads.set_parts(2) == 1


def test_set_parts_and_limit_follow_the_blas_threads(monkeypatch):
    pytest.importorskip("threadpoolctl")
    if not threads._blas_is_openblas():
        pytest.skip("NumPy's BLAS is not OpenBLAS: passes stay whole")
    monkeypatch.setattr(threads, "_blas_threads_sleep", True)
    monkeypatch.setattr(threads, "_parts", 1)
    assert threads.set_parts(2) == 2 and threads.parts() == 2
    assert threads.set_parts(1) == 1
    with threads.limit(2):
        assert threads.parts() == 2
        with threads.limit(1):
            assert threads.parts() == 1
        assert threads.parts() == 2
    assert threads.parts() == 1


@pytest.mark.parametrize(
    ("order", "expected"),
    [("import minivae, numpy", "16 True"), ("import numpy, minivae", "None False")],
)
def test_import_minivae_before_numpy_lets_openblas_threads_sleep(order, expected):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    code = (
        f"{order}, os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), minivae.threads.blas_threads_sleep())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == expected.split()
