"""The run directory: what a run writes there, and the checks before it writes anything.

config.json   the TrainConfig            history.csv   one row per epoch (HISTORY_FIELDS)
last.npz      the latest checkpoint      best.npz      the best validation loss so far
metrics.json, per_digit.csv, report.md and the figures: written by minivae.analysis.report
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from minivae.errors import UserError
from minivae.models import VAE
from minivae.training.checkpoint import bytes_of

HISTORY_FIELDS = [
    "epoch", "step", "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl",
    "beta", "capacity", "effective_beta", "lr", "alive_units", "threads", "seconds",
]  # fmt: skip
# read_history takes whatever columns a file has: a history.csv without the lr or threads column reads too


LOCK = ".lock"  # held (fcntl.flock) by the one process writing the directory; records its PID and command
STALE_TMP = (".*.tmp", "config.tmp", "history.tmp", "metrics.tmp")  # what a cut atomic write leaves


class RunDir:
    """A run directory held by this process: the exclusive lock on its .lock file, for the life of the run.

    `created` says whether this process made the directory and `created_lock` the lock file, so that a run
    that fails before it has written anything can take away exactly what it made (discard)."""

    def __init__(self, out: Path, fd: int, created: bool, created_lock: bool) -> None:
        self.out, self.fd, self.created, self.created_lock = out, fd, created, created_lock

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1

    def remove_stale_tmp(self) -> None:
        """Remove the temporary files an interrupted atomic write (checkpoint, history, json) left behind."""
        for pattern in STALE_TMP:
            for p in self.out.glob(pattern):
                if p.is_file():
                    p.unlink(missing_ok=True)

    def discard(self, written: list[str], keep_dir: bool = False) -> str:
        """Undo a run that failed before its first checkpoint: remove the files it wrote (names in
        `written`), its lock file if it made it, and the directory if it made it and it is empty now.
        Returns what was done, for the error message."""
        for name in written:
            (self.out / name).unlink(missing_ok=True)
        if self.created_lock:
            (self.out / LOCK).unlink(missing_ok=True)  # still locked: a process that opened it re-checks
        self.release()
        if self.created and not keep_dir:
            try:
                self.out.rmdir()
                return f"nothing was kept: {self.out} was removed"
            except OSError:
                pass
        if self.created:
            return f"nothing was kept: {self.out} was left empty, a retry may use the same --out"
        return (
            f"nothing was kept: {self.out} was left as it was before this run, a retry may use the same --out"
        )


HELD: dict[Path, RunDir] = {}  # locks train(keep_lock=True) left held, for its caller to release


def release_held(out: Path) -> None:
    """Drop the lock train(keep_lock=True) kept on run directory `out` (nothing if none is held)."""
    run = HELD.pop(Path(out), None)
    if run is not None:
        run.release()


def _holder(path: Path) -> str:
    """`PID n (command line)` from a lock file, as its holder wrote it."""
    lines: list[str] = []
    for _ in range(20):  # the holder writes its PID just after it takes the lock
        try:
            lines = path.read_text().splitlines()
        except OSError:
            lines = []
        if lines:
            break
        time.sleep(0.01)
    pid = lines[0] if lines else "?"
    cmd = lines[1] if len(lines) > 1 else "unknown command"
    return f"PID {pid} ({cmd})"


def _occupied(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name != LOCK)


def _cannot_write(out: Path, e: OSError) -> UserError:
    return UserError(f"cannot write to the output directory {out}: {e.strerror or e}; choose another --out")


def _make_dir(out: Path) -> bool:
    """Make the run directory if it is not there; True when this call made it."""
    try:
        if not out.is_dir():
            out.mkdir(parents=True)
            return True
    except FileExistsError:
        if not out.is_dir():
            raise UserError(f"--out {out} is a file, not a directory: choose another --out") from None
    except OSError as e:
        raise _cannot_write(out, e) from e
    return False


def _open_lock(path: Path, out: Path) -> tuple[int, bool] | None:
    """(file descriptor, whether this call created it) of the lock file; None when it vanished between
    the two opens (a failing run removed it: try again)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        try:
            return os.open(path, os.O_RDWR), False
        except FileNotFoundError:
            return None
    except OSError as e:
        raise _cannot_write(out, e) from e


def lock_run_dir(out: Path, resume: bool) -> RunDir:
    """Take the run directory for this process: make it (a new run) and hold the exclusive lock on its
    .lock file. Refuses, with one line, a directory another process holds (naming its PID and command),
    one that already holds files (a new run), one without last.npz (a resume), and a path that is a file."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory: choose another --out")
    if resume and not (out / "last.npz").is_file():
        raise UserError(f"--resume {out}: no last.npz there to resume from")
    if not resume and out.is_dir() and _occupied(out):  # before making anything there (not even .lock)
        raise _already_holds(out)
    for _ in range(5):  # again only when a failing run removed the lock file between our open and lock
        created = _make_dir(out)
        path = out / LOCK
        opened = _open_lock(path, out)
        if opened is None:
            continue
        fd, created_lock = opened
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(
                f"{out} is in use by another minivae run, {_holder(path)}: nothing was changed; wait for it "
                "to finish, or choose another --out"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:  # the lock file we hold was removed (a run that failed cleaning up): take the new one
            os.close(fd)
            continue
        run = RunDir(out, fd, created, created_lock)
        if not resume and _occupied(out):  # another run made the directory and finished before we locked
            run.release()
            raise _already_holds(out)
        if resume and not (out / "last.npz").is_file():
            run.release()
            raise UserError(f"--resume {out}: no last.npz there to resume from")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{shlex.join(sys.argv)}\n".encode(), 0)
        return run
    raise UserError(f"{out} is being created and removed by other processes: choose another --out")


def _already_holds(out: Path) -> UserError:
    return UserError(
        f"{out} already holds files (a previous run?). Nothing was changed: choose another --out, "
        f"or continue that run with: minivae train --resume {out}"
    )


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
