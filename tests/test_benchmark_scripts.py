"""The scripts behind the README's seed-study numbers: the GPU run queue and the comparison table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed_study_gpu import queue  # noqa: E402

SEED_Z15 = [20.36, 26.07, 19.08, 19.76, 20.34, 19.48, 20.88, 21.61, 18.82, 21.24]


def test_queue_puts_the_first_latent_size_first_or_each_seed_first():
    q = queue([15, 5], 2)
    assert q[:4] == [("relu", 15, 0), ("leaky", 15, 0), ("relu", 15, 1), ("leaky", 15, 1)]
    assert len(q) == len(set(q)) == 8
    q = queue([5, 10], 2, seed_major=True)
    assert [s for _, _, s in q] == [0, 0, 0, 0, 1, 1, 1, 1]
    q = queue([5, 10], 2, seed_major=True, skip=("relu/z5_s0", "leaky/z10_s1"))
    assert q == [
        ("leaky", 5, 0),
        ("relu", 10, 0),
        ("leaky", 10, 0),
        ("relu", 5, 1),
        ("leaky", 5, 1),
        ("relu", 10, 1),
    ]


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
    """On CuPy the conv step's 3 col2im calls, 7 ReLU forwards, BCE and KL are one kernel each; --unfused counts
    the lines they stand for (a fill and 9 adds per col2im, a compare and a multiply per ReLU, 13 for BCE, 8 for KL)."""
    from count_ops import count_step

    fused, unfused = count_step("conv", 2)[0], count_step("conv", 2, fused=False)[0]
    assert fused["fused col2im kernel (CuPy)"] == 3 and fused["fused ReLU kernel (CuPy)"] == 7
    assert fused["fused BCE kernel (CuPy)"] == fused["fused KL kernel (CuPy)"] == 1 and not any(
        "(CuPy)" in k and "Adam" not in k for k in unfused
    )
    assert sum(unfused.values()) - sum(fused.values()) == 3 * (10 - 1) + 7 * (2 - 1) + (13 - 1) + (8 - 1)


def test_count_ops_counts_arithmetic_on_a_loss_value():
    """A full reduction gives CuPy a 0-d array, so dividing it by the batch is a kernel there: counted, as
    are the reductions the weight and bias gradients write in place (one operation each, no copy)."""
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
        assert OPS["sum"] == 1 and OPS["divide"] == 2 and sum(OPS.values()) == 15
        layer = Linear(3, 2)
        for k in layer.params:  # as count_step does: the layer's own arrays count too
            layer.params[k], layer.grads[k] = (
                layer.params[k].view(CountingArray),
                layer.grads[k].view(CountingArray),
            )
        layer.forward(x)
        OPS.clear()
        layer.backward(np.ones((4, 2), dtype=np.float32).view(CountingArray))
        assert dict(OPS) == {"matmul": 2, "sum": 1}  # dW and dx products, db: no copies


def test_bench_times_an_older_train_step_without_check_values(monkeypatch):
    """gpu_before_after.sh times an older minivae whose train_step has no check_values: the benchmark calls it
    without the flag (that package checked the images every step), and passes False to the current one."""
    import bench_train_step as bench
    import numpy as np

    calls = []
    real = bench.train_step

    def older(model, opt, x, eps, beta, form, grad_clip=0.0, check_finite=True, capacity=None):
        calls.append("older")
        return real(model, opt, x, eps, beta, form, grad_clip, check_finite, capacity)

    monkeypatch.setattr(bench, "train_step", older)
    times, _, _ = bench.bench_minivae("mlp", 4, np, warmup=1, steps=2)
    assert len(times) == 2 and calls == ["older"] * 3

    seen = []

    def current(model, opt, x, eps, beta, form, check_finite=True, check_values=True):
        seen.append(check_values)

    monkeypatch.setattr(bench, "train_step", current)
    bench.bench_minivae("mlp", 4, np, warmup=0, steps=1)
    assert seen == [False]


def test_op_cost_times_every_kind_of_operation_on_numpy(tmp_path):
    """op_cost.py: a positive cost per call for each kind of operation of the conv step, as a table and JSON."""
    out = tmp_path / "op_cost.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "op_cost.py"), "--backend", "numpy", "--calls", "3",
         "--json", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    costs = json.loads(out.read_text())["numpy"]
    assert len(costs) == 17 and all(isinstance(v, float) and v > 0 for v in costs.values()), costs
    assert "| matmul 64x576 @ 576x6272" in proc.stdout and "numpy (µs per call)" in proc.stdout


def test_relu_flips_names_the_units_on_the_other_side_of_zero(monkeypatch):
    """benchmarks/relu_flips.py: one entry per ReLU layer of the model, listing (image, unit) where the
    float32 mask differs from float64's; none in this small first step, and a planted one is found."""
    import numpy as np
    import relu_flips

    assert relu_flips.flips("conv", 2) == {k: [] for k in relu_flips.relu_masks("conv", 2, np, "float64")}
    assert len(relu_flips.flips("conv", 2)) == 7  # the conv model's ReLUs
    real = relu_flips.relu_masks

    def planted(arch, batch, xp, dtype):
        masks = real(arch, batch, xp, dtype)
        if dtype == "float32":
            masks["decoder.1"][1, 37] = ~masks["decoder.1"][1, 37]
        return masks

    monkeypatch.setattr(relu_flips, "relu_masks", planted)
    found = relu_flips.flips("mlp", 3)
    assert found["decoder.1"] == [[1, 37]] and found["encoder.2"] == []


def test_host_time_queues_and_finishes_numpy_steps_together():
    """benchmarks/host_time.py: NumPy runs each step as it is queued, so the two times are the same run."""
    import host_time

    queued, done = host_time.queued_and_done("mlp", 4, "numpy", 2)
    assert 0 < queued <= done < queued * 1.5


def test_interleaved_timing_alternates_blocks_and_gives_each_run_its_steps():
    """bench_train_step.interleaved: blocks of 5 steps, minivae's then the other's, until each has n."""
    import bench_train_step as bench

    order: list[str] = []
    runs = [(lambda: order.append("a"), lambda: None), (lambda: order.append("b"), lambda: None)]
    times = bench.interleaved(runs, 12)
    assert [len(t) for t in times] == [12, 12] and all(v >= 0 for t in times for v in t)
    assert "".join(order) == "aaaaabbbbbaaaaabbbbbaabb"


def test_bench_minivae_interleaves_a_step_beside_it():
    import bench_train_step as bench
    import numpy as np

    calls = []
    times, mem, beside = bench.bench_minivae(
        "mlp", 4, np, 1, 3, beside=(lambda: calls.append(1), lambda: None)
    )
    assert len(times) == len(beside) == 3 and len(calls) == 1 + 3 and mem == {}


def test_ab_kernels_steps_its_second_model_with_the_kernels_off(monkeypatch):
    """benchmarks/ab_kernels.py: the "off" step runs with minivae.kernels.ENABLED False, and restores it."""
    import ab_kernels
    import numpy as np

    from minivae import kernels

    seen = []
    monkeypatch.setattr(ab_kernels, "train_step", lambda *a, **k: seen.append(kernels.ENABLED))
    step, sync = ab_kernels.kernels_off_step("mlp", 2, np)
    step()
    sync()
    assert seen == [False] and kernels.ENABLED
