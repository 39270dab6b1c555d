"""The run directory: what a run writes there, and the checks before it writes anything.

config.json   the TrainConfig            history.csv   one row per epoch (HISTORY_FIELDS)
last.npz      the latest checkpoint      best.npz      the best validation loss so far
metrics.json, per_digit.csv, report.md and the figures: written by minivae.analysis.report
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from minivae.errors import UserError
from minivae.models import VAE
from minivae.training.checkpoint import bytes_of

HISTORY_FIELDS = [
    "epoch", "step", "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl",
    "beta", "capacity", "effective_beta", "alive_units", "seconds",
]  # fmt: skip


def prepare_run_dir(out: Path, resume: bool) -> None:
    """Make the run directory, refusing to overwrite another run's results."""
    if resume:
        if not (out / "last.npz").is_file():
            raise UserError(f"--resume {out}: no last.npz there to resume from")
        return
    if out.exists() and any(out.iterdir()):
        raise UserError(
            f"{out} already holds files (a previous run?). Nothing was changed: choose another --out, "
            f"or continue that run with: minivae train --resume {out}"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(
            f"cannot write to the output directory {out}: {e.strerror or e}; choose another --out"
        ) from e


def check_free_space(out: Path, model: VAE) -> None:
    need = 3 * bytes_of(model.state_dict())  # best.npz + last.npz + a temporary file while one is written
    free = shutil.disk_usage(out).free
    if free < need:
        raise UserError(
            f"only {free / 1e6:.1f} MB free under {out}, a checkpoint of this model needs about "
            f"{need / 1e6:.1f} MB: free some space or choose another --out"
        )


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def save_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))
