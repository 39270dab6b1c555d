"""Training: the step, the epoch loop, validation, early stopping, checkpoints, resuming.

The whole of one training step, on either backend:

    logits, mu, logvar = model.forward(x, eps=eps)        # encoder -> z = mu + exp(logvar/2) eps -> decoder
    loss = vae_loss(logits, x, mu, logvar, beta, form)    # the value and dL/dlogits, dL/dmu, dL/dlogvar
    model.backward(loss.dlogits, loss.dmu, loss.dlogvar)  # fills every layer's grads
    optimizer.step()                                      # Adam, in place

train() is the loop around it: run_epoch (the batch loop, one train_batch a step), then for each
epoch validation, epoch_row (the history row), track_best, save_checkpoints and early_stop.

Randomness is counter-based: every draw (the shuffling, each step's noise, the binary images under
--binarize dynamic) comes from its own stream, listed in minivae/training/streams.py, at the run's
counters. The random state of a run is therefore just its seed and RunState's (epoch, step): a
checkpoint that stores them resumes bit for bit, mid-epoch included. The β schedule
(minivae.training.schedules) is likewise a pure function of the step, so it resumes exactly too.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from tqdm import tqdm

from minivae import threads
from minivae.backend import get_array_module, get_backend, to_numpy
from minivae.data import as_nchw, load_mnist, to_float, train_val_split
from minivae.errors import UserError
from minivae.models import VAE, build_model
from minivae.nn.iwae import IWAELoss, iwae_loss
from minivae.nn.losses import VAELoss, effective_beta, vae_loss
from minivae.nn.optim import SGD, Adam, Optimizer
from minivae.training import streams
from minivae.training.batches import forward_batches
from minivae.training.checkpoint import (
    check_model_state,
    check_optim_state,
    check_run_meta,
    load_checkpoint,
    save_checkpoint,
)
from minivae.training.config import TrainConfig, flag, flag_value
from minivae.training.memory import check_memory
from minivae.training.rundir import (
    HELD,
    RunDir,
    check_free_space,
    lock_run_dir,
    save_json,
    write_history,
)
from minivae.training.schedules import beta_at, capacity_at, final_beta_capacity, lr_at


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
        cfg.arch,
        cfg.latent,
        hidden=cfg.hidden,
        init=cfg.init,
        bottleneck=cfg.bottleneck,
        seed=cfg.seed,
        dtype=cfg.dtype,
        activation=cfg.activation,
    ).to(xp)


def make_optimizer(cfg: TrainConfig, model: VAE) -> Optimizer:
    """The run's optimizer. On a GPU every array operation is a kernel launch, so the parameters are laid
    end to end and updated in one go (one kernel a step, and one sum for the NaN check). On the CPU the
    update stays per parameter, which is faster there: each parameter's arrays stay in cache through
    Adam's lines. Both give the same weights, bit for bit."""
    flat = model.flatten_parameters() if model.xp is not np else None
    params = model.named_parameters()
    if cfg.optimizer == "sgd":
        return SGD(params, lr=cfg.lr, momentum=0.9, flat=flat)
    if cfg.optimizer == "adam-keras":
        return Adam(params, lr=cfg.lr, eps=cfg.adam_eps or 1e-7, keras_epsilon=True, flat=flat)
    return Adam(params, lr=cfg.lr, eps=cfg.adam_eps or 1e-8, flat=flat)


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
    z = model.reparam.forward(mu, logvar, eps).reshape(-1, model.latent)  # (k N, latent) under iwae
    for i, layer in enumerate(model.decoder.layers):
        z = layer.forward(z)
        if not bool(xp.isfinite(z).all()):
            return f"the output of decoder.{i} ({type(layer).__name__})"
    for name, _, g in model.named_parameters():
        if not bool(xp.isfinite(g).all()):
            return f"the gradient of {name}"
    return "the loss (every layer output and weight is finite)"


def train_step(
    model: VAE,
    optimizer: Optimizer,
    x: Any,
    eps: Any,
    beta: float,
    form: str,
    grad_clip: float = 0.0,
    check_finite: bool = True,
    capacity: float | None = None,
    check_values: bool = True,
    objective: str = "elbo",
) -> tuple[VAELoss | IWAELoss, bool]:
    """One step: forward, loss, backward, (clip), update. Returns (loss, applied).

    capacity: the target C of the capacity objective, recon + beta |KL - C| (None: the plain beta-VAE loss).
    objective: "elbo" (vae_loss, eps (N, latent)) or "iwae" (minivae.nn.iwae, eps (k, N, latent)).
    check_values: check that x is finite and in [0, 1] (VAE.check_input); the training loop checks its
    data sets once and passes False, so that the step's only transfer is the one below.
    With check_finite, a NaN/Inf loss or gradient leaves the weights untouched and returns applied=False;
    the loss's total, recon and kl then come back as host floats, fetched together with the gradient
    sum in one transfer (on a GPU, one sync per step instead of one per number).
    """
    logits, mu, logvar = model.forward(x, eps=eps, check_values=check_values)  # (k N,1,28,28), (N,latent) x 2
    if objective == "iwae":
        out: VAELoss | IWAELoss = iwae_loss(logits, x, mu, logvar, eps)
        model.backward(out.dlogits, out.dmu, out.dlogvar, out.dz)
    else:
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


def split_sizes(cfg: TrainConfig, n_train_images: int, n_test_images: int) -> tuple[int, int, int]:
    """(n_train, n_val, n_test): how many images of each split a run with cfg uses, from the data set's
    n_train_images training and n_test_images test images (MNIST and Fashion-MNIST: 60,000 and 10,000).

    Validation is the last val_fraction of the training set (train_val_split). --train-limit N keeps the
    first N training images and the first round(N * val_fraction) validation images (at least one when
    validating); --test-limit N the first N test images.
    """
    idx = range(n_train_images)  # split the indices, not the images: the same sizes, nothing loaded
    train_idx, _, val_idx, _ = train_val_split(idx, idx, cfg.val_fraction)
    n_train, n_val = len(train_idx), len(val_idx)
    if cfg.train_limit:
        n_train = min(n_train, cfg.train_limit)
        n_val = min(n_val, max(1, round(cfg.train_limit * cfg.val_fraction)) if cfg.val_fraction else 0)
    n_test = min(n_test_images, cfg.test_limit) if cfg.test_limit else n_test_images
    return n_train, n_val, n_test


def load_data(cfg: TrainConfig, xp: ModuleType) -> Dataset:
    images, labels = load_mnist("train", dataset=cfg.dataset)
    test_images, test_labels = load_mnist("test", dataset=cfg.dataset)
    n_train, n_val, n_test = split_sizes(cfg, len(images), len(test_images))
    x_tr, y_tr, x_val, y_val = train_val_split(images, labels, cfg.val_fraction)
    x_tr, y_tr, x_val, y_val = x_tr[:n_train], y_tr[:n_train], x_val[:n_val], y_val[:n_val]
    test_images, test_labels = test_images[:n_test], test_labels[:n_test]

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
        if threading.current_thread() is not threading.main_thread():
            yield self  # only the main thread may set handlers (a Dask worker runs a task in another)
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in old:
                signal.signal(s, self._handler)
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@dataclass
class RunState:
    """How far a run is: its counters and running totals, saved in every checkpoint as a plain dict.

    The next step is batch `batch` of epoch `epoch` and step `step` of the run (all 0-based). These
    counters fix every random stream (minivae/training/streams.py), so they are the run's whole random state.
    """

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches finished in the current epoch
    step: int = 0  # steps finished in the run
    best_val: float = math.inf  # the best validation loss so far
    bad_epochs: int = 0  # epochs since the validation loss last improved (early stopping)
    sums: list[float] = field(default_factory=lambda: [0.0] * 4)  # this epoch: Σ k·total, k·recon, k·kl, k
    alive: list[bool] | bool | None = None  # this epoch's bottleneck units seen > 0 (stored mid-epoch)
    skipped: int = 0  # non-finite steps skipped (--on-nonfinite skip)
    seconds: float = 0.0  # training time of this epoch so far

    def add_step(self, loss: VAELoss, k: int) -> None:
        """Add a step's loss over its k images to the epoch's sums (the training loss is their mean)."""
        total, recon, kl, s = float(loss.total), float(loss.recon), float(loss.kl), self.sums
        self.sums = [s[0] + k * total, s[1] + k * recon, s[2] + k * kl, s[3] + k]

    def next_epoch(self) -> None:
        """Count the epoch as finished and clear its running totals."""
        self.epoch, self.batch, self.sums, self.alive, self.seconds = self.epoch + 1, 0, [0.0] * 4, None, 0.0


OnStep = Callable[[RunState], bool | None]  # train(on_step=...): called after every step; True stops the run


@dataclass
class Run:
    """A run as the loop's steps see it: what it trains, on which data, where it writes, how far it is."""

    cfg: TrainConfig
    out: Path
    model: VAE
    optimizer: Optimizer
    data: Dataset
    state: RunState
    history: list[dict[str, Any]]  # one row per finished epoch, as in history.csv

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.data.x_train) / self.cfg.batch_size)

    def save(self, name: str) -> None:
        """Write checkpoint `name`: weights, optimizer state, and config, state and history as its meta."""
        meta = {"config": self.cfg.to_dict(), "state": asdict(self.state), "history": self.history}
        save_checkpoint(self.out / name, self.model.state_dict(), self.optimizer.state_dict(), meta)


def train(
    cfg: TrainConfig | None,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    data: Dataset | None = None,
    epochs: int | None = None,
    on_step: OnStep | None = None,
    changes: dict[str, Any] | None = None,
    keep_lock: bool = False,
) -> tuple[VAE, Dataset, list[dict[str, Any]]]:
    """Train a run in directory `out`, or continue it (resume: with the config in its last.npz, `epochs`
    a new total, `changes` only RESUME_CHANGES). Returns (model with the best-validation weights, data,
    history). Writes config.json, history.csv, last.npz (every epoch and on interruption), best.npz.

    data: the splits, if the caller has them. on_step(state), after every step: True stops the run as
    Ctrl-C does (last.npz saved, Interrupted raised). The run holds the directory's lock
    (rundir.lock_run_dir) and writes nothing before every check has passed (open_run); keep_lock leaves
    it held for the caller's report (then rundir.release_held(out)).
    """
    out = Path(out)
    checkpoint = None
    if not resume:  # the config, its memory and the backend are checked before the directory is made
        cfg, _ = run_config(cfg, out, False, epochs)
        check_memory(cfg)
        get_backend(cfg.backend)
    run_dir = lock_run_dir(out, resume)
    run, ok = None, False
    try:
        if resume:
            cfg, checkpoint = run_config(cfg, out, True, epochs, changes)
            check_memory(cfg)
        run = open_run(cfg, out, checkpoint, data, run_dir)
        flag = SignalFlag()
        # overflow is caught and explained by the non-finite guard (train_batch), so NumPy's warnings are noise
        with flag.installed(), np.errstate(over="ignore", invalid="ignore"), use_threads(cfg):
            while run.state.epoch < cfg.epochs:
                run_epoch(run, flag, on_step, progress)
                row = epoch_row(run, validation(run))
                run.history.append(row)
                print_epoch(row, cfg.epochs, progress)
                run.state.next_epoch()
                improved = track_best(run.state, row["val_loss"])
                save_checkpoints(run, improved)
                if early_stop(run):
                    break
        load_best(run)
        ok = True
    except BaseException as e:
        undo_failed_start(e, run_dir, resume, started=run is not None)
        raise
    finally:
        if ok and keep_lock:
            HELD[out] = run_dir
        else:
            run_dir.release()
    return run.model, run.data, run.history


def open_run(
    cfg: TrainConfig,
    out: Path,
    checkpoint: tuple[dict, dict, dict] | None,
    data: Dataset | None,
    run_dir: RunDir,
) -> Run:
    """The run, built and checked: model and optimizer (restored from the checkpoint on resume), free
    space, the data. Only when every check has passed does it write to the directory: stale temporary
    files go, config.json is saved, and the run is announced."""
    xp = get_backend(cfg.backend)
    model = make_model(cfg, xp)
    optimizer = make_optimizer(cfg, model)
    run = Run(cfg, out, model, optimizer, None, RunState(), [])  # type: ignore[arg-type]
    if checkpoint is not None:  # resuming: the weights, the optimizer's state, the counters, the history
        model_state, optim_state, meta = checkpoint
        restore(model, optimizer, model_state, optim_state, out / "last.npz")
        run.state, run.history = RunState(**meta["state"]), meta["history"]
    check_free_space(out, model)
    run.data = data or load_data(cfg, xp)
    check_data(model, run.data)
    # every check has passed: from here on the run writes its directory
    run_dir.remove_stale_tmp()
    save_json(out / "config.json", cfg.to_dict())
    if checkpoint is not None:
        print_changes(cfg, TrainConfig.from_dict(checkpoint[2]["config"]))
    verb = "resuming" if checkpoint is not None else "starting"
    print(
        f"{verb} run {out} ({cfg.arch} VAE, latent {cfg.latent}, effective beta {cfg.effective_beta:.4g} "
        f"in ELBO units, on {cfg.backend}) at epoch {run.state.epoch + 1}, step {run.state.step + 1}",
        file=sys.stderr,
        flush=True,
    )
    return run


@contextlib.contextmanager
def use_threads(cfg: TrainConfig) -> Any:
    """Run the block on the BLAS thread count minivae.threads picks (cfg.threads forces it); say which."""
    with threads.limit(cfg.threads) as n:
        why = "--threads" if cfg.threads is not None else "OPENBLAS_NUM_THREADS or the free cores"
        print(f"BLAS threads: {n} ({why})", file=sys.stderr, flush=True)
        yield n


def undo_failed_start(e: BaseException, run_dir: RunDir, resume: bool, started: bool) -> None:
    """A new run that fails before its first checkpoint removes what it made, and its error says so; a
    resume refused before it wrote anything leaves no lock file behind."""
    if not resume and not (run_dir.out / "last.npz").exists():
        note = run_dir.discard(NEW_RUN_FILES, keep_dir=isinstance(e, KeyboardInterrupt))
        if isinstance(e, UserError) and len(e.args) == 1:
            e.args = (f"{e.args[0]} ({note})",)
        else:
            print(f"minivae: {note}", file=sys.stderr)
    elif resume and not started and run_dir.created_lock:
        run_dir.discard([])


NEW_RUN_FILES = ["config.json", "history.csv", "best.npz", "last.npz"]  # what a new run writes first


RESUME_CHANGES = ("epochs", "patience", "backend", "tsne_points", "threads")  # what --resume may change


def print_changes(cfg: TrainConfig, stored: TrainConfig) -> None:
    """One line naming each setting a resume changed, with the run's former value."""
    changed = [
        f"--{flag(k)} {getattr(cfg, k)} (was {getattr(stored, k)})"
        for k in RESUME_CHANGES
        if getattr(cfg, k) != getattr(stored, k)
    ]
    if changed:
        print(f"resuming with {', '.join(changed)}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------- the loop's steps


def run_config(
    cfg: TrainConfig | None,
    out: Path,
    resume: bool,
    epochs: int | None,
    changes: dict[str, Any] | None = None,
) -> tuple[TrainConfig, tuple[dict, dict, dict] | None]:
    """The run's config, validated, and on resume the contents of its last.npz (read once, here):
    (model_state, optim_state, meta). The caller's cfg is left as it is.

    On resume, `changes` and `epochs` may change only RESUME_CHANGES (a value equal to the run's own is
    no change); any other is refused, naming the flag and the run's value, and so is a finished run."""
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(out / "last.npz")
        stored = check_run_meta(out / "last.npz", checkpoint[2], tuple(f.name for f in fields(RunState)))
        given = {**(changes or {}), **({} if epochs is None else {"epochs": epochs})}
        differ = {k: v for k, v in given.items() if getattr(stored, k) != v}
        fixed = [k for k in differ if k not in RESUME_CHANGES]
        if fixed:
            raise UserError(
                f"--resume {out} continues the run with its own settings: "
                + ", ".join(
                    f"--{flag(k)} {flag_value(differ[k])} (the run has {flag_value(getattr(stored, k))})"
                    for k in fixed
                )
                + " would change its model, data or training. Leave "
                + ("it" if len(fixed) == 1 else "them")
                + " out; on resume only "
                + ", ".join(f"--{flag(k)}" for k in RESUME_CHANGES)
                + " may change"
            )
        cfg = replace(stored, **differ).validate()
        check_unfinished(cfg, RunState(**checkpoint[2]["state"]), out, "epochs" in given)
        return cfg, checkpoint
    if cfg is None:
        raise ValueError("train() needs a config unless it resumes a run")
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    return cfg.validate(), checkpoint


def check_unfinished(cfg: TrainConfig, state: RunState, out: Path, epochs_given: bool) -> None:
    """Refuse to resume a run that has nothing left to do, saying how to extend it."""
    extend = f"to train it further, give a larger total: minivae train --resume {out} --epochs N, N > {state.epoch}"
    if cfg.epochs <= state.epoch:
        if not epochs_given and state.batch == 0 and not (out / "report.md").is_file():
            return  # trained, but stopped before its report (cut in the evaluation): resuming writes it
        if epochs_given:
            raise UserError(
                f"--epochs {cfg.epochs}: the run {out} has already trained {state.epoch} epochs; {extend}"
            )
        raise UserError(
            f"{out} is a finished run ({state.epoch} of {cfg.epochs} epochs): nothing was changed; {extend}"
        )
    if cfg.patience and state.batch == 0 and state.bad_epochs >= cfg.patience:
        raise UserError(
            f"{out} is a finished run: it stopped early after {state.epoch} epochs (no better validation "
            f"loss for --patience {cfg.patience} epochs): nothing was changed; to train it further, give a "
            f"larger --patience (and --epochs): minivae train --resume {out} --patience N, N > {state.bad_epochs}"
        )


def check_data(model: VAE, data: Dataset) -> None:
    """Refuse an empty training set, and images that are not finite or not in [0, 1]: each data set is
    checked once here, so the steps need not check their batches."""
    if len(data.x_train) == 0:
        raise UserError("no training images: raise --train-limit or lower --val-fraction")
    for split in (data.x_train, data.x_val, data.x_test):
        if len(split):
            model.check_input(split)


def run_epoch(run: Run, flag: SignalFlag, on_step: OnStep | None, progress: bool) -> None:
    """The batch loop of epoch run.state.epoch, from batch run.state.batch on (0 unless resumed mid-epoch).

    Leaves the epoch's loss sums, live bottleneck units and seconds in run.state. After a step, a
    SIGINT/SIGTERM or on_step returning True saves last.npz and raises Interrupted.
    """
    cfg, state, xp = run.cfg, run.state, run.model.xp
    order = epoch_order(cfg.seed, state.epoch, len(run.data.x_train))
    alive = xp.asarray(np.array(state.alive or False, dtype=bool))  # bottleneck units seen > 0, on the device
    run.optimizer.lr = lr_at(state.epoch, cfg)  # a function of the epoch: a resume sets the same
    t0 = time.perf_counter()
    bar = tqdm(
        total=run.batches_per_epoch,
        initial=state.batch,
        desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
        disable=not progress,
        leave=False,
        unit="step",
        file=sys.stderr,
    )
    stop = False
    with bar:
        while state.batch < run.batches_per_epoch and not stop:
            idx = order[state.batch * cfg.batch_size : (state.batch + 1) * cfg.batch_size]
            loss = train_batch(run, idx)
            if loss is None:  # a non-finite step, skipped
                state.skipped += 1
            else:
                state.add_step(loss, len(idx))
                alive = alive | (run.model.encoder_output > 0).any(axis=0)
                if state.batch % 10 == 0:
                    bar.set_postfix(loss=f"{loss.total:.4g}")
            state.batch += 1
            state.step += 1
            bar.update()
            asked = on_step is not None and bool(on_step(state))
            stop = asked or flag.signame is not None
    state.seconds += time.perf_counter() - t0
    state.alive = to_numpy(alive).tolist()
    if stop:  # save the run as it is after this step, so that it resumes from the next one
        run.save("last.npz")
        raise Interrupted(run.out, flag.signame or "on_step")


def train_batch(run: Run, idx: np.ndarray) -> VAELoss | None:
    """Step run.state.step of the run, on the training images idx: the batch, its noise, β and C from
    the schedule, then train_step. Returns the loss, or None when the loss or a gradient was NaN/Inf
    and --on-nonfinite skip left the weights as they were (with stop: raises NonFiniteError)."""
    cfg, step, xp = run.cfg, run.state.step, run.model.xp
    xb = run.data.x_train[xp.asarray(idx)] if xp is not np else run.data.x_train[idx]
    if cfg.binarize == "dynamic":  # a fresh binary draw of the batch, from the step's own stream
        xb = binarize(xb, [cfg.seed, streams.STREAMS["binarize"], step])
    shape = (cfg.k, len(idx), cfg.latent) if cfg.objective == "iwae" else (len(idx), cfg.latent)
    eps = step_noise(cfg.seed, step, shape, cfg.dtype, xp)  # k samples per image under iwae
    beta = beta_at(step, run.batches_per_epoch, cfg)
    cap = capacity_at(step, run.batches_per_epoch, cfg)
    try:  # check_values=False: check_data checked the data sets
        loss, applied = train_step(
            run.model, run.optimizer, xb, eps, beta, cfg.loss, cfg.grad_clip, capacity=cap,
            check_values=False, objective=cfg.objective,
        )  # fmt: skip
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":  # cupy.cuda.memory.OutOfMemoryError
            raise out_of_memory(run, e) from e
        raise
    if applied:
        return loss
    if cfg.on_nonfinite == "stop":
        raise nonfinite_error(run, first_nonfinite(run.model, xb, eps))
    return None


def out_of_memory(run: Run, e: Exception) -> UserError:
    """What to do when a step does not fit in GPU memory."""
    b, out = run.cfg.batch_size, run.out
    return UserError(
        f"the GPU ran out of memory in a step of batch size {b} ({e}). Try --batch-size {max(1, b // 2)}, "
        f"or close other programs using the GPU; {out / 'last.npz'} holds the last finished epoch "
        f"(resume with --resume {out})."
    )


def nonfinite_error(run: Run, where: str) -> NonFiniteError:
    """The non-finite guard's message: which step, where the NaN/Inf first appears, what is saved, what to try."""
    cfg, s, last = run.cfg, run.state, run.out / "last.npz"
    saved = (
        f"{last} (end of the last good epoch) is intact"
        if last.exists()
        else "no checkpoint had been written yet (this was the first epoch)"
    )
    return NonFiniteError(
        f"step {s.step + 1} (epoch {s.epoch + 1}, batch {s.batch + 1}): the loss or a gradient is "
        f"NaN/Inf; it first appears in {where}. The weights were not updated and {saved}. "
        f"Likely causes: a learning rate too high (--lr {cfg.lr:g}), a large beta "
        f"(--beta {cfg.beta:g}), or inputs outside [0, 1]; try a lower --lr, --grad-clip 10, "
        "or --on-nonfinite skip."
    )


def validation(run: Run) -> dict[str, Any]:
    """The validation columns of the epoch's history row (mean_loss over the validation set; blank
    when there is none)."""
    if not len(run.data.x_val):
        return {"val_loss": "", "val_recon": "", "val_kl": ""}
    v = mean_loss(run.model, run.data.x_val, run.cfg)
    return {"val_loss": v["loss"], "val_recon": v["recon"], "val_kl": v["kl"]}


def epoch_row(run: Run, val: dict[str, Any]) -> dict[str, Any]:
    """The history row of the epoch just trained: the mean training loss, the validation columns `val`,
    β and C at the epoch's last step, the live bottleneck units, the BLAS threads, and the training seconds."""
    cfg, s = run.cfg, run.state
    k = max(s.sums[3], 1)
    beta = beta_at(s.step - 1, run.batches_per_epoch, cfg)
    cap = capacity_at(s.step - 1, run.batches_per_epoch, cfg)
    return {
        "epoch": s.epoch + 1, "step": s.step,
        "train_loss": s.sums[0] / k, "train_recon": s.sums[1] / k, "train_kl": s.sums[2] / k,
        **val,
        "beta": beta, "capacity": "" if cap is None else cap,
        "effective_beta": effective_beta(cfg.loss, beta, cfg.latent), "lr": lr_at(s.epoch, cfg),
        "alive_units": int(np.sum(s.alive)), "threads": threads.current(),
        "seconds": round(s.seconds, 3),
    }  # fmt: skip


def print_epoch(row: dict[str, Any], epochs: int, progress: bool) -> None:
    """One line per epoch: the training and validation losses, and the seconds it took."""
    msg = f"epoch {row['epoch']}/{epochs}: train {row['train_loss']:.4f}"
    if row["val_loss"] != "":
        msg += f", val {row['val_loss']:.4f} (recon {row['val_recon']:.4f}, kl {row['val_kl']:.4f})"
    print(msg + f", {row['seconds']:.1f}s", file=sys.stderr if not progress else sys.stdout)


def track_best(state: RunState, val_loss: float | str) -> bool:
    """Early stopping's bookkeeping: True when val_loss is the best so far, else one more bad epoch.
    Without a validation set (val_loss "") nothing changes."""
    if val_loss == "":
        return False
    if val_loss < state.best_val:
        state.best_val, state.bad_epochs = val_loss, 0
        return True
    state.bad_epochs += 1
    return False


def save_checkpoints(run: Run, improved: bool) -> None:
    """best.npz when the validation loss improved (every epoch without a validation set); last.npz and
    history.csv every epoch."""
    if improved or not len(run.data.x_val):
        run.save("best.npz")
    run.save("last.npz")
    write_history(run.out / "history.csv", run.history)


def early_stop(run: Run) -> bool:
    """True after --patience epochs without a better validation loss (never with --patience 0)."""
    if run.cfg.patience and run.state.bad_epochs >= run.cfg.patience:
        print(f"early stopping: no better validation loss for {run.cfg.patience} epochs", file=sys.stderr)
        return True
    return False


def load_best(run: Run) -> None:
    """Give the model the best-validation weights (the last ones when there is no validation set)."""
    if (run.out / "best.npz").exists():
        model_state, _, _ = load_checkpoint(run.out / "best.npz")
        run.model.load_state_dict(model_state)
    else:  # no finite validation loss in any epoch: keep the last weights, and say so
        print(
            "no epoch reached a finite validation loss: best.npz is the last epoch's weights", file=sys.stderr
        )
        run.save("best.npz")


def restore(model: VAE, optimizer: Optimizer | None, model_state, optim_state, path: Path) -> None:
    """Load checkpoint arrays into a model (and optimizer), after checking all of them against what the
    model and optimizer hold (names, shapes, the run's dtype, finite values, Adam's buffers and step
    counter): a checkpoint that does not fit is refused with one line, and nothing is loaded."""
    expected = {k: (tuple(p.shape), p.dtype) for k, p, _ in model.named_parameters()}
    check_model_state(path, model_state, expected)
    if optimizer is not None:
        buffers = () if getattr(optimizer, "momentum", None) == 0 else optimizer.buffers
        check_optim_state(path, optim_state, expected, buffers)
    model.load_state_dict(model_state)
    if optimizer is not None:
        optimizer.load_state_dict(optim_state)


def load_run(run_dir: str | Path, which: str = "best", backend: str | None = None) -> tuple[VAE, TrainConfig]:
    """The model of a finished (or interrupted) run, from its best.npz or last.npz, after checking the
    checkpoint's metadata (config, run state, history) and every weight; nothing is written."""
    run_dir = Path(run_dir)
    path = run_dir / f"{which}.npz"
    if not path.is_file():
        raise UserError(f"{run_dir} has no {which}.npz: is it a minivae run directory?")
    model_state, _, meta = load_checkpoint(path)
    cfg = check_run_meta(path, meta, tuple(f.name for f in fields(RunState)))
    if backend:
        cfg = replace(cfg, backend=backend).validate()
    xp = get_backend(cfg.backend)
    model = make_model(cfg, xp)
    restore(model, None, model_state, {}, path)
    return model, cfg
