"""MNIST and Fashion-MNIST as arrays: load the canonical split, scale, reshape, split off validation, batch.

images, labels = load_mnist("train")          # (60000, 28, 28) uint8, (60000,) uint8
x = as_flat(to_float(images, xp))              # (60000, 784) float32 in [0, 1], on the backend xp
x_tr, y_tr, x_val, y_val = train_val_split(x, labels)   # last 20 % is validation (Keras validation_split)
for idx in batch_indices(len(x_tr), 128, rng):          # one permutation per epoch
    xb = x_tr[idx]                                       # (<=128, 784)
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from tqdm import tqdm

from minivae.backend import resolve_dtype, to_device
from minivae.data.idx import DataError, parse_idx, read_idx
from minivae.data.sources import (
    FILES,
    dataset_dir,
    fetch,
    get_spec,
    read_verified,
    stamped_files,
    verify_cache,
)

SPLITS = {"train": (FILES[0], FILES[1]), "test": (FILES[2], FILES[3])}
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10


def _check_pair(images: np.ndarray, labels: np.ndarray, image_file: str, label_file: str) -> None:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 in 0..9, or a DataError naming the file."""
    fix = "Delete the file and fetch again (`minivae data fetch`)."
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{image_file}: wrong dimensions: expected (N, 28, 28) uint8 images, "
            f"got {images.shape} {images.dtype}. {fix}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{label_file}: expected (N,) uint8 labels, got {labels.shape} {labels.dtype}. {fix}")
    if len(images) != len(labels):
        raise DataError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels: "
            f"the counts must match. The two files come from different sets or one is damaged. {fix}"
        )
    if len(labels) and labels.max() >= N_CLASSES:
        raise DataError(f"{label_file}: labels out of range: expected 0..9, got a {labels.max()}. {fix}")


def _cached_paths(dataset: str, root: Any, source: Any, download: bool) -> tuple[dict[str, Path], Path]:
    """The four files' paths in the cache (fetched first when missing and `download`), and the directory."""
    spec = get_spec(dataset)
    d = dataset_dir(dataset, root)
    paths = stamped_files(spec, d)  # verified before, unchanged since (load_mnist still hashes what it reads)
    if paths is None:
        if download:
            fetch(dataset, root, source, progress=True)
            paths = stamped_files(spec, d)
        if paths is None:  # download=False, or a read-only cache where the stamp cannot be written
            paths, notes = verify_cache(spec, d, repair=True)  # a bad file is moved aside, never read
            if len(paths) < len(FILES):
                raise DataError(
                    f"{dataset} is not (all) in the cache {d}: {'; '.join(notes)}. Run "
                    f"`minivae data fetch --dataset {dataset}` or call load_mnist(..., download=True)."
                )
    return paths, d


def _read_checked(dataset: str, d: Path, paths: dict[str, Path], names: tuple[str, ...]):
    """({name: array}, []) when every file's content matches its MD5, else ({}, notes on the failures)."""
    spec, arrays, notes = get_spec(dataset), {}, []
    for name in names:
        data, note = read_verified(spec, d, name, paths[name])
        if data is None:
            notes.append(note)
        elif not notes:
            arrays[name] = parse_idx(data, str(paths[name]))
        del data
    return ({}, notes) if notes else (arrays, [])


def load_mnist(
    split: str = "train",
    dataset: str = "mnist",
    root: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The canonical MNIST (or Fashion-MNIST) split as NumPy arrays.

    Returns images (N, 28, 28) uint8 and labels (N,) uint8, N = 60000 for "train", 10000 for "test".
    root: None -> $MINIVAE_DATA, else the user cache directory; files live in <root>/<dataset>/.
    source: a directory or file to take the files from (see minivae.data.sources) when the cache lacks them.
    download: False -> use the cache only (verified files), never fetch.
    verify: True (the default) -> the MD5 of the content read is checked every time, whatever the stamp
    says (about 0.1 s for the training split); a file that fails is moved aside, said in one line, and
    fetched again. False -> trust the stamp (size and mtime), for callers that only look, not train.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose 'train' or 'test'.")
    image_file, label_file = SPLITS[split]
    paths, d = _cached_paths(dataset, root, source, download)
    if verify:
        arrays, notes = _read_checked(dataset, d, paths, SPLITS[split])
        if notes:
            again = "; fetching it again" if download else ""
            for note in notes:
                tqdm.write(f"minivae: {d}: {note}{again}", file=sys.stderr)
            if not download:
                raise DataError(
                    f"{dataset} in the cache {d} failed its check: {'; '.join(notes)}. Run "
                    f"`minivae data fetch --dataset {dataset}` or call load_mnist(..., download=True)."
                )
            paths, d = _cached_paths(dataset, root, source, download)
            arrays, notes = _read_checked(dataset, d, paths, SPLITS[split])
            if notes:
                raise DataError(f"{dataset}: a fresh copy failed its check too: {'; '.join(notes)}.")
        images, labels = arrays[image_file], arrays[label_file]
    else:
        images, labels = read_idx(paths[image_file]), read_idx(paths[label_file])
    _check_pair(images, labels, str(paths[image_file]), str(paths[label_file]))
    return images, labels


def to_float(images: Any, xp: ModuleType = np, dtype: str | np.dtype = "float32") -> Any:
    """uint8 pixels -> pixels / 255 in [0, 1], as `dtype` on the backend xp.  Shape unchanged.

    The uint8 array crosses to the device first (4x less to copy than float32), then is scaled there.
    """
    d = resolve_dtype(dtype)
    x = to_device(images, xp)
    return x.astype(d) / d.type(255)


def as_nchw(x: Any) -> Any:
    """(N, 28, 28) or (N, 784) -> (N, 1, 28, 28), a view where possible."""
    if x.size != x.shape[0] * 784:
        raise ValueError(f"expected N images of 28x28 = 784 pixels, got shape {x.shape}")
    return x.reshape(x.shape[0], 1, *IMAGE_SHAPE)


def as_flat(x: Any) -> Any:
    """(N, 28, 28) or (N, 1, 28, 28) -> (N, 784), a view where possible."""
    if x.size != x.shape[0] * 784:
        raise ValueError(f"expected N images of 28x28 = 784 pixels, got shape {x.shape}")
    return x.reshape(x.shape[0], 784)


def train_val_split(images: Any, labels: Any, val_fraction: float = 0.2) -> tuple[Any, Any, Any, Any]:
    """Hold out the last `val_fraction` of the set, unshuffled, as Keras' validation_split does.

    images (N, ...), labels (N,) -> x_train (n_tr, ...), y_train (n_tr,), x_val (N - n_tr, ...), y_val, with
    n_tr = floor(N * (1 - val_fraction)): 48,000 / 12,000 for MNIST's training set at the default 0.2.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    n_tr = int(math.floor(len(images) * (1.0 - val_fraction)))
    return images[:n_tr], labels[:n_tr], images[n_tr:], labels[n_tr:]


def batch_indices(
    n: int, batch_size: int, rng: np.random.Generator, shuffle: bool = True
) -> list[np.ndarray]:
    """Mini-batch index arrays covering 0..n-1 once, from one permutation drawn from `rng`.

    Returns ceil(n / batch_size) int arrays of batch_size indices (the last may be shorter); in order when
    shuffle is False. Index the data with them: x[idx] -> (batch_size, ...).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = rng.permutation(n) if shuffle else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
