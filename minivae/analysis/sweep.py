"""Train one run per (β, latent size, seed), then compare them: per digit, and by rate and distortion.

Each run is an ordinary run directory, trained and reported exactly as `minivae train` does:
`<out>/z<latent>_s<seed>/` when only latent sizes are swept, `<out>/b<beta>_z<latent>_s<seed>/` with
--betas (β in the units of --loss), `<out>/eb<beta>_z<latent>_s<seed>/` with --fixed-effective-beta (β in
standard ELBO units, the same for every latent size: for --loss seed each run's β_seed = β_eff · latent /
(2 · 784), where the seed study's fixed β_seed = 0.0005 gave β_eff from 0.157 at latent 5 to 0.039 at 20).
The same sweep command run again skips each finished run of the same config, resumes an interrupted one
and runs a failed one again; the runs are independent, so --jobs N trains N at once in worker processes,
and --executor dask runs each as a task on a Dask cluster (minivae.analysis.executors, docs/sweeps.md).

The comparison gives, per (β, latent size) and digit, the mean and the sample standard deviation over
seeds of the per-digit PSNR and MSE, the rate and the distortion; a rate-distortion curve (one point per
β, Alemi et al. 2018), PSNR and active units against the latent size, and sentences naming the best size
and saying whether the rate-distortion curve is monotone in β.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from minivae.analysis import executors, figures
from minivae.analysis.evaluate import seed_reference
from minivae.errors import UserError
from minivae.nn.losses import beta_for_effective
from minivae.training.config import TrainConfig
from minivae.training.rundir import read_history, save_json

Cells = dict[tuple[float | None, int], dict[str, Any]]  # (β setting, latent) -> read_cell() of its runs
PSNR_NAME = "PSNR (sampled z, mean over the ten digits)"


def run_dir(out: Path, latent: int, seed: int, beta: float | None = None, effective: bool = False) -> Path:
    """A run's directory: z<latent>_s<seed>, prefixed b<beta>_ (or eb<beta>_ for effective β) in β sweeps."""
    name = f"z{latent}_s{seed}"
    if beta is not None:
        name = f"{'eb' if effective else 'b'}{beta:g}_{name}"
    return out / name


def run_config(base: TrainConfig, latent: int, seed: int, beta: float | None, effective: bool) -> TrainConfig:
    """The config of one run: base with this latent size, seed and β (converted from ELBO units if effective)."""
    cfg = dataclasses.replace(base, latent=latent, seed=seed)
    if beta is not None:
        cfg.beta = float(beta_for_effective(base.loss, beta, latent) if effective else beta)
    return cfg.validate()


def sweep(
    base: TrainConfig,
    latents: list[int],
    seeds: int,
    out: Path,
    jobs: int = 1,
    progress: bool = True,
    betas: list[float] | None = None,
    fixed_effective_beta: bool = False,
    executor: str = "local",
    address: str | None = None,
    on_step: Callable | None = None,
) -> Path:
    """Train every (beta, latent, seed) run under out/ and write out/summary.csv, figures and report.md.

    betas None: every run uses base.beta (the latent-size sweep). fixed_effective_beta: the betas (default:
    base's effective beta) are in ELBO units and each run's beta is converted for its latent size; for the
    seed form the seed's own protocol (base.beta at every size) runs beside them (see groups()).
    executor "local" (jobs processes) or "dask" (a LocalCluster of jobs workers, or the scheduler at
    address): see minivae.analysis.executors. on_step: train()'s, for every run. Returns report.md's path;
    when runs failed, SweepIncomplete, after the summary of the runs that finished is written.
    """
    if executor == "dask":  # without the extra: one line, before anything is made
        executors.import_distributed()
    if fixed_effective_beta and betas is None:
        betas = [base.effective_beta]
    root = out.absolute() if executor == "dask" else out  # a cluster's workers need not share our cwd
    tasks = sweep_tasks(base, latents, seeds, root, betas, fixed_effective_beta)
    for cfg, path in tasks:  # a directory holding another config is refused before anything runs
        executors.run_state(cfg, path)
    outcomes = executors.run_all(tasks, executor, jobs, address, progress, on_step)
    failed = {p: o.error for p, o in outcomes.items() if o.status == "failed"}
    if len(failed) == len(tasks):
        raise SweepIncomplete(None, failed, len(tasks))
    report = summarize(base, latents, seeds, out, betas, fixed_effective_beta, missing=failed)
    if failed:
        raise SweepIncomplete(report, failed, len(tasks))
    return report


def sweep_tasks(
    base: TrainConfig,
    latents: list[int],
    seeds: int,
    out: Path,
    betas: list[float] | None,
    fixed_effective_beta: bool,
) -> list[executors.Task]:
    """(config as a dict, run directory) of every run, in the order of groups(), latents, seeds."""
    tasks = []
    for beta in groups(base, betas, fixed_effective_beta):
        eff = fixed_effective_beta and beta is not None
        for latent in latents:
            for s in range(seeds):
                cfg = run_config(base, latent, base.seed + s, beta, eff)
                tasks.append((cfg.to_dict(), str(run_dir(out, latent, base.seed + s, beta, eff))))
    return tasks


class SweepIncomplete(Exception):
    """Some runs failed: `failed` maps each one's directory to its error; `report` is the summary of the
    runs that finished (None when none did)."""

    def __init__(self, report: Path | None, failed: dict[str, str], total: int) -> None:
        done = f"the summary of the other {total - len(failed)}: {report}" if report else "no summary written"
        super().__init__(f"{len(failed)} of {total} runs failed ({', '.join(failed)}); {done}")
        self.report, self.failed = report, failed


def _mean_sd(vals: list[float]) -> tuple[float, float]:
    a = np.asarray(vals, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(
    base: TrainConfig,
    latents: list[int],
    seeds: int,
    out: Path,
    betas: list[float] | None = None,
    fixed_effective_beta: bool = False,
    missing: dict[str, str] | None = None,
) -> Path:
    """Aggregate the runs' per_digit.csv and metrics.json into the sweep's table, figures and report.

    Runs in `missing` (directory -> why), and runs without their metrics, are left out and listed in the
    report; a setting none of whose runs finished has no row."""
    if fixed_effective_beta and betas is None:
        betas = [base.effective_beta]
    gs = groups(base, betas, fixed_effective_beta)
    mixed = _mixed(base, gs)
    missing = dict(missing or {})
    cells, histories = {}, {}
    for beta in gs:
        eff = fixed_effective_beta and beta is not None
        for latent in latents:
            runs = [run_dir(out, latent, base.seed + s, beta, eff) for s in range(seeds)]
            for r in runs:
                if str(r) not in missing and not _has_results(r):
                    missing[str(r)] = "not finished: no metrics.json and per_digit.csv"
            done = [r for r in runs if str(r) not in missing]
            if done:
                cells[(beta, latent)] = read_cell(done, run_config(base, latent, base.seed, beta, eff).beta)
                histories[cell_label(beta, latent, eff, mixed)] = read_history(done[0] / "history.csv")
    if not cells:
        raise UserError(f"no run of the sweep in {out} has finished: nothing to summarize")
    write_summary_csv(out / "summary.csv", summary_rows(cells, seeds))
    figs = draw_figures(base, cells, histories, seeds, out, betas, fixed_effective_beta)
    verdicts = verdict_sentences(base, cells, betas, fixed_effective_beta)
    save_json(
        out / "sweep.json",
        {
            "latents": latents,
            "seeds": seeds,
            "betas": betas,
            "fixed_effective_beta": fixed_effective_beta,
            "base_config": base.to_dict(),
            "verdict": " ".join(verdicts),
            "missing": {Path(p).name: why for p, why in missing.items()},
        },
    )
    text = render(base, cells, seeds, figs, verdicts, betas, fixed_effective_beta)
    (out / "report.md").write_text(text + _missing_lines(missing))
    return out / "report.md"


def _has_results(run: Path) -> bool:
    return (run / "metrics.json").is_file() and (run / "per_digit.csv").is_file()


def _missing_lines(missing: dict[str, str]) -> str:
    """The report's list of the runs it leaves out, each with why."""
    if not missing:
        return ""
    lines = ["", "## Missing runs", "", "Not in the tables and figures above:", ""]
    lines += [f"- `{Path(p).name}`: {why}" for p, why in missing.items()]
    return "\n".join(lines) + "\n"


def _mixed(base: TrainConfig, settings: Iterable[float | None]) -> TrainConfig | None:
    """base when the seed's protocol (None) runs beside fixed-β_eff settings (labels name it), else None."""
    settings = set(settings)
    return base if None in settings and len(settings) > 1 else None


def read_cell(runs: list[Path], run_beta: float) -> dict[str, Any]:
    """One setting's runs (one per seed): their metrics, and per digit the mean and sd over seeds.

    Returns {"stats": key -> (mean (digits,), sd (digits,)), "metrics": [metrics.json per seed],
    "run_beta": the β each run trained with, in its loss form's units}; sd is 0 with a single seed.
    """
    digits = [_read_csv(r / "per_digit.csv") for r in runs]
    metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    stats = {}
    for key in ("psnr_sampled", "psnr_mean", "mse_sampled", "mse_mean"):
        vals = np.array([[float(row[key]) for row in d] for d in digits])  # (seeds, digits)
        sd = vals.std(0, ddof=1) if len(runs) > 1 else np.zeros(vals.shape[1])
        stats[key] = (vals.mean(0), sd)
    return {"stats": stats, "metrics": metrics, "run_beta": run_beta}


def summary_rows(cells: Cells, seeds: int) -> list[dict[str, Any]]:
    """summary.csv: one row per setting and digit, each statistic's mean and sd over seeds."""
    rows = []
    for (_, latent), v in cells.items():
        stats = v["stats"]
        for d in range(len(stats["psnr_sampled"][0])):
            rows.append(
                {
                    "beta": f"{v['run_beta']:.6g}",
                    "effective_beta": f"{v['metrics'][0]['effective_beta']:.6g}",
                    "latent": latent,
                    "digit": d,
                    "seeds": len(v["metrics"]),  # the seeds that finished
                    **{f"{k}_mean": f"{mean[d]:.6g}" for k, (mean, _) in stats.items()},
                    **{f"{k}_std": f"{sd[d]:.6g}" for k, (_, sd) in stats.items()},
                }
            )
    return rows


def write_summary_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def draw_figures(
    base: TrainConfig,
    cells: Cells,
    histories: dict[str, list[dict[str, Any]]],
    seeds: int,
    out: Path,
    betas: list[float] | None,
    fixed_effective_beta: bool,
) -> dict[str, Path]:
    """The sweep's figures in out: per-digit bars and loss curves always, by latent size when there are
    several sizes, the rate-distortion curve when β is swept; figure key -> path."""
    latents = _latents(cells)
    mixed = _mixed(base, _settings(cells))
    over = f"mean ± sd over {seeds} seed(s)"

    def bars(key: str, name: str, ylabel: str, title: str) -> Path:
        series = {
            cell_label(b, z, fixed_effective_beta and b is not None, mixed): tuple(v["stats"][key])
            for (b, z), v in cells.items()
        }
        return figures.per_digit_bars(series, out / name, ylabel, title)

    figs = {
        "psnr_sampled": bars("psnr_sampled", "psnr_sampled_by_latent.png", "PSNR (dB)", f"sampled z, {over}"),
        "psnr_mean": bars("psnr_mean", "psnr_mean_by_latent.png", "PSNR (dB)", f"z = mu, {over}"),
        "mse_sampled": bars("mse_sampled", "mse_sampled_by_latent.png", "MSE", f"sampled z, {over}"),
        "loss": figures.loss_curves(histories, out / "loss_curves_by_latent.png"),
    }
    if len(latents) > 1:
        figs["by_latent"] = by_latent_figure(base, cells, seeds, out, fixed_effective_beta)
    if betas is not None:
        figs["rate_distortion"] = rate_distortion_figure(base, cells, out, betas, fixed_effective_beta)
    return figs


def by_latent_figure(
    base: TrainConfig, cells: Cells, seeds: int, out: Path, fixed_effective_beta: bool
) -> Path:
    """psnr_active_by_latent.png: digit-mean PSNR and active units against the latent size, a line per β."""
    latents = _latents(cells)
    panels = {}
    for name, key in (
        ("PSNR sampled z, mean over the digits (dB)", "psnr_sampled_digit_mean"),
        ("active units", "active_units"),
    ):
        panels[name] = {
            group_label(b, fixed_effective_beta, base): _series(cells, b, latents, key)
            for b in _settings(cells)
        }
    title = f"test set, mean ± sd over {seeds} seed(s)"
    return figures.by_latent(panels, out / "psnr_active_by_latent.png", title)


def rate_distortion_figure(
    base: TrainConfig, cells: Cells, out: Path, betas: list[float], fixed_effective_beta: bool
) -> Path:
    """rate_distortion.png: one curve per latent size, one point per β of betas."""
    curves = {
        f"latent {z}": [rd_point(b, cells[(b, z)]["metrics"]) for b in betas if (b, z) in cells]
        for z in _latents(cells)
    }
    units = " (β in ELBO units)" if fixed_effective_beta else f" (β in {base.loss} units)"
    return figures.rate_distortion(curves, out / "rate_distortion.png", "rate-distortion, test set" + units)


def verdict_sentences(
    base: TrainConfig, cells: Cells, betas: list[float] | None, fixed_effective_beta: bool
) -> list[str]:
    """The report's conclusions: the best latent size at each β setting (when there is a choice of sizes,
    or no β sweep), then at each latent size whether the rate-distortion curve is monotone in β."""
    latents = _latents(cells)
    verdicts = []
    if len(latents) > 1 or betas is None:
        for b in _settings(cells):
            group = group_label(b, fixed_effective_beta, base) if betas is not None else ""
            verdicts.append(best_sentence({z: cells[(b, z)] for z in latents if (b, z) in cells}, group))
    for z in latents if betas is not None else []:
        per_beta = {b: cells[(b, z)]["metrics"] for b in betas if (b, z) in cells}
        if len(per_beta) > 1:
            verdicts.append(monotone_sentence(per_beta, z))
    return verdicts


def _latents(cells: Cells) -> list[int]:
    """The latent sizes of the cells, in sweep order."""
    return list(dict.fromkeys(z for _, z in cells))


def _settings(cells: Cells) -> list[float | None]:
    """The β settings of the cells, in sweep order (None: base.beta, unconverted)."""
    return list(dict.fromkeys(b for b, _ in cells))


def rd_point(beta: float, metrics: list[dict[str, Any]]) -> tuple[str, float, float, float, float]:
    """(label, mean rate, mean distortion, sd of rate, sd of distortion) over a setting's seeds."""
    r, r_sd = _mean_sd([m["rate_nats"] for m in metrics])
    d, d_sd = _mean_sd([m["distortion_nats"] for m in metrics])
    return f"β={beta:g}", r, d, r_sd, d_sd


def _series(
    cells: dict, beta: float | None, latents: list[int], key: str
) -> tuple[list[int], list[float], list[float]]:
    latents = [z for z in latents if (beta, z) in cells]  # the sizes at which some run finished
    ms = [_mean_sd([m[key] for m in cells[(beta, z)]["metrics"]]) for z in latents]
    return latents, [m for m, _ in ms], [s for _, s in ms]


def groups(base: TrainConfig, betas: list[float] | None, fixed_effective_beta: bool) -> list[float | None]:
    """The β settings a sweep runs at every latent size; None stands for base.beta, unconverted.

    With fixed_effective_beta and the seed form, the seed study's own protocol (β_seed = base.beta at every
    size, so β_eff = 2 · 784 · β_seed / latent falls as the size grows) runs beside the fixed-β_eff settings,
    in the same directories a plain latent sweep uses (z<latent>_s<seed>): one sweep shows both.
    """
    if betas is None:
        return [None]
    if fixed_effective_beta and base.loss == "seed":
        return [*betas, None]
    return list(betas)


def group_label(beta: float | None, effective: bool, base: TrainConfig) -> str:
    if beta is None:
        if base.loss == "seed":
            return f"β_seed = {base.beta:g} (the seed's protocol: β_eff falls with latent size)"
        return f"β = {base.beta:g} ({base.loss} units)"
    return f"β_eff = {beta:g} (fixed)" if effective else f"β = {beta:g}"


def cell_label(beta: float | None, latent: int, effective: bool, base: TrainConfig | None = None) -> str:
    """A setting's short name; base given: name the seed protocol's runs by their β_seed (mixed sweeps)."""
    if beta is None:
        return (
            f"β_seed={base.beta:g} z={latent}" if base is not None and base.loss == "seed" else f"z={latent}"
        )
    return f"{'β_eff' if effective else 'β'}={beta:g} z={latent}"


def best_sentence(per_latent: dict[int, dict[str, Any]], group: str = "") -> str:
    """Which latent size has the highest PSNR (sampled z, mean over the ten digits), and by how much."""
    at = f" At {group}:" if group else ""
    means = {k: float(np.mean(v["stats"]["psnr_sampled"][0])) for k, v in per_latent.items()}
    ranked = sorted(means, key=means.get, reverse=True)
    best = ranked[0]
    if len(ranked) == 1:
        return f"{at} only latent size {best} was run: {PSNR_NAME} {means[best]:.2f} dB.".strip()
    margin = means[best] - means[ranked[1]]
    wins = int(
        np.sum(
            per_latent[best]["stats"]["psnr_sampled"][0] >= per_latent[ranked[1]]["stats"]["psnr_sampled"][0]
        )
    )
    return (
        f"{at} Latent size {best} reconstructs best: {PSNR_NAME} {means[best]:.2f} dB, "
        f"{margin:.2f} dB ahead of latent size {ranked[1]} ({means[ranked[1]]:.2f} dB), and at least as good on "
        f"{wins} of 10 digits."
    ).strip()


def monotone_sentence(per_beta: dict[float, list[dict[str, Any]]], latent: int) -> str:
    """Whether, at this latent size, a higher β gives a lower rate and a higher distortion (seed means)."""
    bs = sorted(per_beta)
    rate = [float(np.mean([m["rate_nats"] for m in per_beta[b]])) for b in bs]
    dist = [float(np.mean([m["distortion_nats"] for m in per_beta[b]])) for b in bs]
    bad = [
        f"β {bs[i]:g} -> {bs[i + 1]:g}"
        for i in range(len(bs) - 1)
        if not (rate[i + 1] < rate[i] and dist[i + 1] > dist[i])
    ]
    span = (
        f"rate {rate[0]:.1f} -> {rate[-1]:.1f} nats, distortion {dist[0]:.1f} -> {dist[-1]:.1f} nats "
        f"from β {bs[0]:g} to {bs[-1]:g}"
    )
    if not bad:
        return (
            f"Latent {latent}: the rate-distortion curve is monotone, higher β giving lower rate and higher "
            f"distortion ({span})."
        )
    return f"Latent {latent}: the rate-distortion curve is NOT monotone at {', '.join(bad)} ({span})."


CAPTIONS = {
    "rate_distortion": "Rate against distortion, one point per β (mean ± sd over seeds)",
    "by_latent": "PSNR and active units against the latent size, one line per β",
    "psnr_sampled": "Per-digit PSNR, sampled z",
    "psnr_mean": "Per-digit PSNR, z = mu",
    "mse_sampled": "Per-digit MSE, sampled z",
    "loss": "Loss curves (first seed of each setting)",
}


def render(
    base: TrainConfig,
    cells: Cells,
    seeds: int,
    figs: dict[str, Path],
    verdicts: list[str],
    betas: list[float] | None = None,
    fixed_effective_beta: bool = False,
) -> str:
    """The sweep's report.md: the settings, the verdicts, a table per setting and per digit, the figures."""
    mixed = _mixed(base, _settings(cells))
    beta_text = _beta_text(base, betas, fixed_effective_beta, mixed)
    lines = [
        _title(base, _latents(cells), betas, fixed_effective_beta),
        "",
        f"{seeds} seed(s) per setting; loss form `{base.loss}`, {beta_text}, schedule {base.beta_schedule}, "
        f"{base.epochs} epochs, batch {base.batch_size}, {base.optimizer} lr {base.lr:g}.",
        "",
        *[f"**{v}**" + "\n" for v in verdicts],
        *_overview_table(cells),
        *_per_digit_psnr_lines(base, cells, seeds, fixed_effective_beta, mixed),
        *_figure_lines(figs),
    ]
    return "\n".join(lines) + "\n"


def _title(
    base: TrainConfig, latents: list[int], betas: list[float] | None, fixed_effective_beta: bool
) -> str:
    title = f"# minivae sweep: {base.arch} VAE, latent sizes {', '.join(map(str, latents))}"
    if betas is not None:
        title += f"; {'effective ' if fixed_effective_beta else ''}β {', '.join(f'{b:g}' for b in betas)}"
    return title


def _beta_text(
    base: TrainConfig, betas: list[float] | None, fixed_effective_beta: bool, mixed: TrainConfig | None
) -> str:
    """How β was set across the runs, for the report's opening sentence."""
    if betas is None:
        return f"beta {base.beta:g}"
    if not fixed_effective_beta:
        return f"β in {base.loss} units"
    text = "β fixed in standard ELBO units at every latent size"
    if base.loss == "seed":
        text += " (each run's β_seed = β_eff · latent / (2 · 784))"
    if mixed:
        text += f", beside the seed's protocol (β_seed = {base.beta:g} at every size)"
    return text


def _mean_sd_text(metrics: list[dict[str, Any]], key: str, nd: int = 2) -> str:
    """A metric's mean over seeds, with ± its sd when there is more than one seed."""
    m, s = _mean_sd([x[key] for x in metrics])
    return f"{m:.{nd}f}" + (f" ± {s:.{nd}f}" if len(metrics) > 1 else "")


def _overview_table(cells: Cells) -> list[str]:
    """One row per setting: its β, rate, distortion, -ELBO, digit-mean PSNR and live units."""
    lines = [
        "Rate R = mean KL(q(z|x) || p(z)) and distortion D = mean -log p(x|z), nats per test image; "
        "-ELBO = R + D (β = 1). PSNR: the mean over the ten digits of each digit's PSNR (from the MSE over "
        "its test images), in dB. Active units: latent units whose mu varies over the test set (variance "
        "> 0.01). Live encoder units: units of the encoder's last layer that are positive for at least "
        "one test image.",
        "",
        "| β (run) | effective β | latent | rate R | distortion D | -ELBO | PSNR sampled z, mean over the ten "
        "digits | PSNR z = mu, mean over the ten digits | active latent units | live encoder units |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (_, z), v in cells.items():
        ms = v["metrics"]
        cols = [
            f"{v['run_beta']:.4g}",
            f"{ms[0]['effective_beta']:.4g}",
            str(z),
            *(_mean_sd_text(ms, key) for key in ("rate_nats", "distortion_nats", "neg_elbo")),
            *(_mean_sd_text(ms, key) for key in ("psnr_sampled_digit_mean", "psnr_mean_digit_mean")),
            *(_mean_sd_text(ms, key, 1) for key in ("active_units", "alive_encoder_units")),
        ]
        lines.append("| " + " | ".join(cols) + " |")
    return lines


def _per_digit_psnr_lines(
    base: TrainConfig,
    cells: Cells,
    seeds: int,
    fixed_effective_beta: bool,
    mixed: TrainConfig | None,
) -> list[str]:
    """Per-digit PSNR (sampled z) of each setting, and the Keras study's published digit mean at its size
    (conv)."""
    lines = [
        "",
        "## Per-digit PSNR, sampled z (mean ± sd over seeds)",
        "",
        "Each digit's PSNR = 10 log10(1 / MSE), the MSE over that digit's test images. Keras study "
        "(published): the mean over the ten digits of the per-digit PSNR (sampled z) published by the Keras "
        "β-VAE study that minivae reproduces, for its conv model at that latent size.",
        "",
        "| setting | " + " | ".join(str(d) for d in range(10)) + " | Keras study (published) |",
        "|---" * 12 + "|",
    ]
    for (b, z), v in cells.items():
        m, s = v["stats"]["psnr_sampled"]
        sd = len(v["metrics"]) > 1
        per_digit = " | ".join(f"{a:.2f}" + (f" ± {c:.2f}" if sd else "") for a, c in zip(m, s))
        ref = seed_reference(z) if base.arch == "conv" else None
        seed_study = f"{np.mean(ref):.2f}" if ref else "-"
        label = cell_label(b, z, fixed_effective_beta and b is not None, mixed)
        lines.append(f"| {label} | {per_digit} | {seed_study} |")
    return lines


def _figure_lines(figs: dict[str, Path]) -> list[str]:
    """## Figures in caption order, then the run directories, each with its own report."""
    lines = ["", "## Figures", ""]
    for key in sorted(figs, key=list(CAPTIONS).index):
        lines += [f"### {CAPTIONS[key]}", "", f"![{key}]({Path(figs[key]).name})", ""]
    runs = sorted(p.name for p in Path(figs["loss"]).parent.glob("*z*_s*") if p.is_dir())
    lines += ["Each run's own report is in its directory: " + ", ".join(f"`{p}`" for p in runs)]
    return lines


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))
