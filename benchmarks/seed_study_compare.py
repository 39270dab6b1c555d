"""The seed study's comparison at one latent size: the seed's published per-digit PSNR beside minivae's
runs of each variant, mean ± sd over their seeds, as a markdown table (stdout) and a grouped-bar figure.

    python benchmarks/seed_study_compare.py runs/seed_study --latent 15 --figure docs/figures/x.png

Reads <study>/<variant>/z<latent>_s<seed>/{per_digit.csv,metrics.json} for every variant folder there
(relu: the seed's architecture; leaky: the LeakyReLU bottleneck), whatever backend trained them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from minivae.analysis.evaluate import seed_reference, seed_training_log
from minivae.nn.losses import effective_beta

LABELS = {
    "relu": "ReLU bottleneck (as the seed built it)",
    "leaky": "LeakyReLU bottleneck (--preset seed-leaky)",
}


def find_runs(studies: list[Path], variant: str, latent: int) -> list[Path]:
    """metrics.json of every finished run of this variant and latent size, first study first."""
    seen: dict[str, Path] = {}
    for study in studies:
        for m in sorted((study / variant).glob(f"z{latent}_s*/metrics.json")):
            seen.setdefault(m.parent.name, m)
    return list(seen.values())


def load(studies: list[Path], variant: str, latent: int) -> dict[str, np.ndarray] | None:
    runs = find_runs(studies, variant, latent)
    if not runs:
        return None
    keys = (
        "psnr_sampled",
        "psnr_mean",
        "best_val_loss",
        "alive",
        "neg_elbo",
        "rate",
        "distortion",
        "eff_beta",
    )
    out: dict[str, list] = {k: [] for k in keys}
    for m in runs:
        rows = list(csv.DictReader((m.parent / "per_digit.csv").open()))
        out["psnr_sampled"].append([float(r["psnr_sampled"]) for r in rows])
        out["psnr_mean"].append([float(r["psnr_mean"]) for r in rows])
        metrics = json.loads(m.read_text())
        out["best_val_loss"].append(metrics["best_val_loss"])
        out["alive"].append(metrics["alive_encoder_units"])
        out["neg_elbo"].append(metrics["neg_elbo"])
        out["rate"].append(metrics["rate_nats"])
        out["distortion"].append(metrics["distortion_nats"])
        cfg = json.loads((m.parent / "config.json").read_text())
        out["eff_beta"].append(effective_beta(cfg["loss"], cfg["beta"], cfg["latent"]))
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def summary(studies: list[Path]) -> list[str]:
    """One row per (variant, latent size): PSNR (sampled z) digit mean ± sd beside the seed's, the digits
    where the mean over seeds beats the seed, validation loss beside the seed's, rate, distortion, and each
    run's live bottleneck units (those positive for at least one test image)."""
    lines = [
        "| variant | latent | seeds | effective β | PSNR, digit mean (dB) | seed's | digits above the seed's | "
        "best val loss | seed's | rate R | distortion D | −ELBO | live bottleneck units, each run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in LABELS:
        for latent in (5, 10, 15, 20):
            data = load(studies, variant, latent)
            if data is None:
                continue
            n, seed = len(data["neg_elbo"]), np.array(seed_reference(latent))
            seed_val = min(r["val_loss"] for r in seed_training_log(latent))
            per_run = data["psnr_sampled"].mean(1)  # digit mean of each run
            sd = f" ± {per_run.std(ddof=1):.2f}" if n > 1 else ""
            beaten = int((data["psnr_sampled"].mean(0) > seed).sum())
            lines.append(
                f"| {LABELS[variant].split(' (')[0]} | {latent} | {n} | {data['eff_beta'][0]:.3f} | "
                f"{per_run.mean():.2f}{sd} | {seed.mean():.2f} | {beaten} of 10 | "
                f"{data['best_val_loss'].mean():.4f} | {seed_val:.4f} | {data['rate'].mean():.1f} | "
                f"{data['distortion'].mean():.1f} | {data['neg_elbo'].mean():.1f} | "
                f"{', '.join(str(int(a)) for a in data['alive'])} of 32 |"
            )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", type=Path, nargs="+")
    p.add_argument("--latent", type=int, default=15)
    p.add_argument("--figure", type=Path, default=None)
    p.add_argument("--summary", action="store_true", help="also one row per variant and latent size")
    args = p.parse_args()

    seed = np.array(seed_reference(args.latent))
    table = [
        "| run | seeds | "
        + " | ".join(map(str, range(10)))
        + " | mean | best val loss | live bottleneck units | −ELBO |",
        "|---|---|" + "---|" * 14,
        "| seed study (Keras, published) | 1 | "
        + " | ".join(f"{v:.2f}" for v in seed)
        + f" | {seed.mean():.2f} | | | |",
    ]
    bars = {"seed study (published)": (list(seed), None)}
    for variant in LABELS:
        data = load(args.studies, variant, args.latent)
        if data is None:
            continue
        n = len(data["best_val_loss"])
        for key, what in (("psnr_sampled", "sampled z"), ("psnr_mean", "z = mu")):
            a = data[key]  # (seeds, 10)
            m, sd = a.mean(0), (a.std(0, ddof=1) if n > 1 else np.zeros(10))
            cells = " | ".join(f"{x:.2f} ± {s:.2f}" if n > 1 else f"{x:.2f}" for x, s in zip(m, sd))
            extra = (
                f"{data['best_val_loss'].mean():.4f} | {data['alive'].mean():.1f} of 32 | {data['neg_elbo'].mean():.1f}"
                if key == "psnr_sampled"
                else " | | "
            )
            table.append(f"| {LABELS[variant]}, {what} | {n} | {cells} | {a.mean():.2f} | {extra} |")
            if key == "psnr_sampled":
                short = LABELS[variant].split(" (")[0]
                bars[f"minivae, {short} (mean ± sd, {n} seeds)"] = (list(m), list(sd))
                worst = (a - seed).min()
                print(
                    f"{variant}: beats the seed on {int((m > seed).sum())} of 10 digits over {f'the mean of {n} seeds' if n > 1 else 'its one seed'} "
                    f"(smallest margin {(m - seed).min():+.2f} dB, mean {(m - seed).mean():+.2f} dB); "
                    f"worst single run and digit {worst:+.2f} dB",
                    file=sys.stderr,
                )
    print("\n".join(table))
    if args.summary:
        print("\n" + "\n".join(summary(args.studies)))
    if args.figure:
        from minivae.analysis.figures import per_digit_bars

        per_digit_bars(
            bars,
            args.figure,
            "PSNR (dB)",
            f"latent {args.latent}, sampled z: the seed's published run and minivae's",
        )
        print(f"figure: {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
