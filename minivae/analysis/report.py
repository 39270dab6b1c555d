"""A run's report: evaluate on the test set, draw the figures, write metrics and report.md."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from minivae.analysis import figures, latent_figures
from minivae.analysis.evaluate import Evaluation, evaluate, seed_reference, write_per_digit_csv
from minivae.backend import to_numpy
from minivae.data.sources import FILES, get_spec
from minivae.errors import UserError
from minivae.models import DEFAULT_INIT, VAE
from minivae.nn import sigmoid
from minivae.training import streams
from minivae.training.config import TrainConfig
from minivae.training.loop import split_sizes
from minivae.training.rundir import read_history, save_json

DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
INIT_TEXT = {
    "pytorch": "PyTorch's default, U(±1/sqrt(fan_in))",
    "glorot": "Glorot uniform, Keras's default",
    "he": "He uniform",
}
REF_NAME = "Keras study (published)"
REF_TEXT = (
    f"{REF_NAME}: the per-digit PSNR (sampled z) published by the Keras β-VAE study that minivae "
    "reproduces, for its conv model at this latent size"
)


def one_per_digit(labels: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of the first test image of each digit (then more, up to k)."""
    first = [int(np.flatnonzero(labels == d)[0]) for d in range(10) if (labels == d).any()]
    return np.array(first[:k])


def write_report(
    model: VAE,
    cfg: TrainConfig,
    x_test: Any,
    y_test: np.ndarray,
    out: Path,
    iwae_k: int = 0,
    progress: bool = False,
) -> Evaluation:
    """Evaluate and write per_digit.csv, metrics.json, the figures and report.md into run directory out.

    iwae_k > 0 adds the IWAE estimate of log p(x) with that many importance samples per test image.
    """
    ev = evaluate(model, x_test, y_test, seed=cfg.seed, iwae_k=iwae_k, progress=progress)
    history = read_history(out / "history.csv")
    m = ev.metrics
    m.update(effective_beta=cfg.effective_beta, epochs_run=len(history), parameters=model.num_parameters())
    if history and history[-1].get("val_loss") not in ("", None):
        m["best_val_loss"] = min(float(r["val_loss"]) for r in history)
    check_no_nan(m, ev.per_digit, out)
    write_per_digit_csv(out / "per_digit.csv", ev.per_digit)
    save_json(out / "metrics.json", m)
    ref = seed_reference(cfg.latent) if cfg.arch == "conv" and len(ev.per_digit) == 10 else None
    figs = draw_figures(model, cfg, x_test, ev, history, ref, out, progress)
    (out / "report.md").write_text(render(cfg, m, ev.per_digit, history, figs, ref))
    return ev


def nan_names(value: Any, name: str) -> list[str]:
    """The names (metric, metric[i], row.key) of the NaNs anywhere in a metrics value."""
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in nan_names(v, f"{name}.{k}" if name else str(k))]
    if isinstance(value, (list, tuple)):
        return [n for i, v in enumerate(value) for n in nan_names(v, f"{name}[{i}]")]
    a = np.asarray(value) if isinstance(value, (float, np.floating, np.ndarray)) else None
    if a is not None and a.dtype.kind == "f" and np.isnan(a).any():
        return [name]
    return []


def check_no_nan(metrics: dict[str, Any], per_digit: list[dict[str, Any]], out: Path) -> None:
    """Refuse, before any file is written, results with a NaN in them: a report of NaNs is no report."""
    bad = nan_names(metrics, "") + nan_names(per_digit, "per_digit")
    if bad:
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise UserError(
            f"the evaluation of {out} gave NaN for {', '.join(bad[:8])}{more}: nothing was written "
            "(the weights or the test images are not usable; check the run's checkpoint and data)"
        )


def draw_figures(
    model: VAE,
    cfg: TrainConfig,
    x_test: Any,
    ev: Evaluation,
    history: list[dict[str, Any]],
    ref: list[float] | None,
    out: Path,
    progress: bool = False,
) -> dict[str, Path]:
    """Draw the run's figures into out; figure key -> path, in the order report.md shows them.

    progress: say on stderr what the slow t-SNE map is doing before it starts.
    """
    figs = {}
    if history:
        figs["loss"] = loss_figure(cfg, history, out)
    figs["recon"] = reconstruction_figure(model, cfg, x_test, ev.labels, out)
    figs["prior"] = prior_figure(model, cfg, out)
    if cfg.tsne_points:
        k = min(cfg.tsne_points, len(ev.mu))
        if progress:
            print(
                f"t-SNE map of the latent means of {k:,} test images (scikit-learn, on the CPU)...",
                file=sys.stderr,
            )
        figs["tsne"] = figures.tsne_map(ev.mu[:k], ev.labels[:k], out / "tsne.png", seed=cfg.seed)
    figs.update(latent_figures.draw(model, x_test, ev.labels, ev.mu, out, seed=cfg.seed))
    figs.update(per_digit_figures(ev.per_digit, ref, out))
    return figs


def loss_figure(cfg: TrainConfig, history: list[dict[str, Any]], out: Path) -> Path:
    """loss_curves.png: training and validation loss per epoch, in the loss form's units."""
    if cfg.loss == "elbo":
        units = "(nats per image)"
    else:
        units = "(seed units: pixel-mean BCE + beta * latent-mean KL)"
    return figures.loss_curves({f"{cfg.arch} z={cfg.latent}": history}, out / "loss_curves.png", units)


def reconstruction_figure(model: VAE, cfg: TrainConfig, x_test: Any, labels: np.ndarray, out: Path) -> Path:
    """reconstructions.png: one test image per digit, decoded from sampled z and from z = mu."""
    xp = model.xp
    idx = one_per_digit(labels)
    xb = x_test[xp.asarray(idx)] if xp is not np else x_test[idx]
    eps = streams.rng(cfg.seed, "recon_figure").standard_normal((len(idx), cfg.latent), dtype=cfg.dtype)
    sampled = to_numpy(sigmoid(model.forward(xb, eps=xp.asarray(eps))[0]))
    mean = to_numpy(model.reconstruct(xb))
    return figures.image_rows(
        {"originals": to_numpy(xb), "decoded sampled z": sampled, "decoded z = mu": mean},
        out / "reconstructions.png",
    )


def prior_figure(model: VAE, cfg: TrainConfig, out: Path) -> Path:
    """prior_samples.png: 32 images decoded from z ~ N(0, I)."""
    z = streams.rng(cfg.seed, "prior_figure").standard_normal((32, cfg.latent), dtype=cfg.dtype)
    images = to_numpy(sigmoid(model.decode(model.xp.asarray(z))))
    return figures.image_grid(images, out / "prior_samples.png", title="decoded z ~ N(0, I)")


def per_digit_figures(rows: list[dict[str, Any]], ref: list[float] | None, out: Path) -> dict[str, Path]:
    """psnr_per_digit.png (beside the Keras study's published PSNR when ref is given) and mse_per_digit.png.

    rows hold only the digits present in the test images evaluated (--test-limit can leave some out): a
    missing digit gets NaN, which draws no bar.
    """
    by_digit = {r["digit"]: r for r in rows}

    def col(key: str) -> list[float]:
        return [by_digit[d][key] if d in by_digit else math.nan for d in range(10)]

    psnr = {"sampled z": (col("psnr_sampled"), None), "z = mu": (col("psnr_mean"), None)}
    if ref:
        psnr[f"{REF_NAME}, sampled z"] = (ref, None)
    mse = {"sampled z": (col("mse_sampled"), None), "z = mu": (col("mse_mean"), None)}
    return {
        "psnr": figures.per_digit_bars(
            psnr, out / "psnr_per_digit.png", "PSNR (dB)", "per-digit PSNR, test set"
        ),
        "mse": figures.per_digit_bars(mse, out / "mse_per_digit.png", "MSE", "per-digit MSE, test set"),
    }


def _fmt(v: Any, nd: int = 4) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{nd}f}"
    return str(v)


CAPTIONS = {
    "loss": "Training and validation loss per epoch",
    "recon": "One test image per digit: originals, decoded sampled z, decoded z = mu",
    "prior": "Samples: decoded z drawn from the prior N(0, I)",
    "tsne": "t-SNE of the test images' latent means, coloured by digit",
    "traversal": "Traversals: one latent unit swept from -3 to 3, the others held at a test image's mu "
    "(units by decreasing Var(mu); inactive units change nothing)",
    "interpolation": "Interpolation between the latent means of two test digits",
    "manifold": "Latent size 2: the decoded latent plane, a grid of the prior's quantiles",
    "scatter": "Latent size 2: the test images' latent means, coloured by digit",
    "psnr": "Per-digit PSNR",
    "mse": "Per-digit MSE",
}


def render(
    cfg: TrainConfig,
    m: dict[str, Any],
    rows: list[dict[str, Any]],
    history: list[dict[str, Any]],
    figs: dict[str, Path],
    ref: list[float] | None,
) -> str:
    """report.md: what was trained, how it did, and the pictures."""
    lines = [
        *_run_lines(cfg, m),
        *_test_set_lines(cfg, m, rows),
        *_latent_unit_lines(m),
        *_per_digit_lines(rows, ref),
        *_figure_lines(figs),
        *_history_lines(cfg, history),
    ]
    return "\n".join(lines) + "\n"


def _run_lines(cfg: TrainConfig, m: dict[str, Any]) -> list[str]:
    """The title and what was trained: model, loss, beta schedule, targets, optimizer."""
    if cfg.binarize == "dynamic":
        targets = (
            "dynamically binarised images (training batches drawn afresh; validation and test binarised once)"
        )
    else:
        targets = "grey levels in [0, 1]"
    init = init_name(cfg)
    model = f"- model: `{cfg.arch}`, {m['parameters']:,} parameters, weights initialised `{init}` ({INIT_TEXT[init]})"
    if cfg.arch == "conv":
        model += f"; activation after the 32-unit bottleneck layer: {cfg.bottleneck}"
    else:
        model += f"; hidden layers {' x '.join(map(str, cfg.hidden))} ({cfg.activation}), the decoder mirroring them"
    objective = (
        f"- objective: the IWAE bound with k = {cfg.k} samples per image (Burda et al. 2015)\n"
        if cfg.objective == "iwae"
        else ""
    )
    lengths = f"{' + '.join(map(str, cfg.lr_stages))} epochs" if cfg.lr_stages else "3^i epochs"
    lr = f"lr {cfg.lr:g}" + (
        f" x 10^(-i/7) for {lengths}, stage i (Burda et al. 2015's rates)"
        if cfg.lr_schedule == "burda"
        else ""
    )
    eps = f", Adam eps {cfg.adam_eps:g}" if cfg.adam_eps is not None else ""
    return [
        f"# minivae run: {cfg.arch} VAE, latent {cfg.latent}",
        "",
        model,
        data_line(cfg, m["test_images"]),
        f"- loss form `{cfg.loss}` with beta = {cfg.beta:g}: effective beta in standard ELBO units = "
        f"**{m['effective_beta']:.4g}**",
        f"- beta schedule: {schedule_text(cfg)}",
        f"{objective}- targets: {targets}",
        f"- {cfg.optimizer}{eps}, {lr}, batch {cfg.batch_size}, {m['epochs_run']} of {cfg.epochs} epochs, "
        f"seed {cfg.seed}, backend {cfg.backend}, {cfg.dtype}",
        "",
    ]


def init_name(cfg: TrainConfig) -> str:
    """The run's weight initialisation by name: cfg.init, or the model's default (models.DEFAULT_INIT)."""
    return cfg.init or DEFAULT_INIT[cfg.arch]


def dataset_sizes(dataset: str) -> tuple[int, int]:
    """(training images, test images) of the data set, from the label-file sizes its spec verifies: an
    8-byte header, then one byte per image. MNIST and Fashion-MNIST: (60000, 10000)."""
    nbytes = get_spec(dataset).nbytes
    return nbytes[FILES[1]] - 8, nbytes[FILES[3]] - 8


def data_line(cfg: TrainConfig, n_test: int) -> str:
    """How many training, validation and test images the run used (split_sizes), and which limits cut them.

    n_test: the test images evaluated (the report's numbers are over these)."""
    n_train_images, n_test_images = dataset_sizes(cfg.dataset)
    n_train, n_val, _ = split_sizes(cfg, n_train_images, n_test_images)
    train = f"{n_train:,} training images"
    if cfg.train_limit:
        train += f" (--train-limit {cfg.train_limit})"
    if n_val and cfg.train_limit:
        val = f"{n_val:,} validation images"
    elif n_val:
        val = f"{n_val:,} validation images (the last {cfg.val_fraction:.0%} of the {n_train_images:,})"
    else:
        val = "no validation images"
    test = f"{n_test:,} test images"
    if cfg.test_limit:
        test += f" (--test-limit {cfg.test_limit} of {n_test_images:,})"
    return f"- data: {DATASET_NAMES.get(cfg.dataset, cfg.dataset)}, {train}, {val}, {test}"


def _digits_text(rows: list[dict[str, Any]]) -> str:
    return "the ten digits" if len(rows) == 10 else f"the {len(rows)} digits in the test images"


def _test_set_lines(cfg: TrainConfig, m: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """## Test set: the ELBO as rate + distortion, PSNR (digit mean, then pooled) and MSE, live encoder units,
    the IWAE bound if computed."""
    lines = [
        "## Test set",
        "",
        f"- negative ELBO (beta = 1, one z per image): **{m['neg_elbo']:.2f} nats** "
        f"= distortion D {m['distortion_nats']:.2f} + rate R {m['rate_nats']:.2f}; ELBO = -(R + D) = "
        f"{m['elbo_nats']:.2f} nats",
        "  (rate R = mean KL(q(z|x) || p(z)), distortion D = mean -log p(x|z) = BCE summed over the pixels, "
        "Alemi et al. 2018)",
        f"- PSNR, mean over {_digits_text(rows)} (each digit's PSNR from the MSE over its images): "
        f"sampled z **{m['psnr_sampled_digit_mean']:.2f} dB**, z = mu **{m['psnr_mean_digit_mean']:.2f} dB**",
        f"- PSNR of the MSE pooled over all test images: sampled z {m['psnr_sampled']:.2f} dB "
        f"(MSE {m['mse_sampled']:.5f}), z = mu {m['psnr_mean']:.2f} dB (MSE {m['mse_mean']:.5f})",
        f"- units of the encoder's last layer (the {m['encoder_units']} that feed mu and logvar) that are "
        f"positive for at least one test image: {m['alive_encoder_units']} of {m['encoder_units']}",
    ]
    if m.get("iwae_k"):
        line = (
            f"- IWAE estimate of log p(x) with k = {m['iwae_k']} importance samples (Burda et al. 2015): "
            f"**{m['iwae_log_px']:.2f} ± {m['iwae_stderr']:.2f} nats** (mean ± standard error over images), "
            f"a bound {m['iwae_log_px'] - m['elbo_nats']:.2f} nats tighter than the ELBO"
        )
        if cfg.binarize != "dynamic":
            line += (
                "; with grey-level targets -BCE is not a normalised likelihood of the images, so this "
                "number is not comparable with published log-likelihoods of binarised MNIST"
            )
        lines.append(line)
    if "best_val_loss" in m:
        lines.append(
            f"- best validation loss ({cfg.loss} units): {m['best_val_loss']:.4f}; the weights evaluated are "
            "those of the best validation epoch"
        )
    return lines


def _latent_unit_lines(m: dict[str, Any]) -> list[str]:
    """## Latent units: how many are active; unless all are, each unit's Var(mu), its share of the rate,
    and whether it is active."""
    n, active, kl = len(m["active_unit_mask"]), m["active_units"], m["kl_per_unit_nats"]
    rule = "variance of mu over the test set > 0.01"
    if active == n:
        return [
            "",
            "## Latent units",
            "",
            f"All {n} latent units active ({rule}); each carries {min(kl):.2f} to {max(kl):.2f} nats of the "
            "rate per image.",
        ]
    lines = [
        "",
        "## Latent units",
        "",
        f"{active} of {n} latent units active ({rule}, Burda et al. 2015). "
        "KL: the unit's share of the rate, nats per image.",
        "",
        "| unit | Var(mu) | KL (nats) | active |",
        "|---|---|---|---|",
    ]
    units = zip(m["latent_unit_variance"], m["kl_per_unit_nats"], m["active_unit_mask"])
    for i, (v, kl, on) in enumerate(units):
        lines.append(f"| {i} | {v:.4f} | {kl:.3f} | {'yes' if on else 'no'} |")
    return lines


def _per_digit_lines(rows: list[dict[str, Any]], ref: list[float] | None) -> list[str]:
    """## Per digit: MSE and PSNR for sampled z and z = mu, beside the Keras study's published PSNR when ref
    is given."""
    head = "| digit | images | MSE sampled z | PSNR sampled z | MSE z = mu | PSNR z = mu |"
    sep = "|---|---|---|---|---|---|"
    if ref:
        head, sep = head + f" {REF_NAME} |", sep + "---|"
    lines = [
        "",
        "## Per digit",
        "",
        "PSNR = 10 log10(1 / MSE), MSE pooled over all test images of the digit, pixels in [0, 1]; the "
        "PSNR under Test set is the mean of these columns over the digits."
        + (f" {REF_TEXT}." if ref else ""),
        "",
        head,
        sep,
    ]
    for i, r in enumerate(rows):
        line = (
            f"| {r['digit']} | {r['count']} | {r['mse_sampled']:.5f} | {r['psnr_sampled']:.2f} | "
            f"{r['mse_mean']:.5f} | {r['psnr_mean']:.2f} |"
        )
        lines.append(line + (f" {ref[i]:.2f} |" if ref else ""))
    return lines


def _figure_lines(figs: dict[str, Path]) -> list[str]:
    """## Figures: each figure under its caption, in the order of figs."""
    lines = ["", "## Figures", ""]
    for key, path in figs.items():
        lines += [f"### {CAPTIONS[key]}", "", f"![{CAPTIONS[key]}]({Path(path).name})", ""]
    return lines


def _history_lines(cfg: TrainConfig, history: list[dict[str, Any]]) -> list[str]:
    """## History: one row per epoch (with the schedule's beta and C when beta was scheduled)."""
    if not history:
        return []
    scheduled = cfg.beta_schedule != "constant"
    lines = ["## History", ""]
    if scheduled:
        lines += [
            "beta (and C) at each epoch's last step; validation losses use the schedule's end point.",
            "",
        ]
    head = "| epoch | train loss | val loss | val recon | val KL | alive units | s |"
    if scheduled:
        head = head.replace("| epoch |", "| epoch | beta | C |")
    lines += [head, "|---" * head.count(" |") + "|"]
    for r in history:
        sched = f" {_fmt(_num(r.get('beta')))} | {_fmt(_num(r.get('capacity')), 2)} |" if scheduled else ""
        lines.append(
            f"| {r['epoch']} |{sched} {_fmt(float(r['train_loss']))} | {_fmt(_num(r['val_loss']))} | "
            f"{_fmt(_num(r['val_recon']))} | {_fmt(_num(r['val_kl']))} | {r['alive_units']} | {r['seconds']} |"
        )
    return lines


def schedule_text(cfg: TrainConfig) -> str:
    """One line saying how beta moved during training."""
    run = f"{cfg.epochs} epochs"
    if cfg.beta_schedule == "linear":
        w = cfg.beta_warmup_epochs or cfg.epochs
        return f"linear warm-up from 0 to {cfg.beta:g} over {w:g} of {run}, per step"
    if cfg.beta_schedule == "cyclical":
        return (
            f"cyclical (Fu et al. 2019): {cfg.beta_cycles} cycles over {run}, beta rising from 0 to "
            f"{cfg.beta:g} over the first {cfg.beta_cycle_ratio:g} of each"
        )
    if cfg.beta_schedule == "capacity":
        w = cfg.capacity_epochs or cfg.epochs
        return (
            f"capacity (Burgess et al. 2018): loss = recon + {cfg.beta:g} |KL - C|, C rising from 0 to "
            f"{cfg.capacity_max:g} nats over {w:g} of {run}"
        )
    return "constant"


def _num(v: Any) -> Any:
    return float(v) if v not in ("", None) else "-"
