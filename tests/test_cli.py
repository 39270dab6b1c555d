"""The command line end to end on tiny runs: train, evaluate, sweep, and clear errors for bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from minivae.cli import main

TINY = ["--train-limit", "256", "--test-limit", "300", "--batch-size", "32", "--epochs", "2", "--quiet"]
FIGURES = ["loss_curves.png", "reconstructions.png", "prior_samples.png", "tsne.png", "psnr_per_digit.png",
           "mse_per_digit.png", "traversals.png", "interpolation.png"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_ready):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--latent", "4", "--tsne-points", "150", "--out", str(out)]) == 0
    return out


def test_train_writes_the_report(run):
    for name in [
        "config.json",
        "history.csv",
        "metrics.json",
        "per_digit.csv",
        "report.md",
        "best.npz",
        *FIGURES,
    ]:
        assert (run / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (run / name).stat().st_size > 3000
    rows = list(csv.DictReader((run / "per_digit.csv").open()))
    assert [int(r["digit"]) for r in rows] == list(range(10))
    assert sum(int(r["count"]) for r in rows) == 300
    for r in rows:  # both columns are real measurements: finite, positive, not the seed's 0 / inf
        assert 0 < float(r["mse_sampled"]) < 1 and 0 < float(r["mse_mean"]) < 1
        assert 0 < float(r["psnr_sampled"]) < 60
    m = json.loads((run / "metrics.json").read_text())
    assert m["neg_elbo"] > 0 and m["neg_elbo"] == pytest.approx(m["recon_nats"] + m["kl_nats"])
    report = (run / "report.md").read_text()
    assert "negative ELBO" in report and all(f"]({f})" in report for f in FIGURES)


def test_evaluate_rewrites_metrics(run, capsys):
    before = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    assert main(["evaluate", str(run), "--iwae-k", "5"]) == 0
    after = json.loads((run / "metrics.json").read_text())
    assert after["neg_elbo"] == pytest.approx(before["neg_elbo"], rel=1e-6)
    assert "log p(x) >= " in capsys.readouterr().out
    m = after  # rate and distortion by name, per-unit values, and the IWAE bound
    assert m["iwae_k"] == 5 and m["iwae_log_px"] > m["elbo_nats"] - 1.0  # at least as tight, up to noise
    assert m["rate_nats"] + m["distortion_nats"] == pytest.approx(m["neg_elbo"])
    assert len(m["latent_unit_variance"]) == len(m["active_unit_mask"]) == len(m["kl_per_unit_nats"]) == 4
    report = (run / "report.md").read_text()
    assert (
        "IWAE estimate of log p(x) with k = 5" in report
        and "rate R" in report
        and "## Latent units" in report
    )


def test_sweep(tmp_path, mnist_ready):
    out = tmp_path / "sweep"
    args = ["sweep", *TINY, "--epochs", "1", "--latents", "2", "3", "--seeds", "2", "--tsne-points", "0"]
    assert main([*args, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 20 and {r["latent"] for r in rows} == {"2", "3"}
    assert all(float(r["psnr_sampled_std"]) >= 0 for r in rows)
    report = (out / "report.md").read_text()
    assert "reconstructs best" in report
    for name in ["psnr_sampled_by_latent.png", "psnr_mean_by_latent.png", "loss_curves_by_latent.png"]:
        assert (out / name).stat().st_size > 3000
    for run in ["z2_s0", "z2_s1", "z3_s0", "z3_s1"]:
        assert (out / run / "report.md").exists()
    # a second call finds every run done and only redoes the summary
    assert main([*args, "--out", str(out)]) == 0


BAD = [
    (["train", "--latent", "-1"], "--latent must be a whole number >= 1"),
    (["train", "--batch-size", "0"], "--batch-size must be a whole number >= 1"),
    (["train", "--beta", "-0.5"], "--beta must be a finite number >= 0"),
    (["train", "--lr", "0"], "--lr must be a finite number > 0"),
    (["train", "--arch", "resnet"], "--arch 'resnet' is not known"),
    (["train", "--backend", "tpu"], "--backend 'tpu' is not known"),
    (["train", "--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
    (["train", "--latent", "abc"], "invalid int value"),
    (["train", "--epochs"], "expected one argument"),
    (["train", "--resume", "/nonexistent/run"], "no last.npz there to resume from"),
    (["evaluate", "/nonexistent/run"], "has no best.npz"),
    (["sweep", "--latents", "0", "5"], "--latents, --seeds and --jobs take whole numbers >= 1"),
    (["train", "--beta-schedule", "sigmoid"], "--beta-schedule 'sigmoid' is not known"),
    (["train", "--beta-schedule", "capacity", "--loss", "seed"], "capacity needs --loss elbo"),
    (["train", "--beta-warmup-epochs", "x"], "invalid float value"),
    (["evaluate", "/nonexistent/run", "--iwae-k", "-1"], "--iwae-k must be >= 0"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_a_message(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", *TINY, "--out", str(blocker / "run")]) == 2
    assert "cannot write to the output directory" in capsys.readouterr().err
    assert blocker.read_text() == "not a directory"


def test_no_traceback_for_user_errors():
    out = subprocess.run(
        [sys.executable, "-m", "minivae.cli", "train", "--beta", "-1"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "minivae: error: --beta" in out.stderr
