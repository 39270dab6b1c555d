"""What report.md says about a run: its PSNRs by name, the image counts, the initialisation, the Keras
study's published numbers, the latent units; and what the sweep report says. Tiny models on random images,
no training, so the whole file runs offline in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_fake_run

from minivae.analysis.report import write_report
from minivae.analysis.sweep import run_dir, summarize
from minivae.training.config import TrainConfig
from minivae.training.loop import make_model, split_sizes

N_TEST = 40


def fake_test_set(n: int = N_TEST) -> tuple[np.ndarray, np.ndarray]:
    """n random grey-level images (n, 1, 28, 28) in [0, 1], labels cycling through the ten digits."""
    x = np.random.default_rng(0).random((n, 1, 28, 28)).astype("float32")
    return x, np.arange(n) % 10


def report_of(tmp_path, cfg: TrainConfig, mu_scale: float = 1.0) -> tuple[str, dict]:
    """Write a report for an untrained model of cfg; mu_scale multiplies fc_mu's weights (0: mu constant,
    every latent unit inactive; large: every unit active). Returns (report.md, metrics.json)."""
    model = make_model(cfg, np)
    model.fc_mu.params["weight"][...] *= mu_scale
    x, y = fake_test_set()
    write_report(model, cfg, x, y, tmp_path)
    return (tmp_path / "report.md").read_text(), json.loads((tmp_path / "metrics.json").read_text())


TINY = {"latent": 3, "hidden": 16, "tsne_points": 0, "test_limit": N_TEST}


@pytest.fixture(scope="module")
def mlp_report(tmp_path_factory):
    return report_of(tmp_path_factory.mktemp("mlp"), TrainConfig(**TINY), mu_scale=20.0)


def test_both_psnrs_named_and_shown(mlp_report):
    text, m = mlp_report
    headline = next(line for line in text.splitlines() if line.startswith("- PSNR, mean over the ten digits"))
    assert f"sampled z **{m['psnr_sampled_digit_mean']:.2f} dB**" in headline
    assert f"z = mu **{m['psnr_mean_digit_mean']:.2f} dB**" in headline
    pooled = next(line for line in text.splitlines() if "PSNR of the MSE pooled over all test images" in line)
    assert f"sampled z {m['psnr_sampled']:.2f} dB" in pooled and f"z = mu {m['psnr_mean']:.2f} dB" in pooled
    # no PSNR outside the per-digit table and these two lines goes unnamed
    unnamed = [
        line
        for line in text.splitlines()
        if "PSNR" in line and not line.startswith("|") and line not in (headline, pooled)
    ]
    assert all("pooled" in line or "mean over" in line or "Per-digit PSNR" in line for line in unnamed), (
        unnamed
    )


def test_image_counts_full_run(mlp_report):
    text, _ = mlp_report
    # the full MNIST training set less the last 10 % for validation; the test images evaluated
    assert (
        "- data: MNIST, 54,000 training images, 6,000 validation images (the last 10% of the 60,000), "
        in text
    )
    assert f"{N_TEST} test images (--test-limit {N_TEST} of 10,000)" in text


def test_image_counts_train_limit(tmp_path):
    cfg = TrainConfig(**TINY, train_limit=256, val_fraction=0.2)
    assert split_sizes(cfg, 60_000, 10_000) == (256, 51, N_TEST)
    text, _ = report_of(tmp_path, cfg)
    assert (
        "- data: MNIST, 256 training images (--train-limit 256), 51 validation images, 40 test images" in text
    )


def test_split_sizes():
    assert split_sizes(TrainConfig(), 60_000, 10_000) == (54_000, 6_000, 10_000)
    assert split_sizes(TrainConfig(val_fraction=0.2), 60_000, 10_000) == (48_000, 12_000, 10_000)
    assert split_sizes(TrainConfig(train_limit=100, val_fraction=0.0), 60_000, 10_000) == (100, 0, 10_000)
    assert split_sizes(TrainConfig(train_limit=10**6, test_limit=10**6), 60_000, 10_000) == (
        54_000,
        6_000,
        10_000,
    )


def test_init_named(mlp_report):
    text, _ = mlp_report
    assert "weights initialised `pytorch`" in text and "init default" not in text
    assert "bottleneck" not in text.split("## Test set")[0]  # the mlp has none: nothing to say


def test_conv_report_names_init_bottleneck_and_the_keras_study(tmp_path):
    cfg = TrainConfig(**{**TINY, "latent": 5}, arch="conv", init="he", bottleneck="leaky_relu")
    text, _ = report_of(tmp_path, cfg)
    assert "weights initialised `he`" in text
    assert "activation after the 32-unit bottleneck layer: leaky_relu" in text
    assert "| Keras study (published) |" in text and "Keras study (published): the per-digit PSNR" in text
    assert "seed study" not in text.lower()
    assert (
        "units of the encoder's last layer (the 32 that feed mu and logvar) that are positive for at" in text
    )
    default = TrainConfig(**{**TINY, "latent": 5}, arch="conv")
    assert "weights initialised `glorot`" in report_of(tmp_path, default)[0]


def test_all_active_latent_units_collapse_to_one_line(mlp_report):
    text, m = mlp_report
    assert m["active_units"] == 3
    section = text.split("## Latent units")[1].split("## Per digit")[0]
    assert "All 3 latent units active (variance of mu over the test set > 0.01)" in section
    assert "| unit |" not in section and len(section.strip().splitlines()) == 1


def test_inactive_latent_units_keep_the_table(tmp_path):
    text, m = report_of(tmp_path, TrainConfig(**TINY), mu_scale=0.0)  # mu = bias: the same for every image
    assert m["active_units"] == 0
    section = text.split("## Latent units")[1].split("## Per digit")[0]
    assert "0 of 3 latent units active" in section and "| unit | Var(mu) | KL (nats) | active |" in section
    assert section.count("| no |") == 3


def test_tsne_says_what_it_does(tmp_path, capsys):
    cfg = TrainConfig(**{**TINY, "tsne_points": 30})
    model = make_model(cfg, np)
    x, y = fake_test_set()
    write_report(model, cfg, x, y, tmp_path, progress=True)
    assert "t-SNE map of the latent means of 30 test images" in capsys.readouterr().err
    write_report(model, cfg, x, y, tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_sweep_report_names_its_psnr_and_the_keras_study(tmp_path):
    for z, psnr in ((5, 15.0), (10, 16.0)):
        write_fake_run(run_dir(tmp_path, z, 0), psnr)
    text = summarize(TrainConfig(arch="conv"), [5, 10], 1, tmp_path).read_text()
    assert "Latent size 10 reconstructs best: PSNR (sampled z, mean over the ten digits) 16.00 dB" in text
    assert "| PSNR sampled z, mean over the ten digits | PSNR z = mu, mean over the ten digits |" in text
    assert "| setting | 0 |" in text and "| Keras study (published) |" in text
    assert "seed study" not in text.lower() and "alive encoder units" not in text


def test_a_test_set_missing_a_digit_draws_its_bars_empty(tmp_path):
    """--test-limit can leave a digit out: the report is written, and that digit has no row and no bar."""
    cfg = TrainConfig(**TINY)
    model = make_model(cfg, np)
    x, y = fake_test_set()
    keep = y != 7
    write_report(model, cfg, x[keep], y[keep], tmp_path)
    rows = (tmp_path / "per_digit.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3", "4", "5", "6", "8", "9"]
    for name in ("psnr_per_digit.png", "mse_per_digit.png"):
        assert (tmp_path / name).stat().st_size > 1000
