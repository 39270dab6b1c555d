"""Sweeps over β: run naming, β fixed in ELBO units across latent sizes, and a tiny β x latent sweep."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import write_fake_run

from minivae.analysis.sweep import monotone_sentence, run_config, run_dir, summarize
from minivae.cli import main
from minivae.training.config import TrainConfig

TINY = ["--train-limit", "256", "--test-limit", "200", "--batch-size", "32", "--epochs", "1", "--hidden", "32",
        "--tsne-points", "0", "--quiet"]  # fmt: skip


@pytest.mark.parametrize("latent", [5, 10, 15, 20])
def test_fixed_effective_beta_converts_the_seed_form(latent):
    """At β_eff = 0.078 every latent size gets the same β in ELBO units: β_seed = 0.078 · latent / 1568."""
    base = TrainConfig(loss="seed", beta=0.0005)
    cfg = run_config(base, latent, 0, 0.078, effective=True)
    assert cfg.beta == pytest.approx(0.078 * latent / (2 * 784))
    assert cfg.effective_beta == pytest.approx(0.078)
    # without it, the seed's protocol: the same β_seed, an effective β that falls with the latent size
    seed_cfg = run_config(base, latent, 0, None, effective=False)
    assert seed_cfg.beta == 0.0005 and seed_cfg.effective_beta == pytest.approx(2 * 784 * 0.0005 / latent)
    # the elbo form is already in ELBO units
    assert run_config(TrainConfig(), latent, 0, 0.078, effective=True).beta == 0.078


def test_run_directories(tmp_path):
    assert run_dir(tmp_path, 5, 1).name == "z5_s1"  # a latent-size sweep keeps its old names
    assert run_dir(tmp_path, 5, 1, 0.25).name == "b0.25_z5_s1"
    assert run_dir(tmp_path, 5, 1, 0.078, effective=True).name == "eb0.078_z5_s1"


def test_monotone_sentence():
    m = {b: [{"rate_nats": r, "distortion_nats": d}] for b, r, d in [(0.5, 30, 80), (1, 25, 85), (2, 18, 95)]}
    assert "is monotone" in monotone_sentence(m, 20)
    m[2] = [{"rate_nats": 26, "distortion_nats": 95}]
    assert "NOT monotone at β 1 -> 2" in monotone_sentence(m, 20)


def test_beta_sweep_end_to_end(tmp_path, mnist_ready):
    """2 β on 2 worker processes: the runs, the summary, the rate-distortion curve."""
    out = tmp_path / "sweep"
    argv = ["sweep", *TINY, "--latents", "3", "--betas", "0.5", "4", "--jobs", "2", "--out", str(out)]
    assert main(argv) == 0
    for name in ["b0.5_z3_s0", "b4_z3_s0"]:
        assert (out / name / "report.md").exists(), name
        assert json.loads((out / name / "config.json").read_text())["beta"] == float(name[1:].split("_")[0])
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 20 and {r["beta"] for r in rows} == {"0.5", "4"}
    for name in ["rate_distortion.png", "psnr_sampled_by_latent.png"]:
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and (out / name).stat().st_size > 3000, name
    report = (out / "report.md").read_text()
    assert "](rate_distortion.png)" in report and "rate-distortion curve is" in report
    assert "| rate R | distortion D |" in report
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["betas"] == [0.5, 4.0] and sweep["fixed_effective_beta"] is False
    # a higher beta buys a lower rate
    rate = {
        n: json.loads((out / n / "metrics.json").read_text())["rate_nats"] for n in ["b0.5_z3_s0", "b4_z3_s0"]
    }
    assert rate["b4_z3_s0"] < rate["b0.5_z3_s0"], rate


def fake_run(path, rate, distortion, psnr, active, effective_beta):
    """The files summarize reads from a run directory, with made-up numbers (conftest.write_fake_run)."""
    write_fake_run(path, psnr, rate, distortion, active, effective_beta, digit_step=0.1, epochs=2)


def test_summarize_fixed_effective_beta_by_latent(tmp_path):
    """Effective β fixed across latent sizes (seed form): eb<β> runs beside the seed's own protocol (z<latent>
    runs, as a plain latent sweep names them), the by-latent figure, the monotone verdicts."""
    base = TrainConfig(loss="seed", beta=0.0005)
    for b, (r, d) in {0.05: (30.0, 70.0), 0.2: (20.0, 80.0)}.items():
        for z, act in ((5, 5), (15, 9)):
            path = run_dir(tmp_path, z, 0, b, effective=True)
            fake_run(path, r + z / 10, d - z / 10, 15 + z / 5 - 10 * b, act, b)
    for z in (5, 15):  # the seed's protocol: β_seed = 0.0005, β_eff = 0.157 at 5 and 0.052 at 15
        fake_run(run_dir(tmp_path, z, 0), 25.0, 75.0, 15.0, 4, 2 * 784 * 0.0005 / z)
    report = summarize(base, [5, 15], 1, tmp_path, betas=[0.05, 0.2], fixed_effective_beta=True)
    text = report.read_text()
    assert "each run's β_seed = β_eff · latent / (2 · 784)" in text
    assert text.count("rate-distortion curve is monotone") == 2
    assert "At β_eff = 0.05 (fixed): Latent size 15 reconstructs best" in text
    assert "beside the seed's protocol (β_seed = 0.0005 at every size)" in text
    assert "At β_seed = 0.0005 (the seed's protocol: β_eff falls with latent size):" in text
    assert "| β_seed=0.0005 z=15 |" in text and "| 0.0005 | 0.05227 | 15 |" in text
    for name in ["rate_distortion.png", "psnr_active_by_latent.png"]:
        assert (tmp_path / name).stat().st_size > 3000 and f"]({name})" in text
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert {(r["beta"], r["latent"]) for r in rows} == {
        (f"{b * z / 1568:.6g}", str(z)) for b in (0.05, 0.2) for z in (5, 15)
    } | {("0.0005", "5"), ("0.0005", "15")}  # each run's own beta_seed


def test_bad_betas_refused(capsys):
    assert main(["sweep", "--betas", "1", "-2"]) == 2
    assert "--betas takes finite numbers >= 0" in capsys.readouterr().err
    assert main(["sweep", "--betas", "1", "1"]) == 2
    assert "each value once" in capsys.readouterr().err
