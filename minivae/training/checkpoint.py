"""Checkpoints: one .npz file of plain arrays (np.load with allow_pickle=False), no pickle anywhere.

Layout inside the .npz:
    model/<param name>      the weights, e.g. model/encoder.0.weight
    optim/<buffer name>     the optimizer's state, e.g. optim/fc_mu.weight.exp_avg, optim/t
    __meta__                UTF-8 JSON as uint8: format version, config, training counters, history,
                            and a SHA-256 over every array's name, dtype, shape and bytes.

Written to a temporary file in the same directory, flushed, then renamed over the target: a reader
sees the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from minivae.errors import UserError

FORMAT = "minivae-checkpoint"
VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that cannot be used: the message says which file, what is wrong, and what to do."""


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    model_state: dict[str, np.ndarray],
    optim_state: dict[str, np.ndarray],
    meta: dict[str, Any],
) -> Path:
    """Write model and optimizer state plus JSON-able meta to `path` atomically."""
    path = Path(path)
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in optim_state.items()})
    full_meta = {"format": FORMAT, "version": VERSION, "sha256": _digest(arrays), **meta}
    arrays["__meta__"] = np.frombuffer(json.dumps(full_meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write checkpoint {path}: {e.strerror or e}. Free some disk space or choose another "
            "--out; the previous checkpoint there, if any, is unchanged."
        ) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """(model_state, optim_state, meta) from a checkpoint, after checking its format and checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(
            f"{path} is not a readable minivae checkpoint (truncated or not an .npz: {e}). "
            "Use another checkpoint of the run (best.npz / last.npz) or train again."
        ) from e
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path} is an .npz but not a minivae checkpoint (no __meta__ record)")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: its metadata is corrupt ({e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a minivae checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {meta.get('version')}, this minivae reads version {VERSION}"
        )
    if _digest(arrays) != meta.get("sha256"):
        raise CheckpointError(
            f"{path} fails its checksum: its arrays were changed or damaged after it was written. "
            "Use another checkpoint of the run or train again."
        )
    model = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
    return model, optim, meta


def describe_mismatch(model_state: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]]) -> str:
    """A sentence listing what differs between a checkpoint's weights and a model's parameters."""
    parts = []
    missing, extra = sorted(set(expected) - set(model_state)), sorted(set(model_state) - set(expected))
    if missing:
        parts.append(f"the model has parameters the checkpoint lacks: {', '.join(missing[:5])}")
    if extra:
        parts.append(f"the checkpoint has parameters the model lacks: {', '.join(extra[:5])}")
    for k in sorted(set(expected) & set(model_state)):
        if tuple(model_state[k].shape) != tuple(expected[k]):
            parts.append(
                f"{k} is {tuple(model_state[k].shape)} in the checkpoint, {tuple(expected[k])} in the model"
            )
    return "; ".join(parts)


def bytes_of(model_state: dict[str, np.ndarray]) -> int:
    """Roughly how many bytes a checkpoint of this model (weights + Adam's two buffers) takes."""
    return 3 * sum(v.nbytes for v in model_state.values()) + io.DEFAULT_BUFFER_SIZE
