"""The command line end to end on tiny runs: train, evaluate, sweep, and clear errors for bad input."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

from minivae.cli import CONFIG_GROUPS, DESCRIPTION, build_parser, main

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
    (["sweep", "--latent", "20", "--latents", "5", "10"], "give the latent sizes once: --latents"),
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


def help_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,latents",
    [
        (["--latent", "20", "--betas", "1", "2"], [20]),  # one latent size, two betas: two runs
        (["--latents", "5", "10"], [5, 10]),
        ([], [5, 10, 15, 20]),
    ],
)
def test_sweep_takes_latent_as_one_latent_size(argv, latents, monkeypatch):
    import minivae.analysis.sweep

    seen = {}

    def fake_sweep(base, latents, seeds, out, **kw):
        seen.update(base=base, latents=latents, betas=kw["betas"])
        return out / "report.md"

    monkeypatch.setattr(minivae.analysis.sweep, "sweep", fake_sweep)
    assert main(["sweep", *argv, "--out", "unused", "--quiet"]) == 0
    assert seen["latents"] == latents
    if "--latent" in argv:
        assert seen["base"].latent == 20 and seen["betas"] == [1.0, 2.0]


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_help_shows_each_default_once(command, capsys):
    """Every flag that takes a value says its default once; switches (--quiet) say none."""
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.dest == "help":
            continue
        n = len(re.findall(r"\bdefault\b", action.help))
        assert n == (0 if action.nargs == 0 else 1), (action.option_strings, action.help)
    text = help_of([command], capsys)
    takes_value = [a for a in sub._actions if a.dest != "help" and a.nargs != 0]
    assert text.count("(default:") == len(takes_value)
    for option in ("--init", "--on-nonfinite", "--latent"):
        block = text.split(f"\n  {option} ")[1].split("\n  --")[0]
        assert len(re.findall(r"\bdefault\b", block)) == 1, block


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_help_groups_the_config_flags(command, capsys):
    text = help_of([command], capsys)
    titles = ["model", "data", "optimisation", "β and schedules", "output and reporting", "faults"]
    assert list(CONFIG_GROUPS) == titles
    positions = [text.index(f"\n{title}:\n") for title in titles]
    assert positions == sorted(positions)
    data = text.split("\ndata:\n")[1].split("\n\n")[0]
    assert "--train-limit" in data and "--binarize" in data and "--lr" not in data
    output = text.split("\noutput and reporting:\n")[1].split("\n\n")[0]
    assert "--out" in output and "--quiet" in output and "--tsne-points" in output
    assert "--on-nonfinite" in text.split("\nfaults:\n")[1]


def test_top_level_help_says_what_minivae_does(capsys):
    text = help_of([], capsys)
    assert len(DESCRIPTION.splitlines()) == 2 and DESCRIPTION in text
    assert "variational autoencoder" in text and "MNIST" in text
    assert "argparse" not in text and "front-end" not in text
    assert "minivae sweep --betas" in text  # the examples follow


def test_a_refused_run_names_no_run_directory(tmp_path, capsys):
    """An occupied --out is refused before anything is written, and no line names it as the run."""
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("minivae: error:") and "already holds files" in captured.err
    assert "starting" not in captured.out + captured.err and "run directory" not in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_run_refused_for_its_backend_creates_no_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` fails, as without CuPy
    out = tmp_path / "run"
    assert main(["train", *TINY, "--backend", "cupy", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minivae: error: backend 'cupy' asked for")
    assert 'pip install -e ".[gpu]"' in lines[0] and 'pip install "minivae[gpu]"' in lines[0]
    assert "starting" not in captured.out + captured.err and not out.exists()


def test_the_run_line_comes_once_the_directory_exists(tmp_path, capsys, mnist_ready, monkeypatch):
    import minivae.training.loop as loop

    out = tmp_path / "run"
    existed = []
    real_print = print

    def watching_print(*args, **kw):
        text = " ".join(map(str, args))
        if text.startswith("starting run"):
            existed.append((out / "config.json").is_file())
        real_print(*args, **kw)

    monkeypatch.setattr(loop, "print", watching_print, raising=False)
    assert main(["train", *TINY, "--epochs", "1", "--tsne-points", "0", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert existed == [True]
    assert (
        f"starting run {out} (mlp VAE, latent 20, effective beta 1 in ELBO units, on numpy)" in captured.err
    )


def test_train_and_evaluate_print_the_same_summary_line(tmp_path, capsys, mnist_ready):
    """The one summary line: negative ELBO with its parts and both PSNRs, named; evaluate gives the same."""
    out = tmp_path / "run"
    argv = ["--train-limit", "64", "--test-limit", "100", "--epochs", "1", "--tsne-points", "0", "--quiet"]
    assert main(["train", *argv, "--latent", "2", "--out", str(out)]) == 0
    trained = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test:")]
    assert main(["evaluate", str(out), "--quiet"]) == 0
    evaluated = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test:")]
    assert trained == evaluated and len(trained) == 1
    assert "= distortion" in trained[0] and "PSNR, mean over the ten digits: sampled z" in trained[0]
