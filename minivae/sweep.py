"""Train one run per (latent size, seed), then compare the latent sizes digit by digit.

Each run is an ordinary run directory (`<out>/z<latent>_s<seed>/`), trained and reported exactly as
`minivae train` does. A finished run is skipped and an interrupted one resumed, so a sweep can be
stopped and started again. The comparison gives, per latent size and digit, the mean and the sample
standard deviation over seeds of the per-digit PSNR and MSE, and one sentence naming the best size.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from minivae import figures
from minivae.config import TrainConfig
from minivae.evaluate import seed_reference
from minivae.report import read_history
from minivae.train import save_json


def run_dir(out: Path, latent: int, seed: int) -> Path:
    return out / f"z{latent}_s{seed}"


def run_one(cfg_dict: dict[str, Any], path: str, progress: bool) -> str:
    """Train + report one run (in this or a worker process); skip it when its report exists."""
    from minivae.report import write_report
    from minivae.train import train

    path_ = Path(path)
    if (path_ / "metrics.json").is_file():
        return f"{path}: done already, skipped"
    resume = (path_ / "last.npz").is_file()
    cfg = TrainConfig.from_dict(cfg_dict)
    model, data, _ = train(cfg, path_, resume=resume, progress=progress)
    write_report(model, cfg, data.x_test, data.y_test, path_)
    return f"{path}: trained"


def sweep(
    base: TrainConfig, latents: list[int], seeds: int, out: Path, jobs: int = 1, progress: bool = True
) -> Path:
    """Train every (latent, seed) run under out/ and write out/summary.csv, figures and report.md."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for latent in latents:
        for s in range(seeds):
            cfg = dataclasses.replace(base, latent=latent, seed=base.seed + s).validate()
            tasks.append((cfg.to_dict(), str(run_dir(out, latent, base.seed + s))))
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for msg in pool.map(run_one, *zip(*tasks), [False] * len(tasks)):
                print(msg, file=sys.stderr)
    else:
        for cfg_dict, path in tasks:
            print(run_one(cfg_dict, path, progress), file=sys.stderr)
    return summarize(base, latents, seeds, out)


def summarize(base: TrainConfig, latents: list[int], seeds: int, out: Path) -> Path:
    """Aggregate the runs' per_digit.csv and metrics.json into the sweep's table, figures and report."""
    table, per_latent, histories = [], {}, {}
    for latent in latents:
        runs = [run_dir(out, latent, base.seed + s) for s in range(seeds)]
        digits = [_read_csv(r / "per_digit.csv") for r in runs]
        metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
        histories[f"z={latent}"] = read_history(runs[0] / "history.csv")
        stats = {}
        for key in ("psnr_sampled", "psnr_mean", "mse_sampled", "mse_mean"):
            vals = np.array([[float(row[key]) for row in d] for d in digits])  # (seeds, 10)
            stats[key] = (vals.mean(0), vals.std(0, ddof=1) if seeds > 1 else np.zeros(vals.shape[1]))
        per_latent[latent] = {"stats": stats, "metrics": metrics}
        for d in range(len(digits[0])):
            table.append({"latent": latent, "digit": d, "seeds": seeds,
                          **{f"{k}_mean": f"{v[0][d]:.6g}" for k, v in stats.items()},
                          **{f"{k}_std": f"{v[1][d]:.6g}" for k, v in stats.items()}})  # fmt: skip
    with (out / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    figs = {
        "psnr_sampled": figures.per_digit_bars(
            {f"z={k}": tuple(v["stats"]["psnr_sampled"]) for k, v in per_latent.items()},
            out / "psnr_sampled_by_latent.png", "PSNR (dB)", f"sampled z, mean ± sd over {seeds} seed(s)",
        ),
        "psnr_mean": figures.per_digit_bars(
            {f"z={k}": tuple(v["stats"]["psnr_mean"]) for k, v in per_latent.items()},
            out / "psnr_mean_by_latent.png", "PSNR (dB)", f"z = mu, mean ± sd over {seeds} seed(s)",
        ),
        "mse_sampled": figures.per_digit_bars(
            {f"z={k}": tuple(v["stats"]["mse_sampled"]) for k, v in per_latent.items()},
            out / "mse_sampled_by_latent.png", "MSE", f"sampled z, mean ± sd over {seeds} seed(s)",
        ),
        "loss": figures.loss_curves(histories, out / "loss_curves_by_latent.png"),
    }  # fmt: skip
    verdict = best_sentence(per_latent)
    save_json(out / "sweep.json", {"latents": latents, "seeds": seeds, "base_config": base.to_dict(),
                                   "verdict": verdict})  # fmt: skip
    (out / "report.md").write_text(render(base, per_latent, seeds, figs, verdict))
    return out / "report.md"


def best_sentence(per_latent: dict[int, dict[str, Any]]) -> str:
    """Which latent size has the highest digit-mean PSNR (sampled z), and by how much."""
    means = {k: float(np.mean(v["stats"]["psnr_sampled"][0])) for k, v in per_latent.items()}
    ranked = sorted(means, key=means.get, reverse=True)
    best = ranked[0]
    if len(ranked) == 1:
        return f"Only latent size {best} was run: digit-mean PSNR (sampled z) {means[best]:.2f} dB."
    margin = means[best] - means[ranked[1]]
    wins = int(
        np.sum(
            per_latent[best]["stats"]["psnr_sampled"][0] >= per_latent[ranked[1]]["stats"]["psnr_sampled"][0]
        )
    )
    return (
        f"Latent size {best} reconstructs best: digit-mean PSNR (sampled z) {means[best]:.2f} dB, "
        f"{margin:.2f} dB ahead of latent size {ranked[1]} ({means[ranked[1]]:.2f} dB), and at least as good on "
        f"{wins} of 10 digits."
    )


def render(
    base: TrainConfig, per_latent: dict[int, Any], seeds: int, figs: dict[str, Path], verdict: str
) -> str:
    lines = [
        f"# minivae sweep: {base.arch} VAE, latent sizes {', '.join(map(str, per_latent))}",
        "",
        f"{seeds} seed(s) per latent size; loss form `{base.loss}`, beta {base.beta:g}, {base.epochs} epochs, "
        f"batch {base.batch_size}, {base.optimizer} lr {base.lr:g}.",
        "",
        f"**{verdict}**",
        "",
        "| latent | effective beta | PSNR sampled z (digit mean) | PSNR z = mu | neg. ELBO (nats) | active units | alive encoder units |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, v in per_latent.items():
        ms = v["metrics"]

        def ms_(key: str, nd: int = 2, ms=ms) -> str:
            vals = np.array([m[key] for m in ms], dtype=float)
            return f"{vals.mean():.{nd}f}" + (f" ± {vals.std(ddof=1):.{nd}f}" if len(vals) > 1 else "")

        lines.append(
            f"| {k} | {ms[0]['effective_beta']:.4g} | {ms_('psnr_sampled_digit_mean')} | {ms_('psnr_mean_digit_mean')} | "
            f"{ms_('neg_elbo')} | {ms_('active_units', 1)} | {ms_('alive_encoder_units', 1)} |"
        )
    lines += ["", "## Per-digit PSNR, sampled z (mean ± sd over seeds)", ""]
    lines += ["| latent | " + " | ".join(str(d) for d in range(10)) + " | seed study |", "|---" * 12 + "|"]
    for k, v in per_latent.items():
        m, s = v["stats"]["psnr_sampled"]
        ref = seed_reference(k) if base.arch == "conv" else None
        cells = " | ".join(f"{a:.2f}" + (f" ± {b:.2f}" if seeds > 1 else "") for a, b in zip(m, s))
        lines.append(f"| {k} | {cells} | {np.mean(ref):.2f} |" if ref else f"| {k} | {cells} | - |")
    lines += ["", "## Figures", ""]
    for key, path in figs.items():
        lines += [f"![{key}]({Path(path).name})", ""]
    lines += ["Each run's own report is in its directory: " + ", ".join(f"`{p.name}`" for p in sorted(
        Path(figs['loss']).parent.glob('z*_s*')))]  # fmt: skip
    return "\n".join(lines) + "\n"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))
