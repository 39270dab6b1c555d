"""Training on a few hundred real MNIST images: it learns, saves, resumes bit for bit, and refuses bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minivae.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minivae.training.config import TrainConfig
from minivae.training.loop import Interrupted, NonFiniteError, load_run, train

TINY = dict(train_limit=320, test_limit=200, val_fraction=0.25, batch_size=32, tsne_points=0)


def weights(model):
    return {k: np.array(p) for k, p, _ in model.named_parameters()}


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_training_lowers_the_loss(arch, tmp_path, mnist_ready):
    cfg = TrainConfig(arch=arch, epochs=3 if arch == "mlp" else 2, latent=4, **TINY)
    if arch == "conv":
        cfg.train_limit, cfg.batch_size = 128, 16
    _, _, history = train(cfg, tmp_path / "run", progress=False)
    assert len(history) == cfg.epochs
    first, last = history[0], history[-1]
    assert last["val_loss"] < first["val_loss"], history
    assert last["train_loss"] < first["train_loss"], history
    for name in ("config.json", "history.csv", "best.npz", "last.npz"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_save_load_identical_outputs(tmp_path, mnist_ready):
    model, data, _ = train(TrainConfig(epochs=1, latent=3, **TINY), tmp_path / "run", progress=False)
    loaded, cfg = load_run(tmp_path / "run")
    x = data.x_test[:16]
    eps = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    for a, b in zip(model.forward(x, eps=eps), loaded.forward(x, eps=eps)):
        np.testing.assert_array_equal(a, b)
    assert cfg.latent == 3


@pytest.mark.parametrize("stop_at", [1, 3, 5, 8])  # first step, mid-epoch, last batch of epoch 1, mid-epoch 2
def test_resume_is_bit_identical(stop_at, tmp_path, mnist_ready):
    cfg = dict(epochs=2, latent=3, **{**TINY, "train_limit": 160})  # 5 steps per epoch
    ref, _, ref_hist = train(TrainConfig(**cfg), tmp_path / "ref", progress=False)
    with pytest.raises(Interrupted, match="resume with: minivae train --resume"):
        train(TrainConfig(**cfg), tmp_path / "cut", progress=False, on_step=lambda s: s.step >= stop_at)
    resumed, _, hist = train(None, tmp_path / "cut", resume=True, progress=False)
    for k, v in weights(ref).items():
        np.testing.assert_array_equal(v, weights(resumed)[k], err_msg=k)
    assert [r["train_loss"] for r in hist] == [r["train_loss"] for r in ref_hist]
    a, _, _ = load_checkpoint(tmp_path / "ref" / "last.npz")
    b, _, _ = load_checkpoint(tmp_path / "cut" / "last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_reads_last_npz_once_and_leaves_the_callers_config_alone(tmp_path, monkeypatch, mnist_ready):
    import minivae.training.loop as T

    cfg = TrainConfig(epochs=1, latent=3, **{**TINY, "train_limit": 64})
    train(cfg, tmp_path / "run", progress=False, epochs=2)
    assert cfg.epochs == 1  # train() ran 2 epochs on a copy
    reads, real = [], T.load_checkpoint
    monkeypatch.setattr(T, "load_checkpoint", lambda path: reads.append(path.name) or real(path))
    _, _, hist = train(None, tmp_path / "run", resume=True, progress=False, epochs=3)
    assert reads == ["last.npz", "best.npz"]  # the config, weights and counters; then the best weights
    assert [r["epoch"] for r in hist] == [1, 2, 3]


SCHEDULED = {
    "linear": dict(beta_schedule="linear", beta_warmup_epochs=1.5),
    "cyclical": dict(beta_schedule="cyclical", beta_cycles=2),
    "capacity": dict(beta_schedule="capacity", capacity_max=5.0, capacity_epochs=1.0, beta=2.0),
    "cyclical+binarize": dict(beta_schedule="cyclical", beta_cycles=3, binarize="dynamic"),
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULED))
def test_resume_is_bit_identical_with_a_schedule(schedule, tmp_path, mnist_ready):
    """beta (and C) are functions of the step alone, so a cut mid-epoch resumes to the same weights."""
    cfg = dict(epochs=2, latent=3, hidden=32, **{**TINY, "train_limit": 128}, **SCHEDULED[schedule])
    ref, _, ref_hist = train(TrainConfig(**cfg), tmp_path / "ref", progress=False)
    with pytest.raises(Interrupted):  # 4 steps per epoch: cut in the middle of epoch 2
        train(TrainConfig(**cfg), tmp_path / "cut", progress=False, on_step=lambda s: s.step >= 6)
    resumed, _, hist = train(None, tmp_path / "cut", resume=True, progress=False)
    for k, v in weights(ref).items():
        np.testing.assert_array_equal(v, weights(resumed)[k], err_msg=k)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in hist]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in ref_hist]


def test_history_records_the_schedule(tmp_path, mnist_ready):
    """history.csv: beta at each epoch's last step (5 steps per epoch here), and C where used."""
    cfg = TrainConfig(epochs=2, latent=3, hidden=32, **{**TINY, "train_limit": 160}, **SCHEDULED["linear"])
    _, _, hist = train(cfg, tmp_path / "lin", progress=False)
    assert [r["beta"] for r in hist] == pytest.approx([4 / 7.5, 1.0])  # step 4 of a 7.5-step warm-up, then 1
    assert [r["capacity"] for r in hist] == ["", ""]
    cfg = TrainConfig(epochs=2, latent=3, hidden=32, **{**TINY, "train_limit": 160}, **SCHEDULED["capacity"])
    _, _, hist = train(cfg, tmp_path / "cap", progress=False)
    assert [r["capacity"] for r in hist] == pytest.approx([4.0, 5.0])  # C = 5 * step / 5, capped at 5
    assert [r["beta"] for r in hist] == [2.0, 2.0]
    header = (tmp_path / "cap" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"beta", "capacity", "effective_beta"} <= set(header)


def test_dynamic_binarisation(mnist_ready):
    """Pixels become 0/1 with probability their grey level; a fixed stream gives the same images each time."""
    from minivae.training.loop import binarize, eval_images, load_data

    x = np.full((200, 1, 28, 28), 0.3, dtype=np.float32)
    x[:, :, :14] = 1.0  # certain pixels stay certain
    b = binarize(x, [0, 8, 5])
    assert b.dtype == np.float32 and set(np.unique(b)) <= {0.0, 1.0}
    assert (b[:, :, :14] == 1).all() and b[:, :, 14:].mean() == pytest.approx(0.3, abs=0.01)
    np.testing.assert_array_equal(b, binarize(x, [0, 8, 5]))
    assert not np.array_equal(b, binarize(x, [0, 8, 6]))
    cfg = TrainConfig(binarize="dynamic", **TINY)
    data = load_data(cfg, np)
    assert set(np.unique(data.x_test)) <= {0.0, 1.0} and set(np.unique(data.x_val)) <= {0.0, 1.0}
    assert len(np.unique(data.x_train)) > 2  # training images stay grey: each batch is drawn at its step
    np.testing.assert_array_equal(
        eval_images(load_data(TrainConfig(**TINY), np).x_test, cfg, "test"), data.x_test
    )


def test_same_seed_same_numbers(tmp_path, mnist_ready):
    _, _, h1 = train(TrainConfig(epochs=1, **TINY), tmp_path / "a", progress=False)
    _, _, h2 = train(TrainConfig(epochs=1, **TINY), tmp_path / "b", progress=False)
    _, _, h3 = train(TrainConfig(epochs=1, **{**TINY, "seed": 1}), tmp_path / "c", progress=False)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in h1]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in h2]
    assert h1[0]["train_loss"] != h3[0]["train_loss"]


def test_refuses_to_overwrite_a_run(tmp_path, mnist_ready):
    train(TrainConfig(epochs=1, **TINY), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "best.npz").read_bytes()
    with pytest.raises(Exception, match="already holds files.*--resume"):
        train(TrainConfig(epochs=1, **TINY), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "best.npz").read_bytes() == before


def test_nan_stops_with_a_diagnosis_and_keeps_the_checkpoint(tmp_path, mnist_ready):
    """A huge learning rate blows the loss up: training stops, says where and why, last.npz is untouched."""
    run = tmp_path / "run"
    with pytest.raises(Interrupted):  # 10 steps per epoch: stop after the first step of epoch 2
        train(TrainConfig(epochs=3, **TINY), run, progress=False, on_step=lambda s: s.step >= 11)
    model_state, optim_state, meta = load_checkpoint(run / "last.npz")
    meta["config"]["lr"] = 1e9  # the same run, continued with a learning rate that diverges
    save_checkpoint(
        run / "last.npz", model_state, optim_state, {k: meta[k] for k in ("config", "state", "history")}
    )
    before = (run / "last.npz").read_bytes()
    with pytest.raises(NonFiniteError, match=r"NaN/Inf; it first appears in .*--lr 1e\+09") as e:
        train(None, run, resume=True, progress=False)
    assert "(epoch 2, batch 2)" in str(e.value) or "(epoch 2, batch 3)" in str(e.value)
    assert "last.npz (end of the last good epoch) is intact" in str(e.value)
    assert (run / "last.npz").read_bytes() == before
    model_state, _, _ = load_checkpoint(run / "last.npz")
    assert all(np.isfinite(v).all() for v in model_state.values())


def test_skip_nonfinite_batches(tmp_path, mnist_ready):
    cfg = TrainConfig(epochs=1, lr=1e6, on_nonfinite="skip", **TINY)
    model, _, _ = train(cfg, tmp_path / "run", progress=False)
    _, _, meta = load_checkpoint(tmp_path / "run" / "last.npz")
    assert meta["state"]["skipped"] > 0
    assert all(np.isfinite(v).all() for v in weights(model).values())


def test_checkpoint_corruption_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.arange(6.0).reshape(2, 3)}, {"t": np.array(3)}, {"config": {}})
    model, optim, meta = load_checkpoint(path)
    assert model["w"].shape == (2, 3) and int(optim["t"]) == 3
    good = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or not an .npz"):
        load_checkpoint(tmp_path / "trunc.npz")
    np.savez(tmp_path / "foreign.npz", w=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a minivae checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz")
    # tamper: same layout, one weight changed, the stored checksum kept
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["model/w"] = arrays["model/w"] + 1
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(tmp_path / "tampered.npz")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")


def test_wrong_architecture_says_what_differs(tmp_path, mnist_ready):
    train(TrainConfig(epochs=1, latent=3, **TINY), tmp_path / "run", progress=False)
    meta_path = tmp_path / "run" / "best.npz"
    model_state, optim_state, meta = load_checkpoint(meta_path)
    meta["config"]["latent"] = 5  # a checkpoint whose weights do not fit its stated config
    save_checkpoint(
        tmp_path / "run" / "best.npz",
        model_state,
        optim_state,
        {k: meta[k] for k in ("config", "state", "history")},
    )
    with pytest.raises(
        CheckpointError, match=r"fc_mu.weight is \(3, 400\) in the checkpoint, \(5, 400\) in the model"
    ):
        load_run(tmp_path / "run")


def test_config_round_trip(tmp_path):
    cfg = TrainConfig(arch="conv", latent=7, beta=0.5)
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.from_dict(json.loads((tmp_path / "c.json").read_text())) == cfg
    assert TrainConfig(loss="seed", beta=0.0005, latent=15).effective_beta == pytest.approx(
        2 * 784 * 0.0005 / 15
    )


@pytest.mark.parametrize("flat", [False, True])
def test_train_step_one_transfer_and_nan_guard(flat, monkeypatch):
    """The checked step brings the loss parts and the gradient sum to the host in one transfer (one GPU
    sync per step), returns them as floats, and leaves the weights alone when a gradient is NaN."""
    import minivae.training.loop as T
    from minivae.models import mlp_vae
    from minivae.nn.optim import Adam

    rng = np.random.default_rng(0)
    model = mlp_vae(latent=3, hidden=16, rng=rng, dtype="float64")
    flat_pg = model.flatten_parameters() if flat else None
    opt = Adam(list(model.named_parameters()), lr=1e-3, flat=flat_pg)
    x = rng.random((8, 1, 28, 28))
    eps = rng.standard_normal((8, 3))
    import minivae.models as M

    calls = []
    real = T.to_numpy
    for module in (T, M):  # the step's own transfer, and the image check's in VAE.check_input
        monkeypatch.setattr(module, "to_numpy", lambda a: calls.append(np.shape(a)) or real(a))
    out, applied = T.train_step(model, opt, x, eps, 1.0, "elbo", check_values=False)  # as the loop calls it
    assert applied and calls == [(4,)]  # total, recon, kl, sum of grads: one array, one transfer
    calls.clear()
    T.train_step(model, opt, x, eps, 1.0, "elbo")  # by default the images are checked too: min and max
    assert calls == [(2,), (4,)]
    assert all(type(v) is float for v in (out.total, out.recon, out.kl))
    assert out.total == pytest.approx(out.recon + out.kl)

    before = weights(model)
    real_backward = model.backward

    def poisoned(*a):
        res = real_backward(*a)
        _, _, g = next(iter(model.named_parameters()))
        g.flat[5] = np.nan  # one entry of one gradient
        return res

    monkeypatch.setattr(model, "backward", poisoned)
    out, applied = T.train_step(model, opt, x, eps, 1.0, "elbo")
    assert not applied and np.isfinite(out.total)  # the loss is fine, a gradient is not
    for k, v in weights(model).items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("split", ["x_train", "x_test"])
def test_bad_images_are_refused_before_the_first_step(split, tmp_path, mnist_ready):
    """The loop checks each data set once (its steps skip the check): a NaN in the training images or
    in the test images (used only after training) stops the run before it trains, with the message
    that names the problem and the fix."""
    from dataclasses import replace

    from minivae.errors import UserError
    from minivae.training.loop import load_data

    cfg = TrainConfig(epochs=1, latent=3, **TINY)
    data = load_data(cfg, np)
    bad = getattr(data, split).copy()
    bad[3, 0, 5, 5] = np.nan
    with pytest.raises(UserError, match="got NaN values.*drop or fix"):
        train(cfg, tmp_path / "run", progress=False, data=replace(data, **{split: bad}))
    assert not (tmp_path / "run" / "last.npz").exists()
