"""The per-epoch learning rate (Burda et al.'s 3^i epochs at 10^(-i/7)), in history.csv, resuming bit for
bit under it and under the IWAE objective; old configs and checkpoints without the new fields still load."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from minivae.errors import UserError
from minivae.training.checkpoint import load_checkpoint, save_checkpoint
from minivae.training.config import PRESETS, TrainConfig
from minivae.training.loop import Dataset, Interrupted, train
from minivae.training.rundir import read_history
from minivae.training.schedules import burda_stage, lr_at


@pytest.mark.parametrize(
    ("epoch", "stage"),
    [(0, 0), (1, 1), (3, 1), (4, 2), (12, 2), (13, 3), (39, 3), (40, 4), (120, 4), (121, 5), (363, 5),
     (364, 6), (1092, 6), (1093, 7), (3279, 7), (3280, 8)],
)  # fmt: skip
def test_burda_stages_last_3_to_the_i_epochs(epoch, stage):
    """Stage i covers epochs (3^i - 1)/2 .. (3^(i+1) - 1)/2 - 1: 1, 3, 9, ... epochs; 3,280 in stages 0..7."""
    assert burda_stage(epoch) == stage


def test_lr_values_at_given_epochs():
    cfg = TrainConfig(**PRESETS["burda"])
    assert cfg.lr_schedule == "burda" and cfg.epochs == 3280
    assert lr_at(0, cfg) == 1e-3
    assert lr_at(1, cfg) == lr_at(3, cfg) == pytest.approx(1e-3 * 10 ** (-1 / 7), rel=1e-15)
    assert lr_at(4, cfg) == pytest.approx(1e-3 * 10 ** (-2 / 7), rel=1e-15)
    assert lr_at(1092, cfg) == pytest.approx(1e-3 * 10 ** (-6 / 7), rel=1e-15)
    assert lr_at(3279, cfg) == pytest.approx(1e-4, rel=1e-15)  # the paper's last stage: lr / 10
    assert sum(3**i for i in range(8)) == 3280
    constant = TrainConfig(lr=3e-4)
    assert {lr_at(e, constant) for e in (0, 1, 4, 3279)} == {3e-4}


def test_lr_stages_set_the_stage_lengths():
    """--lr-stages 1 1 1 3 9 27 81 243: the paper's eight rates in 366 epochs; after the last stage its
    rate stays. Stage i still runs at lr * 10^(-i/7)."""
    cfg = TrainConfig(**PRESETS["burda"], lr_stages=[1, 1, 1, 3, 9, 27, 81, 243]).validate()
    starts = [0, 1, 2, 3, 6, 15, 42, 123]  # the running sums of the lengths
    for i, start in enumerate(starts):
        assert lr_at(start, cfg) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-15), i
    assert lr_at(5, cfg) == lr_at(3, cfg) != lr_at(6, cfg)
    assert lr_at(122, cfg) == pytest.approx(1e-3 * 10 ** (-6 / 7), rel=1e-15)
    assert lr_at(365, cfg) == lr_at(5000, cfg) == pytest.approx(1e-4, rel=1e-15)
    paper = TrainConfig(**PRESETS["burda"], lr_stages=[3**i for i in range(8)])
    assert [lr_at(e, paper) for e in range(3280)] == [
        lr_at(e, TrainConfig(**PRESETS["burda"])) for e in range(3280)
    ]


def fake_data(n_train=40, n_test=8, seed=0):
    """Grey-level images in the Dataset layout train() takes (no MNIST needed): one random stroke mask
    shared by every image (grey level 0.9 on it, 0.05 off it), each pixel jittered by up to 0.05."""
    rng = np.random.default_rng(seed)
    mask = rng.random((1, 1, 28, 28)) < 0.2
    x = (np.where(mask, 0.9, 0.05) + 0.05 * rng.random((n_train + n_test, 1, 28, 28))).astype("float32")
    y = rng.integers(0, 10, n_train + n_test)
    return Dataset(
        x[:n_train], x[:0], x[n_train:], y[:n_train], y[:0], y[n_train:],
        (x[n_train:, 0] * 255).astype(np.uint8),
    )  # fmt: skip


# 2 steps per epoch (40 images, batch 20), 5 epochs: stages 0, 1 and the first epoch of stage 2
TINY = dict(
    latent=3, hidden=[16, 16], activation="tanh", batch_size=20, epochs=5, val_fraction=0.0, tsne_points=0,
    binarize="dynamic", lr_schedule="burda", lr=3e-3, adam_eps=1e-4,
)  # fmt: skip


def weights(model):
    return {k: np.array(p) for k, p, _ in model.named_parameters()}


@pytest.mark.parametrize(("objective", "k", "stop_at"), [("elbo", 1, 3), ("iwae", 5, 3), ("iwae", 5, 8)])
def test_resume_is_bit_identical_under_the_lr_schedule(objective, k, stop_at, tmp_path):
    """Cut mid-epoch 2 (step 3) or at the end of epoch 4 (step 8); the resumed run ends with the
    uninterrupted run's weights and history, its lr column included."""
    cfg = dict(TINY, objective=objective, k=k)
    ref, _, ref_hist = train(TrainConfig(**cfg), tmp_path / "ref", progress=False, data=fake_data())
    with pytest.raises(Interrupted):
        cut = tmp_path / "cut"
        train(TrainConfig(**cfg), cut, progress=False, data=fake_data(), on_step=lambda s: s.step >= stop_at)
    resumed, _, hist = train(None, tmp_path / "cut", resume=True, progress=False, data=fake_data())
    for name, v in weights(ref).items():
        np.testing.assert_array_equal(v, weights(resumed)[name], err_msg=name)
    strip = [{c: v for c, v in r.items() if c != "seconds"} for r in hist]
    assert strip == [{c: v for c, v in r.items() if c != "seconds"} for r in ref_hist]
    lrs = [3e-3, 3e-3 * 10 ** (-1 / 7), 3e-3 * 10 ** (-1 / 7), 3e-3 * 10 ** (-1 / 7), 3e-3 * 10 ** (-2 / 7)]
    assert [r["lr"] for r in hist] == pytest.approx(lrs, rel=1e-15)
    rows = read_history(tmp_path / "cut" / "history.csv")
    assert [float(r["lr"]) for r in rows] == pytest.approx(lrs, rel=1e-12)


def test_the_lr_reaches_the_optimizer(tmp_path):
    """Epoch 1 runs at lr under either schedule (the same weights); epoch 2 at lr 10^(-1/7) under burda."""
    runs = {}
    for schedule in ("constant", "burda"):
        for epochs in (1, 2):
            cfg = TrainConfig(**dict(TINY, lr_schedule=schedule, epochs=epochs))
            model, _, _ = train(cfg, tmp_path / f"{schedule}{epochs}", progress=False, data=fake_data())
            runs[schedule, epochs] = weights(model)
    name = "decoder.0.weight"
    np.testing.assert_array_equal(runs["constant", 1][name], runs["burda", 1][name])
    step_c = runs["constant", 2][name] - runs["constant", 1][name]
    step_b = runs["burda", 2][name] - runs["burda", 1][name]
    ratio = np.abs(step_b).sum() / np.abs(step_c).sum()  # Adam's step scales with lr (both from one state)
    assert ratio == pytest.approx(10 ** (-1 / 7), rel=0.05)


def test_iwae_training_lowers_its_loss_in_train(tmp_path):
    """train() with --objective iwae --k 5 on 40 images, 30 steps at a constant lr: its training loss
    (-L_5, from about 545 nats with logits near 0; 288 here) falls by a clear margin."""
    cfg = TrainConfig(**dict(TINY, objective="iwae", k=5, epochs=15, lr_schedule="constant"))
    _, _, hist = train(cfg, tmp_path / "r", progress=False, data=fake_data())
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 100, [r["train_loss"] for r in hist]
    # recon + kl is the 5-sample ELBO estimate: never below the bound's loss
    assert all(r["train_recon"] + r["train_kl"] >= r["train_loss"] for r in hist)


def old_style(meta: dict) -> dict:
    """A checkpoint's metadata as minivae wrote it before these fields: hidden a number, no activation,
    objective, k, lr_schedule or adam_eps, and no lr column in the history."""
    new = ("activation", "objective", "k", "lr_schedule", "adam_eps", "lr_stages")
    config = {c: v for c, v in meta["config"].items() if c not in new}
    config["hidden"] = config["hidden"][0]
    history = [{c: v for c, v in r.items() if c != "lr"} for r in meta["history"]]
    return {**meta, "config": config, "history": history}


def test_an_old_checkpoint_resumes(tmp_path):
    cfg = TrainConfig(latent=3, hidden=16, batch_size=20, epochs=2, val_fraction=0.0, tsne_points=0)
    assert cfg.hidden == [16]
    train(cfg, tmp_path / "run", progress=False, data=fake_data(), epochs=1)
    path = tmp_path / "run" / "last.npz"
    model_state, optim_state, meta = load_checkpoint(path)
    save_checkpoint(path, model_state, optim_state, old_style(meta))
    with (tmp_path / "run" / "history.csv").open("w", newline="") as f:  # an old history.csv: no lr column
        w = csv.DictWriter(f, fieldnames=list(old_style(meta)["history"][0]))
        w.writeheader()
        w.writerows(old_style(meta)["history"])
    _, _, hist = train(None, tmp_path / "run", resume=True, progress=False, data=fake_data(), epochs=2)
    assert len(hist) == 2 and "lr" not in hist[0] and hist[1]["lr"] == 1e-3
    assert [r.get("lr") for r in read_history(tmp_path / "run" / "history.csv")] == ["", "0.001"]
    assert TrainConfig.from_dict(old_style(meta)["config"]).hidden == [16]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 5}, "--k 5 needs --objective iwae"),
        ({"objective": "iwae", "beta": 2.0}, "needs --loss elbo, --beta 1"),
        ({"objective": "iwae", "k": 0}, "--k must be a whole number >= 1"),
        ({"lr_schedule": "step"}, "--lr-schedule 'step' is not known"),
        ({"adam_eps": -1.0}, "--adam-eps must be a finite number > 0"),
        ({"optimizer": "sgd", "adam_eps": 1e-4}, "--adam-eps is Adam's"),
        ({"hidden": [200, 0]}, "--hidden takes one or more whole numbers >= 1, got 200 0"),
        ({"activation": "gelu"}, "--activation 'gelu' is not known"),
        (
            {"lr_stages": [3, 9]},
            "--lr-stages takes .* with --lr-schedule burda; got 3 9 with --lr-schedule constant",
        ),
        (
            {"lr_schedule": "burda", "lr_stages": [3, 0]},
            "--lr-stages takes the epochs of each stage, whole numbers >= 1",
        ),
    ],
)
def test_bad_settings_are_one_line(change, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as e:
        TrainConfig(**change).validate()
    assert "\n" not in str(e.value)


def test_the_cli_builds_the_burda_runs():
    """The commands docs/burda.md gives parse to the configs they describe."""
    from minivae.cli import build_parser, config_from_args

    parse = build_parser().parse_args
    cfg = config_from_args(parse(["train", "--preset", "burda", "--objective", "iwae", "--k", "5"]))
    assert (cfg.hidden, cfg.activation, cfg.latent, cfg.batch_size) == ([200, 200], "tanh", 50, 20)
    assert (cfg.adam_eps, cfg.lr, cfg.lr_schedule, cfg.epochs) == (1e-4, 1e-3, "burda", 3280)
    assert (cfg.binarize, cfg.val_fraction, cfg.objective, cfg.k) == ("dynamic", 0.0, "iwae", 5)
    cfg = config_from_args(
        parse(["train", "--hidden", "300", "100", "--epochs", "1093", "--lr-schedule", "burda"])
    )
    assert cfg.hidden == [300, 100] and lr_at(1092, cfg) == pytest.approx(1e-3 * 10 ** (-6 / 7))
    cfg = config_from_args(
        parse("train --preset burda --epochs 364 --threads 1 --objective iwae --k 5".split())
    )
    assert (cfg.epochs, cfg.threads, lr_at(363, cfg)) == (364, 1, pytest.approx(1e-3 * 10 ** (-5 / 7)))
    cfg = config_from_args(
        parse("train --preset burda --lr-stages 1 1 1 3 9 27 81 243 --epochs 366 --threads 1".split())
    )
    assert cfg.lr_stages == [1, 1, 1, 3, 9, 27, 81, 243] and lr_at(365, cfg) == pytest.approx(1e-4)
    cfg = config_from_args(
        parse("train --preset burda --lr-stages 1 3 9 27 81 81 81 81 --epochs 364".split())
    )
    assert [lr_at(e, cfg) for e in (120, 363)] == pytest.approx([1e-3 * 10 ** (-4 / 7), 1e-4])
    cfg = config_from_args(
        parse(
            "train --preset burda --lr-stages 1 3 9 27 81 243 243 --epochs 520 --threads 1 --objective iwae --k 5".split()
        )
    )
    assert (cfg.epochs, cfg.objective, cfg.k) == (520, "iwae", 5)
    stage5, stage6 = 1e-3 * 10 ** (-5 / 7), 1e-3 * 10 ** (-6 / 7)
    assert [lr_at(e, cfg) for e in (363, 364, 519)] == pytest.approx([stage5, stage6, stage6])
    args = parse(["evaluate", "RUN", "--iwae-k", "5000", "--test-limit", "0"])
    assert (args.iwae_k, args.test_limit) == (5000, 0)


def test_the_report_names_the_stage_lengths():
    from collections import defaultdict

    from minivae.analysis.report import _run_lines

    metrics = defaultdict(lambda: 1, {"test_images": 10_000})
    staged = TrainConfig(**PRESETS["burda"], lr_stages=[1, 1, 1, 3]).validate()
    assert "lr 0.001 x 10^(-i/7) for 1 + 1 + 1 + 3 epochs, stage i" in "\n".join(_run_lines(staged, metrics))
    paper = TrainConfig(**PRESETS["burda"]).validate()
    assert "lr 0.001 x 10^(-i/7) for 3^i epochs, stage i" in "\n".join(_run_lines(paper, metrics))
