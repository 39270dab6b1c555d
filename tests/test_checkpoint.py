"""A checkpoint is validated like flags: damaged, tampered or ill-typed checkpoints of a tiny run are
refused with one UserError line naming the file and the entry, and nothing in the run directory changes."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from minivae.cli import main
from minivae.errors import UserError
from minivae.training import checkpoint
from minivae.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minivae.training.config import TrainConfig
from minivae.training.loop import RunState, load_run, make_model, make_optimizer, restore

TINY = dict(latent=2, hidden=8, epochs=1, tsne_points=0, train_limit=16, test_limit=16, val_fraction=0.0)


def tiny_state(cfg: TrainConfig | None = None):
    """A tiny model and its Adam after one step: (cfg, model, optimizer, model_state, optim_state, meta)."""
    cfg = cfg or TrainConfig(**TINY)
    model = make_model(cfg, np)
    optimizer = make_optimizer(cfg, model)
    for _, _, g in model.named_parameters():
        g[...] = 0.01
    optimizer.step()
    state = RunState(epoch=1, step=1)
    meta = {"config": cfg.to_dict(), "state": asdict(state), "history": [{"epoch": 1, "val_loss": ""}]}
    return cfg, model, optimizer, model.state_dict(), optimizer.state_dict(), meta


def make_run(tmp_path: Path, **changes) -> Path:
    """A run directory (config.json, best.npz, last.npz) saved by save_checkpoint; `changes` replace
    model_state / optim_state / meta before saving."""
    cfg, _, _, model_state, optim_state, meta = tiny_state()
    parts = {"model_state": model_state, "optim_state": optim_state, "meta": meta, **changes}
    run = tmp_path / "run"
    run.mkdir()
    cfg.save(run / "config.json")
    for name in ("best.npz", "last.npz"):
        save_checkpoint(run / name, parts["model_state"], parts["optim_state"], parts["meta"])
    return run


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def refused(run: Path, capsys, match: str) -> None:
    """load_run raises one UserError line matching `match`; `minivae evaluate` exits 2 with one
    `minivae: error:` line; no file of the run directory is changed, none is added."""
    before = snapshot(run)
    with pytest.raises(UserError, match=match) as e:
        load_run(run)
    assert "\n" not in str(e.value)
    assert str(run / "best.npz") in str(e.value)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minivae: error:"), err
    assert snapshot(run) == before


def rewrite(path: Path, edit) -> None:
    """Rewrite the .npz at `path` with edit(arrays) applied, keeping the stored checksum."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez(path, **arrays)


def test_a_good_tiny_run_loads(tmp_path):
    run = make_run(tmp_path)
    model, cfg = load_run(run)
    assert cfg == TrainConfig(**TINY)
    _, _, meta = load_checkpoint(run / "best.npz")
    assert meta["version"] == checkpoint.VERSION == 2


def test_tampered_metadata_fails_the_checksum(tmp_path, capsys):
    run = make_run(tmp_path)

    def edit(arrays):
        meta = json.loads(arrays["__meta__"].tobytes())
        meta["config"]["lr"] = 0.5  # still a valid config: only the checksum can tell
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    rewrite(run / "best.npz", edit)
    refused(run, capsys, "fails its checksum: its arrays or metadata were changed")


def test_version_1_checkpoints_are_still_read(tmp_path):
    """Version 1: the checksum over the arrays only; the metadata is then held by the structural checks."""
    _, _, _, model_state, optim_state, meta = tiny_state()
    arrays = {f"model/{k}": v for k, v in model_state.items()} | {
        f"optim/{k}": v for k, v in optim_state.items()
    }
    full = {"format": checkpoint.FORMAT, "version": 1, "sha256": checkpoint._digest(arrays), **meta}
    arrays["__meta__"] = np.frombuffer(json.dumps(full).encode(), dtype=np.uint8)
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "best.npz", **arrays)
    model, cfg = load_run(run)
    assert cfg == TrainConfig(**TINY)


def test_truncated_file(tmp_path, capsys):
    run = make_run(tmp_path)
    good = (run / "best.npz").read_bytes()
    (run / "best.npz").write_bytes(good[: len(good) * 2 // 3])
    refused(run, capsys, "truncated or not an .npz")


def test_int64_weights_are_refused_not_cast(tmp_path, capsys):
    _, _, _, model_state, _, _ = tiny_state()
    bad = {k: (v * 100).astype(np.int64) for k, v in model_state.items()}
    run = make_run(tmp_path, model_state=bad)
    refused(run, capsys, r"has dtype int64, expected float32 \(the run's dtype\)")


def test_float64_weights_in_a_float32_run_are_refused(tmp_path, capsys):
    _, _, _, model_state, _, _ = tiny_state()
    run = make_run(tmp_path, model_state={k: v.astype(np.float64) for k, v in model_state.items()})
    refused(run, capsys, "has dtype float64, expected float32")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_weights(value, tmp_path, capsys):
    _, _, _, model_state, _, _ = tiny_state()
    name = sorted(model_state)[0]
    model_state[name].flat[0] = value
    run = make_run(tmp_path, model_state=model_state)
    refused(run, capsys, rf"{name} has 1 non-finite \(NaN/Inf\) value")


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("latent", "4", r"--latent must be a whole number, got '4' \(a str\)"),
        ("batch_size", 12.5, r"--batch-size must be a whole number, got 12.5 \(a float\)"),
        ("lr", "fast", r"--lr must be a number, got 'fast'"),
        ("beta", True, r"--beta must be a number, got True \(a bool\)"),
        ("init", 3, r"--init must be a string or null, got 3"),
        ("latent", 0, r"--latent must be a whole number >= 1, got 0"),
        ("arch", "rnn", r"--arch 'rnn' is not known"),
        ("unknown_knob", 1, r"unknown config keys \['unknown_knob'\]"),
        ("seed", None, r"the config lacks seed"),  # None: delete the key
    ],
)
def test_wrong_config_fields(key, value, match, tmp_path, capsys):
    _, _, _, _, _, meta = tiny_state()
    if value is None:
        del meta["config"][key]
    else:
        meta["config"][key] = value
    run = make_run(tmp_path, meta=meta)
    refused(run, capsys, r"best.npz: its config is invalid: " + match)


@pytest.mark.parametrize("key", ["config", "state", "history"])
def test_missing_metadata_keys(key, tmp_path, capsys):
    _, _, _, _, _, meta = tiny_state()
    del meta[key]
    run = make_run(tmp_path, meta=meta)
    refused(run, capsys, rf"its metadata lacks {key}")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.pop("step"), "its run state lacks step"),
        (lambda s: s.update(epoch="1"), r"its run state's epoch is '1', expected a whole number"),
        (lambda s: s.update(sums=[0.0]), r"its run state's sums is \[0.0\], expected a list of 4 numbers"),
        (lambda s: s.update(extra=1), "its run state has unknown entries extra"),
    ],
)
def test_bad_run_state(edit, match, tmp_path, capsys):
    _, _, _, _, _, meta = tiny_state()
    edit(meta["state"])
    run = make_run(tmp_path, meta=meta)
    refused(run, capsys, match)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda o, k: o.pop("t"), "has no step counter optim/t"),
        (lambda o, k: o.update(t=np.array(1.5)), "optim/t is float64 of shape ..?, expected a whole number"),
        (lambda o, k: o.pop(f"{k}.exp_avg_sq"), r"lacks .*\.exp_avg_sq \(at step t = 1\)"),
        (lambda o, k: o.update({f"{k}.exp_avg": o[f"{k}.exp_avg"][:1]}), r"exp_avg has shape \(1"),
        (lambda o, k: o.update({f"{k}.exp_avg": o[f"{k}.exp_avg"].astype(np.int64)}), "dtype int64"),
        (lambda o, k: o.update({f"{k}.momentum_buffer": o[f"{k}.exp_avg"]}), "entries this optimizer lacks"),
    ],
)
def test_bad_optimizer_state(edit, match, tmp_path):
    """Resuming checks Adam's exp_avg / exp_avg_sq per parameter and t before anything is loaded."""
    _, model, optimizer, model_state, optim_state, meta = tiny_state()
    path = save_checkpoint(tmp_path / "last.npz", model_state, optim_state, meta)
    model_state, optim_state, _ = load_checkpoint(path)
    edit(optim_state, sorted(model_state)[0])
    fresh = make_model(TrainConfig(**TINY), np)
    fresh_optim = make_optimizer(TrainConfig(**TINY), fresh)
    before = {k: v.copy() for k, v in fresh.state_dict().items()}
    before_bytes = path.read_bytes()
    with pytest.raises(CheckpointError, match=match) as e:
        restore(fresh, fresh_optim, model_state, optim_state, path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert all(np.array_equal(before[k], v) for k, v in fresh.state_dict().items())  # nothing loaded
    assert fresh_optim.t == 0
    assert path.read_bytes() == before_bytes


def test_good_optimizer_state_restores(tmp_path):
    _, model, optimizer, model_state, optim_state, meta = tiny_state()
    path = save_checkpoint(tmp_path / "last.npz", model_state, optim_state, meta)
    m, o, _ = load_checkpoint(path)
    fresh = make_model(TrainConfig(**TINY), np)
    fresh_optim = make_optimizer(TrainConfig(**TINY), fresh)
    restore(fresh, fresh_optim, m, o, path)
    assert fresh_optim.t == 1
    for k, v in fresh_optim.state_dict().items():
        np.testing.assert_array_equal(v, optim_state[k])


def huge_member(shape=(10**11,), dtype="<f4", data=b"\0" * 64) -> bytes:
    """A .npy whose header declares `shape` (400 GB for the default) but which holds only `data`."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_huge_npy_header_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path)
    path = run / "best.npz"
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    name = next(k for k in members if k.startswith("model/"))
    members[name] = huge_member()
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    reads = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: reads.append(a) or 1 / 0)
    refused(run, capsys, r"header declares shape \(100000000000,\) of float32 \(400,000,000,000 bytes\)")
    assert reads == []  # refused before np.load read any array


def test_compressed_members_are_refused(tmp_path, capsys):
    run = make_run(tmp_path)
    path = run / "best.npz"
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    refused(run, capsys, "is compressed or larger than the file")


def test_evaluate_refuses_nan_results_before_writing(tmp_path, monkeypatch):
    """write_report checks the metrics for NaN before it writes any file."""
    from minivae.analysis import report

    run = make_run(tmp_path)
    model, cfg = load_run(run)
    before = snapshot(run)

    class Ev:
        metrics = {"neg_elbo": float("nan"), "psnr": [1.0, float("nan")]}
        per_digit = [{"digit": 0, "mse": float("nan")}]

    monkeypatch.setattr(report, "evaluate", lambda *a, **k: Ev())
    x = np.zeros((4, 1, 28, 28), np.float32)
    with pytest.raises(UserError, match=r"gave NaN for neg_elbo, psnr\[1\], per_digit\[0\].mse: nothing was"):
        report.write_report(model, cfg, x, np.zeros(4, int), run)
    assert snapshot(run) == before
