"""Checkpoints: one .npz file of plain arrays (np.load with allow_pickle=False), no pickle anywhere.

Layout inside the .npz:
    model/<param name>      the weights, e.g. model/encoder.0.weight
    optim/<buffer name>     the optimizer's state, e.g. optim/fc_mu.weight.exp_avg, optim/t
    __meta__                UTF-8 JSON as uint8: format version, config, training counters, history,
                            and a SHA-256 over every array's name, dtype, shape and bytes and (from
                            version 2) over the rest of the metadata itself, in canonical JSON.

Reading checks, before any array is read: that every member is stored (not compressed) and that the
size its .npy header declares fits in the member, so a forged header cannot ask for gigabytes.
Version 1 files (checksum over the arrays only) are still read; their metadata is then held only by
the structural checks (check_run_meta). check_model_state / check_optim_state / check_run_meta
compare a checkpoint with the model, optimizer and run it is meant for: names, shapes, dtypes,
finiteness, the step counter, the run-state keys and the config (TrainConfig's own checks).

Written to a temporary file in the same directory, flushed, then renamed over the target: a reader
sees the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from minivae.errors import UserError

FORMAT = "minivae-checkpoint"
VERSION = 2
READABLE = (1, 2)  # version 1: the checksum covers the arrays only


class CheckpointError(UserError):
    """A checkpoint that cannot be used: the message says which file, what is wrong, and what to do."""


def _digest(arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> str:
    """SHA-256 over the arrays and, when given (version 2), the metadata without its sha256 entry."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    if meta is not None:
        rest = {k: v for k, v in meta.items() if k != "sha256"}
        h.update(b"__meta__|" + json.dumps(rest, sort_keys=True).encode())
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
    full_meta = {**meta, "format": FORMAT, "version": VERSION}
    full_meta["sha256"] = _digest(arrays, full_meta)
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


def check_member_sizes(path: Path) -> None:
    """Refuse, before reading any array, a member whose .npy header declares more bytes than it holds
    (a forged or damaged header would otherwise make np.load allocate the declared size first)."""
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                raise CheckpointError(
                    f"{path}: member {info.filename} is compressed or larger than the file "
                    f"({info.file_size} bytes declared, file {size} bytes): not written by minivae, or "
                    "damaged. Use another checkpoint of the run or train again."
                )
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                header = f.tell()
            if dtype.hasobject:
                raise CheckpointError(f"{path}: member {info.filename} holds Python objects (refused)")
            declared = math.prod(int(n) for n in shape) * dtype.itemsize
            if declared > info.file_size - header:
                raise CheckpointError(
                    f"{path}: member {info.filename}'s header declares shape {tuple(shape)} of {dtype} "
                    f"({declared:,} bytes), but the member holds only {info.file_size - header:,} bytes of "
                    "data: the file is damaged. Use another checkpoint of the run or train again."
                )


def load_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """(model_state, optim_state, meta) from a checkpoint, after checking its format and checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        check_member_sizes(path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as e:
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
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{path}: its metadata is corrupt (a JSON {type(meta).__name__}, not an object)"
        )
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a minivae checkpoint (format {meta.get('format')!r})")
    version = meta.get("version")
    if version not in READABLE:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, this minivae reads version "
            f"{' and '.join(map(str, READABLE))}"
        )
    if _digest(arrays, meta if version >= 2 else None) != meta.get("sha256"):
        what = "its arrays or metadata" if version >= 2 else "its arrays"
        raise CheckpointError(
            f"{path} fails its checksum: {what} were changed or damaged after it was written. "
            "Use another checkpoint of the run or train again."
        )
    model = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
    return model, optim, meta


def _array_problem(name: str, a: np.ndarray, shape: tuple[int, ...], dtype: Any) -> str:
    """'' when array `a` has the shape and dtype wanted and is finite, else what is wrong with it."""
    if tuple(a.shape) != tuple(shape):
        return f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}"
    if a.dtype != np.dtype(dtype):
        return f"{name} has dtype {a.dtype}, expected {np.dtype(dtype)} (the run's dtype)"
    if not np.isfinite(a).all():
        n = int(a.size - np.count_nonzero(np.isfinite(a)))
        return f"{name} has {n} non-finite (NaN/Inf) value{'s' * (n != 1)}"
    return ""


def check_model_state(
    path: Path, model_state: dict[str, np.ndarray], expected: dict[str, tuple[tuple[int, ...], Any]]
) -> None:
    """Refuse weights that are not exactly the model's parameters: names, shapes, dtype, finite values.
    expected: {name: (shape, dtype)}."""
    problem = describe_mismatch(model_state, {k: shape for k, (shape, _) in expected.items()})
    if not problem:
        problem = "; ".join(
            p
            for k, (shape, dtype) in expected.items()
            if (p := _array_problem(k, model_state[k], shape, dtype))
        )
    if problem:
        raise CheckpointError(
            f"{path} does not fit this model: {problem}. Use another checkpoint of the run or train again."
        )


def check_optim_state(
    path: Path,
    optim_state: dict[str, np.ndarray],
    expected: dict[str, tuple[tuple[int, ...], Any]],
    buffers: tuple[str, ...],
) -> None:
    """Refuse optimizer state that does not fit: the step counter `t` (a whole number >= 0), and for
    every parameter each of `buffers` (Adam: exp_avg, exp_avg_sq), with the parameter's shape and dtype.
    The buffers may all be absent only before the first step (t == 0)."""
    where = f"{path}: its optimizer state"
    t = optim_state.get("t")
    if t is None:
        raise CheckpointError(f"{where} has no step counter optim/t")
    if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
        raise CheckpointError(
            f"{where}: optim/t is {t.dtype} of shape {t.shape}, expected a whole number >= 0 (shape ())"
        )
    want = {f"{k}.{b}": (shape, dtype) for k, (shape, dtype) in expected.items() for b in buffers}
    have = set(optim_state) - {"t"}
    extra = sorted(have - set(want))
    if extra:
        raise CheckpointError(f"{where} has entries this optimizer lacks: {', '.join(extra[:5])}")
    missing = sorted(set(want) - have)
    if missing and (have or int(t) > 0):
        raise CheckpointError(f"{where} lacks {', '.join(missing[:5])} (at step t = {int(t)})")
    problem = "; ".join(
        p for k in sorted(have) if (p := _array_problem(f"optim/{k}", optim_state[k], *want[k]))
    )
    if problem:
        raise CheckpointError(f"{where} does not fit this model: {problem}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# RunState's fields as a checkpoint stores them: a test each, and what it should be
_COUNT = (lambda v: _is_int(v) and v >= 0, "a whole number >= 0")
STATE_TYPES: dict[str, tuple[Any, str]] = {
    "epoch": _COUNT,
    "batch": _COUNT,
    "step": _COUNT,
    "bad_epochs": _COUNT,
    "skipped": _COUNT,
    "best_val": (lambda v: _is_num(v) and not math.isnan(v), "a number (inf before any validation)"),
    "seconds": (lambda v: _is_num(v) and math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "sums": (
        lambda v: isinstance(v, list) and len(v) == 4 and all(_is_num(x) for x in v),
        "a list of 4 numbers",
    ),
    "alive": (
        lambda v: (
            v is None or isinstance(v, bool) or (isinstance(v, list) and all(isinstance(x, bool) for x in v))
        ),
        "null, true/false or a list of true/false",
    ),
}


def check_run_meta(path: Path, meta: dict[str, Any], state_fields: tuple[str, ...] | None = None) -> Any:
    """Check a run checkpoint's metadata: `config` (TrainConfig.from_dict + validate, each error naming
    the file), `state` (the RunState fields `state_fields`, each of its type) and `history` (a list of
    rows). Returns the validated TrainConfig."""
    from minivae.training.config import TrainConfig

    missing = [k for k in ("config", "state", "history") if k not in meta]
    if missing:
        raise CheckpointError(
            f"{path}: its metadata lacks {', '.join(missing)}: not a checkpoint of a minivae run "
            "(or damaged). Use another checkpoint of the run or train again."
        )
    if not isinstance(meta["config"], dict):
        raise CheckpointError(f"{path}: its config is a JSON {type(meta['config']).__name__}, not an object")
    try:
        cfg = TrainConfig.from_dict(meta["config"]).validate()
    except UserError as e:
        raise CheckpointError(f"{path}: its config is invalid: {e}") from e
    state = meta["state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its run state is a JSON {type(state).__name__}, not an object")
    names = set(state_fields) if state_fields is not None else set(STATE_TYPES)
    missing, extra = sorted(names - set(state)), sorted(set(state) - names)
    if missing or extra:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has unknown entries {', '.join(extra)}"] if extra else []
        )
        raise CheckpointError(f"{path}: its run state {' and '.join(parts)}")
    for k in sorted(names & set(STATE_TYPES)):
        ok, what = STATE_TYPES[k]
        if not ok(state[k]):
            raise CheckpointError(f"{path}: its run state's {k} is {state[k]!r}, expected {what}")
    history = meta["history"]
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"{path}: its history is not a list of rows (JSON objects)")
    if len(history) != state["epoch"]:
        raise CheckpointError(
            f"{path}: its history has {len(history)} rows but its run state says {state['epoch']} epochs ran"
        )
    return cfg


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
