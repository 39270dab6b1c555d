"""Training: the step, the epoch loop, validation, early stopping, checkpoints, resuming.

The whole of one training step, on either backend:

    logits, mu, logvar = model.forward(x, eps=eps)        # encoder -> z = mu + exp(logvar/2) eps -> decoder
    loss = vae_loss(logits, x, mu, logvar, beta, form)    # the value and dL/dlogits, dL/dmu, dL/dlogvar
    model.backward(loss.dlogits, loss.dmu, loss.dlogvar)  # fills every layer's grads
    optimizer.step()                                      # Adam, in place

Randomness is counter-based: the shuffling of epoch e comes from default_rng([seed, 0, e]) and the
noise of step t from default_rng([seed, 1, t]). The random state of a run is therefore just
(seed, epoch, step): a checkpoint that stores those counters resumes bit for bit, mid-epoch included.
With --binarize dynamic, step t's binary images come from default_rng([seed, 8, t]).
The β schedule (minivae.training.schedules) is likewise a pure function of the step, so it resumes exactly too.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from tqdm import tqdm

from minivae.backend import get_array_module, get_backend, to_numpy
from minivae.data import as_nchw, load_mnist, to_float, train_val_split
from minivae.errors import UserError
from minivae.models import VAE, build_model
from minivae.nn.losses import VAELoss, effective_beta, vae_loss
from minivae.nn.optim import SGD, Adam, Optimizer
from minivae.training import streams
from minivae.training.batches import forward_batches
from minivae.training.checkpoint import (
    CheckpointError,
    describe_mismatch,
    load_checkpoint,
    save_checkpoint,
)
from minivae.training.config import TrainConfig
from minivae.training.rundir import (
    check_free_space,
    prepare_run_dir,
    write_history,
)
from minivae.training.schedules import beta_at, capacity_at, final_beta_capacity


class NonFiniteError(UserError):
    """The loss or a gradient became NaN or Inf."""


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a resumable checkpoint."""

    def __init__(self, run_dir: Path, signame: str) -> None:
        super().__init__(
            f"{signame}: saved {run_dir / 'last.npz'}; resume with: minivae train --resume {run_dir}"
        )
        self.run_dir = run_dir


# ----------------------------------------------------------------------------------------- the step


def make_model(cfg: TrainConfig, xp: ModuleType) -> VAE:
    return build_model(
        cfg.arch, cfg.latent, hidden=cfg.hidden, init=cfg.init, bottleneck=cfg.bottleneck, seed=cfg.seed,
        dtype=cfg.dtype,
    ).to(xp)  # fmt: skip


def make_optimizer(cfg: TrainConfig, model: VAE) -> Optimizer:
    """The run's optimizer. On a GPU every array operation is a kernel launch, so the parameters are laid
    end to end and updated in one go (one kernel a step, and one sum for the NaN check). On the CPU the
    update stays per parameter, which is faster there: each parameter's arrays stay in cache through
    Adam's passes (measured on 2 cores: MLP batch 32 5.65 ms a step against 6.20 flattened, conv batch 32
    99.8 against 102.7). Both give the same weights, bit for bit."""
    flat = model.flatten_parameters() if model.xp is not np else None
    params = model.named_parameters()
    if cfg.optimizer == "sgd":
        return SGD(params, lr=cfg.lr, momentum=0.9, flat=flat)
    if cfg.optimizer == "adam-keras":
        return Adam(params, lr=cfg.lr, eps=1e-7, keras_epsilon=True, flat=flat)
    return Adam(params, lr=cfg.lr, flat=flat)


def step_noise(seed: int, step: int, shape: tuple[int, ...], dtype: Any, xp: ModuleType) -> Any:
    """eps ~ N(0, I) for training step `step`: drawn on the host from its own counter-based stream."""
    eps = streams.rng(seed, "step_noise", step).standard_normal(shape, dtype=np.dtype(dtype))
    return xp.asarray(eps)


def binarize(x: Any, stream: list[int]) -> Any:
    """Each pixel 1 with probability its grey level, else 0; the uniforms come from default_rng(stream)."""
    xp = get_array_module(x)
    u = np.random.default_rng(stream).random(x.shape, dtype=np.dtype(x.dtype))
    return (xp.asarray(u) < x).astype(x.dtype)


def eval_images(x: Any, cfg: TrainConfig, split: str) -> Any:
    """Validation or test images as the run sees them: binarised once (fixed stream) under --binarize dynamic."""
    return binarize(x, streams.FIXED_BINARIZE[split]) if cfg.binarize == "dynamic" else x


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of the n training images in epoch `epoch`."""
    return streams.rng(seed, "shuffle", epoch).permutation(n)


def grad_norm(model: VAE) -> float:
    """sqrt of the sum of every gradient entry squared, accumulated in float64 (no float32 overflow)."""
    return math.sqrt(sum(float((g.astype("float64") ** 2).sum()) for _, _, g in model.named_parameters()))


def grad_sum(model: VAE) -> Any:
    """The sum of every gradient entry, in float64, left on the device (a 0-d array). NaN/Inf propagates
    into a sum, so this one number says whether any gradient is non-finite: one sum over the flat
    gradient array when the model has one, else one per parameter added up on the device."""
    grads = [model.flat[1]] if model.flat is not None else [g for _, _, g in model.named_parameters()]
    total = grads[0].sum(dtype="float64")
    for g in grads[1:]:
        total = total + g.sum(dtype="float64")
    return total


def first_nonfinite(model: VAE, x: Any, eps: Any) -> str:
    """Where a NaN/Inf first shows up: a weight, or the output of a layer in forward order."""
    xp = get_array_module(x)
    for name, p, _ in model.named_parameters():
        if not bool(xp.isfinite(p).all()):
            return f"weight {name}"
    h = x
    for i, layer in enumerate(model.encoder.layers):
        h = layer.forward(h)
        if not bool(xp.isfinite(h).all()):
            return f"the output of encoder.{i} ({type(layer).__name__})"
    mu, logvar = model.fc_mu.forward(h), model.fc_logvar.forward(h)
    if not bool(xp.isfinite(mu).all()):
        return "the output of fc_mu"
    if not bool(xp.isfinite(logvar).all()):
        return "the output of fc_logvar"
    if not bool(xp.isfinite(xp.exp(0.5 * logvar)).all()):
        return "exp(0.5 * logvar) in the reparameterization (logvar too large)"
    z = model.reparam.forward(mu, logvar, eps)
    for i, layer in enumerate(model.decoder.layers):
        z = layer.forward(z)
        if not bool(xp.isfinite(z).all()):
            return f"the output of decoder.{i} ({type(layer).__name__})"
    for name, _, g in model.named_parameters():
        if not bool(xp.isfinite(g).all()):
            return f"the gradient of {name}"
    return "the loss (every layer output and weight is finite)"


def train_step(
    model: VAE, optimizer: Optimizer, x: Any, eps: Any, beta: float, form: str, grad_clip: float = 0.0,
    check_finite: bool = True, capacity: float | None = None, check_values: bool = True,
) -> tuple[VAELoss, bool]:  # fmt: skip
    """One step: forward, loss, backward, (clip), update. Returns (loss, applied).

    capacity: the target C of the capacity objective, recon + beta |KL - C| (None: the plain beta-VAE loss).
    check_values: check that x is finite and in [0, 1] (VAE.check_input); the training loop checks its
    data sets once and passes False, so that the step's only transfer is the one below.
    With check_finite, a NaN/Inf loss or gradient leaves the weights untouched and returns applied=False;
    the loss's total, recon and kl then come back as host floats, fetched together with the gradient
    sum in one transfer (on a GPU, one sync per step instead of one per number).
    """
    logits, mu, logvar = model.forward(x, eps=eps, check_values=check_values)  # (N,1,28,28), (N,latent) x 2
    out = vae_loss(logits, x, mu, logvar, beta, form, capacity)
    model.backward(out.dlogits, out.dmu, out.dlogvar)
    if check_finite:
        xp = get_array_module(logits)
        parts = (out.total, out.recon, out.kl, grad_sum(model))  # 0-d device arrays
        total, recon, kl, gsum = to_numpy(xp.stack([xp.asarray(v, dtype="float64") for v in parts])).tolist()
        out = replace(out, total=total, recon=recon, kl=kl)
        if not (math.isfinite(total) and math.isfinite(gsum)):
            return out, False
    if grad_clip:
        norm = grad_norm(model)
        if norm > grad_clip:
            for _, _, g in model.named_parameters():
                g *= grad_clip / norm
    optimizer.step()
    return out, True


# ------------------------------------------------------------------------------------ evaluation


def mean_loss(model: VAE, x: Any, cfg: TrainConfig, stream: str = "val_noise") -> dict[str, float]:
    """Loss (total, recon, kl, in the run's loss form) averaged over x, one z per image from a fixed stream.

    The total uses the end point of the run's β schedule (β = --beta, and C = --capacity-max for the
    capacity objective), so that it is comparable from epoch to epoch while the schedule still moves.
    """
    beta, cap = final_beta_capacity(cfg)
    sums = np.zeros(3)
    for _, xb, logits, mu, logvar in forward_batches(model, x, cfg.seed, stream):
        out = vae_loss(logits, xb, mu, logvar, beta, cfg.loss, cap)
        sums += len(xb) * np.array([float(out.total), float(out.recon), float(out.kl)])
    total, recon, kl = (float(v) for v in sums / max(len(x), 1))
    return {"loss": total, "recon": recon, "kl": kl}


# --------------------------------------------------------------------------------------- the run


@dataclass
class Dataset:
    """The splits as uint8 on the host (for metrics and figures) and as floats on the backend."""

    x_train: Any
    x_val: Any
    x_test: Any
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    test_images: np.ndarray = field(repr=False)


def load_data(cfg: TrainConfig, xp: ModuleType) -> Dataset:
    images, labels = load_mnist("train", dataset=cfg.dataset)
    test_images, test_labels = load_mnist("test", dataset=cfg.dataset)
    x_tr, y_tr, x_val, y_val = train_val_split(images, labels, cfg.val_fraction)
    if cfg.train_limit:
        x_tr, y_tr = x_tr[: cfg.train_limit], y_tr[: cfg.train_limit]
        n_val = max(1, int(round(cfg.train_limit * cfg.val_fraction))) if cfg.val_fraction else 0
        x_val, y_val = x_val[:n_val], y_val[:n_val]
    if cfg.test_limit:
        test_images, test_labels = test_images[: cfg.test_limit], test_labels[: cfg.test_limit]

    def dev(a: np.ndarray) -> Any:
        return as_nchw(to_float(a, xp, cfg.dtype))

    x_val_, x_test_ = eval_images(dev(x_val), cfg, "val"), eval_images(dev(test_images), cfg, "test")
    return Dataset(dev(x_tr), x_val_, x_test_, y_tr, y_val, test_labels, test_images)


class SignalFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks at each step boundary (a second Ctrl-C aborts)."""

    def __init__(self) -> None:
        self.signame: str | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signame is not None:
            raise KeyboardInterrupt
        self.signame = signal.Signals(signum).name
        print(f"\n{self.signame} received: saving a checkpoint at the end of this step...", file=sys.stderr)

    @contextlib.contextmanager
    def installed(self):
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in old:
                signal.signal(s, self._handler)
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def train(
    cfg: TrainConfig | None, out: str | Path, resume: bool = False, progress: bool = True,
    data: Dataset | None = None, stop_after_steps: int | None = None, epochs: int | None = None,
) -> tuple[VAE, Dataset, list[dict[str, Any]]]:  # fmt: skip
    """Train a run in directory `out`, or continue it (resume=True: its config comes from its last.npz,
    and `epochs` may raise the total). Returns (model with the best-validation weights, data, history).

    Writes config.json, history.csv, last.npz (every epoch and on interruption) and best.npz (the best
    validation loss so far). stop_after_steps simulates an interruption (tests, lessons).
    """
    out = Path(out)
    if resume:
        prepare_run_dir(out, resume=True)
        _, _, meta = load_checkpoint(out / "last.npz")
        cfg = TrainConfig.from_dict(meta["config"])
    if cfg is None:
        raise ValueError("train() needs a config unless it resumes a run")
    if epochs is not None:
        cfg.epochs = epochs
    cfg.validate()
    xp = get_backend(cfg.backend)
    model = make_model(cfg, xp)
    optimizer = make_optimizer(cfg, model)
    if not resume:
        prepare_run_dir(out, resume=False)
        check_free_space(out, model)
    cfg.save(out / "config.json")
    data = data or load_data(cfg, xp)
    n = len(data.x_train)
    if n == 0:
        raise UserError("no training images: raise --train-limit or lower --val-fraction")
    for split in (data.x_train, data.x_val, data.x_test):  # once here, instead of in every step
        if len(split):
            model.check_input(split)
    batches_per_epoch = math.ceil(n / cfg.batch_size)

    state = {"epoch": 0, "batch": 0, "step": 0, "best_val": math.inf, "bad_epochs": 0, "sums": [0.0] * 4,
             "alive": None, "skipped": 0, "seconds": 0.0}  # fmt: skip
    history: list[dict[str, Any]] = []
    if resume:
        model_state, optim_state, meta = load_checkpoint(out / "last.npz")
        restore(model, optimizer, model_state, optim_state, out / "last.npz")
        state, history = meta["state"], meta["history"]
    verb = "resuming" if resume else "starting"
    print(
        f"{verb} {out} at epoch {state['epoch'] + 1}, step {state['step'] + 1}", file=sys.stderr, flush=True
    )

    def save(name: str) -> None:
        meta = {"config": cfg.to_dict(), "state": state, "history": history}
        save_checkpoint(out / name, model.state_dict(), optimizer.state_dict(), meta)

    flag = SignalFlag()
    # seconds to sleep after each step: slows a run down for fault-injection tests and demos only
    step_delay = float(os.environ.get("MINIVAE_STEP_DELAY", "0") or 0)
    # overflow is caught and explained by the finiteness check below, so NumPy's own warnings are noise
    with flag.installed(), np.errstate(over="ignore", invalid="ignore"):
        while state["epoch"] < cfg.epochs:
            epoch = state["epoch"]
            order = epoch_order(cfg.seed, epoch, n)
            alive = xp.asarray(np.array(state["alive"] or False, dtype=bool))  # bottleneck units seen > 0
            t0 = time.perf_counter()
            bar = tqdm(
                total=batches_per_epoch, initial=state["batch"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=not progress, leave=False, unit="step", file=sys.stderr,
            )  # fmt: skip
            while state["batch"] < batches_per_epoch:
                b = state["batch"]
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                xb = data.x_train[xp.asarray(idx)] if xp is not np else data.x_train[idx]
                if cfg.binarize == "dynamic":  # a fresh binary draw of the batch, from the step's own stream
                    xb = binarize(xb, [cfg.seed, streams.STREAMS["binarize"], state["step"]])
                eps = step_noise(cfg.seed, state["step"], (len(idx), cfg.latent), cfg.dtype, xp)
                beta_t = beta_at(state["step"], batches_per_epoch, cfg)
                cap_t = capacity_at(state["step"], batches_per_epoch, cfg)
                try:
                    out_loss, applied = train_step(
                        model, optimizer, xb, eps, beta_t, cfg.loss, cfg.grad_clip, capacity=cap_t,
                        check_values=False,  # the data sets were checked above
                    )  # fmt: skip
                except Exception as e:
                    if type(e).__name__ == "OutOfMemoryError":  # cupy.cuda.memory.OutOfMemoryError
                        raise UserError(
                            f"the GPU ran out of memory in a step of batch size {cfg.batch_size} ({e}). Try "
                            f"--batch-size {max(1, cfg.batch_size // 2)}, or close other programs using the GPU; "
                            f"{out / 'last.npz'} holds the last finished epoch (resume with --resume {out})."
                        ) from e
                    raise
                if not applied:
                    where = first_nonfinite(model, xb, eps)
                    if cfg.on_nonfinite == "stop":
                        saved = (
                            f"{out / 'last.npz'} (end of the last good epoch) is intact"
                            if (out / "last.npz").exists()
                            else "no checkpoint had been written yet (this was the first epoch)"
                        )
                        raise NonFiniteError(
                            f"step {state['step'] + 1} (epoch {epoch + 1}, batch {b + 1}): the loss or a gradient is "
                            f"NaN/Inf; it first appears in {where}. The weights were not updated and {saved}. "
                            f"Likely causes: a learning rate too high (--lr {cfg.lr:g}), a large beta "
                            f"(--beta {cfg.beta:g}), or inputs outside [0, 1]; try a lower --lr, --grad-clip 10, "
                            "or --on-nonfinite skip."
                        )
                    state["skipped"] += 1
                else:
                    k = len(idx)
                    vals = (float(out_loss.total), float(out_loss.recon), float(out_loss.kl))
                    sums = state["sums"]
                    state["sums"] = [
                        sums[0] + k * vals[0],
                        sums[1] + k * vals[1],
                        sums[2] + k * vals[2],
                        sums[3] + k,
                    ]
                    alive = alive | (model.encoder_output > 0).any(axis=0)  # stays on the device
                    if b % 10 == 0:
                        bar.set_postfix(loss=f"{vals[0]:.4g}")
                state["batch"] += 1
                state["step"] += 1
                bar.update()
                if step_delay:
                    time.sleep(step_delay)
                if flag.signame or (stop_after_steps is not None and state["step"] >= stop_after_steps):
                    state["seconds"] += time.perf_counter() - t0
                    state["alive"] = to_numpy(alive).tolist()
                    save("last.npz")
                    bar.close()
                    raise Interrupted(out, flag.signame or "stop_after_steps")
            bar.close()
            # ---- end of epoch: validation, history, checkpoints, early stopping
            s = state["sums"]
            beta_t = beta_at(state["step"] - 1, batches_per_epoch, cfg)  # at the epoch's last step
            cap_t = capacity_at(state["step"] - 1, batches_per_epoch, cfg)
            row = {
                "epoch": epoch + 1, "step": state["step"],
                "train_loss": s[0] / max(s[3], 1), "train_recon": s[1] / max(s[3], 1), "train_kl": s[2] / max(s[3], 1),
                "val_loss": "", "val_recon": "", "val_kl": "",
                "beta": beta_t, "capacity": "" if cap_t is None else cap_t,
                "effective_beta": effective_beta(cfg.loss, beta_t, cfg.latent),
                "alive_units": int(to_numpy(alive).sum()),
                "seconds": round(state["seconds"] + time.perf_counter() - t0, 3),
            }  # fmt: skip
            if len(data.x_val):
                v = mean_loss(model, data.x_val, cfg)
                row.update(val_loss=v["loss"], val_recon=v["recon"], val_kl=v["kl"])
            history.append(row)
            msg = f"epoch {epoch + 1}/{cfg.epochs}: train {row['train_loss']:.4f}"
            if row["val_loss"] != "":
                msg += f", val {row['val_loss']:.4f} (recon {row['val_recon']:.4f}, kl {row['val_kl']:.4f})"
            print(msg + f", {row['seconds']:.1f}s", file=sys.stderr if not progress else sys.stdout)
            state.update(epoch=epoch + 1, batch=0, sums=[0.0] * 4, alive=None, seconds=0.0)
            improved = row["val_loss"] != "" and row["val_loss"] < state["best_val"]
            if improved:
                state["best_val"], state["bad_epochs"] = row["val_loss"], 0
            elif row["val_loss"] != "":
                state["bad_epochs"] += 1
            if improved or not len(data.x_val):
                save("best.npz")
            save("last.npz")
            write_history(out / "history.csv", history)
            if cfg.patience and state["bad_epochs"] >= cfg.patience:
                print(f"early stopping: no better validation loss for {cfg.patience} epochs", file=sys.stderr)
                break
    # evaluate the best-validation weights (the last ones when there is no validation set)
    if (out / "best.npz").exists():
        model_state, _, _ = load_checkpoint(out / "best.npz")
        model.load_state_dict(model_state)
    else:  # no finite validation loss in any epoch: keep the last weights, and say so
        print(
            "no epoch reached a finite validation loss: best.npz is the last epoch's weights", file=sys.stderr
        )
        save("best.npz")
    return model, data, history


def restore(model: VAE, optimizer: Optimizer | None, model_state, optim_state, path: Path) -> None:
    """Load checkpoint arrays into a model (and optimizer), with a clear message when they do not fit."""
    expected = {k: tuple(p.shape) for k, p, _ in model.named_parameters()}
    problem = describe_mismatch(model_state, expected)
    if problem:
        raise CheckpointError(f"{path} does not fit this model: {problem}")
    model.load_state_dict(model_state)
    if optimizer is not None:
        optimizer.load_state_dict(optim_state)


def load_run(run_dir: str | Path, which: str = "best", backend: str | None = None) -> tuple[VAE, TrainConfig]:
    """The model of a finished (or interrupted) run, from its best.npz or last.npz."""
    run_dir = Path(run_dir)
    path = run_dir / f"{which}.npz"
    if not path.is_file():
        raise UserError(f"{run_dir} has no {which}.npz: is it a minivae run directory?")
    model_state, _, meta = load_checkpoint(path)
    cfg = TrainConfig.from_dict(meta["config"])
    if backend:
        cfg.backend = backend
    xp = get_backend(cfg.backend)
    model = make_model(cfg, xp)
    restore(model, None, model_state, {}, path)
    return model, cfg
