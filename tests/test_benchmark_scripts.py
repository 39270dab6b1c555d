"""benchmarks/: the step benchmark (its kernels A/B, interleaving, agreement check), the operation count and
cost, the seed study's comparison table, and the shell scripts' calls into them."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

SEED_Z15 = [20.36, 26.07, 19.08, 19.76, 20.34, 19.48, 20.88, 21.61, 18.82, 21.24]


def fake_run(d: Path, psnr: list[float], alive: int) -> None:
    d.mkdir(parents=True)
    rows = ["digit,count,mse_sampled,psnr_sampled,mse_mean,psnr_mean"]
    rows += [f"{i},100,0.01,{p},0.01,{p + 0.1}" for i, p in enumerate(psnr)]
    (d / "per_digit.csv").write_text("\n".join(rows) + "\n")
    metrics = {"best_val_loss": 0.09, "alive_encoder_units": alive, "neg_elbo": 120.0, "rate_nats": 50.0,
               "distortion_nats": 70.0}  # fmt: skip
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "config.json").write_text(json.dumps({"loss": "seed", "beta": 0.0005, "latent": 15}))


def test_compare_table_and_verdicts(tmp_path):
    """Two seeds of a variant 0.5 and 1.5 dB above the seed on every digit, one of another 1 dB below."""
    fake_run(tmp_path / "leaky" / "z15_s0", [p + 0.5 for p in SEED_Z15], 20)
    fake_run(tmp_path / "leaky" / "z15_s1", [p + 1.5 for p in SEED_Z15], 24)
    fake_run(tmp_path / "other" / "relu" / "z15_s0", [p - 1.0 for p in SEED_Z15], 8)  # a second study folder
    fig = tmp_path / "cmp.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "seed_study_compare.py"), str(tmp_path), str(tmp_path / "other"),
         "--figure", str(fig), "--summary"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "leaky: beats the seed on 10 of 10 digits over the mean of 2 seeds" in proc.stderr
    assert "smallest margin +1.00 dB" in proc.stderr and "worst single run and digit +0.50 dB" in proc.stderr
    assert "relu: beats the seed on 0 of 10 digits" in proc.stderr
    leaky = next(
        line for line in proc.stdout.splitlines() if line.startswith("| LeakyReLU") and "sampled z" in line
    )
    assert "| 2 | 21.36 ± 0.71 |" in leaky and "22.0 of 32" in leaky
    assert fig.stat().st_size > 1000
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| LeakyReLU bottleneck | 15 |"))
    assert "| 2 | 0.052 | 21.76 ± 0.71 | 20.77 | 10 of 10 |" in row
    assert row.endswith("| 20, 24 of 32 |")


def test_agreement_check_reports_each_tensor_and_names_a_wrong_one(monkeypatch):
    """NumPy against itself agrees tensor by tensor; a backend with one gradient off is refused by name."""
    import bench_train_step as bench
    import numpy as np

    agree = bench.check_against_numpy("mlp", 4, np)
    assert agree["backend"] == agree["per_tensor"][agree["worst_tensor"]][0] < 1e-5
    assert set(agree["per_tensor"]) >= {"loss", "decoder.0.weight"}

    fake_xp, real = object(), bench.one_step_numbers

    def off_by_a_pixel(arch, batch, xp, dtype="float32"):
        out = real(arch, batch, np if xp is fake_xp else xp, dtype)
        if xp is fake_xp:
            out["decoder.0.weight"] = np.roll(out["decoder.0.weight"], 1, axis=1)
        return out

    monkeypatch.setattr(bench, "one_step_numbers", off_by_a_pixel)
    monkeypatch.setattr(bench, "backend_name", lambda xp: "fakebackend")
    try:
        bench.check_against_numpy("mlp", 4, fake_xp)
    except bench.WrongResult as e:
        assert "fakebackend disagrees with NumPy on mlp batch 4, decoder.0.weight" in str(e)
    else:
        raise AssertionError("a shifted gradient passed the agreement check")


def test_count_ops_counts_each_array_operation_once_whatever_the_batch():
    """benchmarks/count_ops.py: a Linear forward is two operations (product, bias add), the flattened
    Adam update one fused kernel, and the count of a step does not depend on the batch size."""
    from count_ops import count_step

    ops, sites = count_step("mlp", 4)
    assert ops["fused Adam kernel (CuPy)"] == 1
    linear_forward = sum(n for site, n in sites.items() if "nn/linear.py" in site and "(forward)" in site)
    assert linear_forward == 2 * 5  # encoder, fc_mu, fc_logvar and the decoder's two Linears
    assert sum(sites.values()) == sum(ops.values())  # every operation traced to a line of minivae
    assert count_step("mlp", 8)[0] == ops
    conv_ops, _ = count_step("conv", 2)
    assert count_step("conv", 3)[0] == conv_ops and sum(conv_ops.values()) > 2 * sum(ops.values())


def test_count_ops_counts_each_fused_kernel_as_one():
    """On CuPy the conv step's 3 col2im calls (the stride-2 Conv2d's input gradient, 2 ConvTranspose2d forwards), 7 ReLU
    forwards, BCE, KL and Adam are one kernel each; --unfused counts the lines they stand for (a fill and 9 adds
    per col2im, a compare and a multiply per ReLU, 15 for BCE (13 and the copies of its rows into the value's
    and the gradient's arrays, minivae.threads.in_parts), 8 for KL, 15 for Adam's three lines)."""
    from count_ops import FUSED, count_step

    from minivae import kernels

    fused, unfused = count_step("conv", 2)[0], count_step("conv", 2, fused=False)[0]
    assert fused["fused col2im kernel (CuPy)"] == 3 and fused["fused ReLU kernel (CuPy)"] == 7
    assert (
        fused["fused BCE kernel (CuPy)"]
        == fused["fused KL kernel (CuPy)"]
        == fused["fused Adam kernel (CuPy)"]
        == 1
    )
    assert not any("(CuPy)" in k for k in unfused)
    assert sum(unfused.values()) - sum(fused.values()) == 3 * (10 - 1) + 7 * (2 - 1) + (15 - 1) + (8 - 1) + (
        15 - 1
    )
    # every kernel of minivae.kernels is stood in for: one that is not would be counted as its CuPy call's
    # NumPy-side operations (or fail) instead of as one kernel
    defined = {
        n for n, v in vars(kernels).items() if inspect.isfunction(v) and v.__module__ == kernels.__name__
    }
    assert {n for n in defined if not n.startswith("_")} - {"use", "off"} == set(FUSED)


def test_count_ops_counts_arithmetic_on_a_loss_value():
    """A full reduction gives CuPy a 0-d array, so dividing it by the batch is a kernel there: counted, as
    is writing each gradient into its array (grads[k][...] = ..., one copy each, after its product or sum)."""
    import numpy as np
    from count_ops import OPS, CountingArray, counting_numpy

    from minivae import kernels
    from minivae.nn import Linear
    from minivae.nn.losses import bce_with_logits

    x = np.full((4, 3), 0.5, dtype=np.float32).view(CountingArray)
    with counting_numpy():
        OPS.clear()
        bce_with_logits(x, x)  # batchmean: one kernel for the elements, the sum, then / 4
        assert dict(OPS) == {"fused BCE kernel (CuPy)": 1, "sum": 1, "divide": 1}
        OPS.clear()
        with kernels.off():
            bce_with_logits(x, x)  # the library's lines: the other divide is the sigmoid's
        assert OPS["sum"] == 1 and OPS["divide"] == 2 and sum(OPS.values()) == 17
        assert OPS["copy into a slice"] == 2  # the rows into the value's and the gradient's arrays
        layer = Linear(3, 2)
        for k in layer.params:  # as count_step does: the layer's own arrays count too
            layer.params[k], layer.grads[k] = (
                layer.params[k].view(CountingArray),
                layer.grads[k].view(CountingArray),
            )
        layer.forward(x)
        OPS.clear()
        layer.backward(np.ones((4, 2), dtype=np.float32).view(CountingArray))
        assert dict(OPS) == {
            "matmul": 2,
            "sum": 1,
            "copy into a slice": 2,
        }  # dW and dx products, db; dW, db written


def test_interleaved_timing_alternates_blocks_and_gives_each_run_its_steps():
    """bench_train_step.interleaved: blocks of 5 steps, minivae's then the other's, until each has n."""
    import bench_train_step as bench

    order: list[str] = []
    runs = [(lambda: order.append("a"), lambda: None), (lambda: order.append("b"), lambda: None)]
    times = bench.interleaved(runs, 12)
    assert [len(t) for t in times] == [12, 12] and all(v >= 0 for t in times for v in t)
    assert "".join(order) == "aaaaabbbbbaaaaabbbbbaabb"


def test_bench_minivae_interleaves_the_runs_beside_it():
    """bench_minivae times minivae's step and each run beside it (the kernels-off copy, PyTorch's) in turn."""
    import bench_train_step as bench
    import numpy as np

    calls = []
    beside = [(lambda: calls.append("off"), lambda: None), (lambda: calls.append("torch"), lambda: None)]
    times, mem, more = bench.bench_minivae("mlp", 4, np, 1, 3, beside=beside)
    assert len(times) == 3 and [len(t) for t in more] == [3, 3] and mem == {}
    assert calls == ["off", "torch"] + ["off"] * 3 + ["torch"] * 3  # one warm-up step each, then a block each


def test_minivae_step_runs_with_the_kernels_it_was_given_and_restores_the_switch(monkeypatch):
    """--kernels on runs the kernels even under MINIVAE_FUSED=0, off turns them off; the switch is restored,
    and the step is the training loop's: no NaN guard (no host wait), no per-step check of the images."""
    import bench_train_step as bench
    import numpy as np

    from minivae import kernels

    seen = []
    monkeypatch.setattr(bench, "train_step", lambda *a, **k: seen.append((kernels.ENABLED, k)))
    monkeypatch.setattr(kernels, "ENABLED", False)
    for on in (True, False):
        step, sync = bench.minivae_step("mlp", 2, np, kernels_on=on)
        step()
        sync()
    assert [e for e, _ in seen] == [True, False] and kernels.ENABLED is False
    assert seen[0][1] == {"check_finite": False, "check_values": False}


def test_profile_follows_minivae_fused_and_profiles_both_settings(monkeypatch, capsys):
    """Without --kernels the benchmark does what MINIVAE_FUSED says; --kernels both profiles each setting."""
    import bench_train_step as bench

    from minivae import kernels

    args = [
        "bench_train_step.py",
        "--profile",
        "--backend",
        "numpy",
        "--arch",
        "mlp",
        "--batch",
        "2",
        "--steps",
        "1",
    ]
    monkeypatch.setattr(kernels, "ENABLED", False)  # as MINIVAE_FUSED=0 sets it
    monkeypatch.setattr(sys, "argv", args)
    assert bench.main() == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if "measured layer by layer" in line]
    assert len(heads) == 1 and heads[0].startswith("mlp, batch 2, numpy, kernels off:")
    monkeypatch.setattr(sys, "argv", args + ["--kernels", "both"])
    assert bench.main() == 0
    out = capsys.readouterr().out
    assert "numpy, kernels on:" in out and "numpy, kernels off:" in out and "Adam step" in out


def test_kernels_both_times_on_and_off_side_by_side(tmp_path):
    """--kernels both: the main table as always, a second one of on / off, and both settings in the JSON. On
    NumPy the kernels never run, so the two columns time the same code."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train_step.py"), "--backend", "numpy", "--arch", "mlp",
         "--batch", "4", "--steps", "4", "--warmup", "1", "--no-torch", "--kernels", "both", "--json", str(out)],
        capture_output=True, text=True, check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert data["info"]["kernels"] == "both" and data["info"]["fused_kernels"] is True
    (r,) = data["results"]
    assert r["kernels"] == "on" and r["kernels_off_ms_median"] > 0 and len(r["kernels_off_ms_iqr"]) == 2
    assert abs(r["kernels_on_over_off"] - r["ms_median"] / r["kernels_off_ms_median"]) < 1e-12
    assert "| arch | batch | backend | ms/step (median) | IQR |" in proc.stdout
    assert (
        "| arch | batch | backend | kernels on (ms/step) | kernels off (ms/step) | on / off |" in proc.stdout
    )
    assert f"| mlp | 4 | numpy | {r['ms_median']:.2f} | {r['kernels_off_ms_median']:.2f} |" in proc.stdout


def test_bench_says_what_it_ran_on_and_times_beside_a_busy_process(tmp_path):
    """The machine (CPU and its AVX level, OpenBLAS's kernel and threads, the load average) heads the output;
    --contention gives the table again beside a busy process; each row has minivae's threads and its
    1-thread time; OPENBLAS_NUM_THREADS, set, is the policy's answer."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train_step.py"), "--backend", "numpy", "--arch", "mlp",
         "--batch", "4", "--steps", "4", "--warmup", "1", "--no-torch", "--contention", "--json", str(out)],
        capture_output=True, text=True, check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    head = proc.stdout.splitlines()[:4]
    assert head[0].startswith("CPU: ") and "cores for this process" in head[0], head
    assert any(line.startswith("openblas ") and ", 1 threads" in line for line in head), head
    assert any(line.startswith("load average at start: ") for line in head), head
    assert any(line.startswith("OPENBLAS_THREAD_TIMEOUT=") for line in head), (
        head
    )  # do its idle threads sleep
    data = json.loads(out.read_text())
    assert len(data["info"]["loadavg_at_start"]) == 3 and isinstance(data["info"]["avx2"], bool)
    rows = data["results"]
    assert [r["condition"] for r in rows] == ["no busy process started", "beside 1 busy process"]
    assert all(r["threads"] == 1 and r["one_thread_ms_median"] > 0 for r in rows)
    assert "no busy process started: minivae on 1 BLAS thread(s)" in proc.stdout
    assert "beside 1 busy process: minivae on 1 BLAS thread(s)" in proc.stdout
    assert proc.stdout.count("| threads | 1 thread ms | / 1 thread |") == 2


def test_busy_processes_are_stopped_after_the_block():
    import bench_train_step as bench

    with bench.busy_processes(1) as procs:
        assert len(procs) == 1 and procs[0].poll() is None
    assert procs[0].poll() is not None


def test_coretype_warning_only_when_the_kernel_is_older_than_the_cpu():
    import bench_train_step as bench

    avx512 = {"cpu_model": "x", "avx2": True, "avx512": True}
    avx2 = {**avx512, "avx512": False}
    haswell = [{"internal_api": "openblas", "architecture": "Haswell"}]
    skylake = [{"internal_api": "openblas", "architecture": "SkylakeX"}]
    warning = bench.coretype_warning(avx512, haswell, {"OPENBLAS_CORETYPE": "Haswell"})
    assert (
        warning
        and "Haswell kernel on a CPU with AVX-512" in warning
        and "env -u OPENBLAS_CORETYPE" in warning
    )
    assert bench.coretype_warning(avx512, haswell, {}) is None  # not forced: OpenBLAS's own choice
    assert bench.coretype_warning(avx512, skylake, {"OPENBLAS_CORETYPE": "SkylakeX"}) is None
    assert bench.coretype_warning(avx2, haswell, {"OPENBLAS_CORETYPE": "Haswell"}) is None
    sandy = [{"internal_api": "openblas", "architecture": "Sandybridge"}]
    assert "Sandybridge kernel on a CPU with AVX2" in bench.coretype_warning(
        avx2, sandy, {"OPENBLAS_CORETYPE": "x"}
    )


def test_count_ops_time_costs_every_kind_of_operation_on_numpy(tmp_path):
    """count_ops.py --time: the count, then a positive cost per call for each kind of operation of the conv
    step, as a table and JSON."""
    out = tmp_path / "op_cost.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "count_ops.py"), "--arch", "mlp", "--batch", "2", "--time",
         "--backend", "numpy", "--calls", "3", "--json", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    costs = json.loads(out.read_text())["numpy"]
    assert len(costs) == 16 and all(isinstance(v, float) and v > 0 for v in costs.values()), costs
    assert proc.stdout.startswith("mlp, batch 2: ") and "array operations in one training step" in proc.stdout
    assert "| matmul 64x576 @ 576x6272" in proc.stdout and "numpy (µs per call)" in proc.stdout


def test_every_benchmark_command_quoted_names_a_script_and_flags_that_exist():
    """The shell scripts, docs/performance.md and lesson 12 call benchmarks/*.py only with flags the script
    accepts (its --help lists them), and the shell scripts parse."""
    import re

    texts = {p: p.read_text() for p in [*(ROOT / "benchmarks").glob("*.sh"), ROOT / "docs" / "performance.md",
                                        ROOT / "lessons" / "14_cpu_vs_gpu.py"]}  # fmt: skip
    calls: dict[str, set[str]] = {}
    for path, text in texts.items():
        if path.suffix == ".sh":
            subprocess.run(["bash", "-n", str(path)], check=True)
        text = text.replace("\\\n", " ") if path.suffix == ".sh" else text  # continued lines
        text = text.replace("\n", " ") if path.suffix == ".md" else text  # a code span wraps across lines
        for script, rest in re.findall(r"python (benchmarks/[\w.]+)([^\n`|;)]*)", text):
            assert (ROOT / script).is_file(), f"{path.name} calls {script}, which is not there"
            calls.setdefault(script, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest))
    assert {"benchmarks/bench_train_step.py", "benchmarks/count_ops.py"} <= set(calls), calls
    for script, flags in calls.items():
        help_text = subprocess.run(
            [sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, check=True
        ).stdout
        missing = {f for f in flags if f not in help_text}
        assert not missing, f"{script} has no {missing}"


def test_conv_routes_compute_the_layers_forward_and_gradients():
    """conv_routes.py's other routes (bands of output rows, shifted products) give the Conv2d's y, dW and dx,
    and its batch-last Linear gives the library Linear's numbers with y laid out (out, N)."""
    import conv_routes
    import numpy as np

    from minivae.nn import Conv2d, Linear
    from minivae.nn.conv import batch_last

    rng = np.random.default_rng(0)
    layer = Conv2d(3, 4, 3, padding=1, rng=rng, dtype="float64")
    x = batch_last(rng.standard_normal((2, 3, 5, 6)))
    dy = batch_last(rng.standard_normal((2, 4, 5, 6)))
    routes = conv_routes.layer_routes(layer, x, dy, rows=[1, 2, 5])
    assert list(routes) == ["im2col", "bands 1", "bands 2", "bands 5", "shifted"]
    ref = [np.array(a) for a in routes["im2col"]()]
    assert [a.shape for a in ref] == [(4, 5, 6, 2), (4, 3, 3, 3), (3, 5, 6, 2)]
    for name, route in routes.items():
        for a, b in zip(route(), ref):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=name)

    lin, blin = (Linear(7, 5, rng=np.random.default_rng(1), dtype="float64") for _ in range(2))
    blin.__class__ = conv_routes.BatchLastLinear
    xs, dys = rng.standard_normal((3, 7)), rng.standard_normal((3, 5))
    y = blin.forward(xs)
    assert y.T.flags.c_contiguous and not y.flags.c_contiguous  # (N, out) stored as (out, N)
    np.testing.assert_allclose(y, lin.forward(xs), rtol=1e-13)
    np.testing.assert_allclose(blin.backward(dys), lin.backward(dys), rtol=1e-13)
    np.testing.assert_allclose(blin.grads["weight"], lin.grads["weight"], rtol=1e-13)


def test_conv_routes_prints_a_table_of_the_routes(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "conv_routes.py"), "--batch", "2", "--rows", "3",
         "--calls", "1", "--rounds", "2", "--threads", "1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "BLAS threads: 1; float32 GEMM" in proc.stdout
    assert "one 64-channel 3x3 layer, 14 x 14, batch 2: y, dW, dx in ms" in proc.stdout
    assert "| im2col | " in proc.stdout and "| 1.00, 1.00 |" in proc.stdout
    assert "| bands 3 | " in proc.stdout and "| shifted | " in proc.stdout
    step = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "conv_routes.py"), "--step", "--batch", "2", "--steps", "1",
         "--rounds", "1", "--threads", "1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "conv step @2: batch-last boundaries / library, each round: " in step.stdout


def test_ab_parts_times_passes_in_parts_against_whole_and_finds_the_same_weights():
    """Run as a user runs it (minivae imported before NumPy, so OpenBLAS's idle threads sleep), on two
    threads: every round's weights bit-identical, each (arch, batch) a median ratio."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS")
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ab_parts.py"), "--arch", "mlp", "conv", "--batch", "96",
         "--steps", "2", "--rounds", "1", "--threads", "2"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if proc.returncode == 2 and "nothing to compare" in proc.stderr:
        pytest.skip(proc.stderr.strip())  # NumPy's BLAS is not OpenBLAS here
    assert proc.returncode == 0, proc.stderr
    assert "BLAS threads: 2; passes in 2 parts" in proc.stdout
    assert proc.stdout.count("weights bit-identical: True") == 2 and "False" not in proc.stdout
    assert "mlp @96: parts / whole, median of 1: " in proc.stdout
    assert "conv @96: parts / whole, median of 1: " in proc.stdout
    whole = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ab_parts.py"), "--threads", "1"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert whole.returncode == 2 and "nothing to compare: passes stay whole here" in whole.stderr
