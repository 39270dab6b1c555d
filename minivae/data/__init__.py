"""MNIST and Fashion-MNIST: verified, cached, offline-friendly loading, and the array helpers for training.

from minivae.data import load_mnist, to_float, as_flat, train_val_split, batch_indices
images, labels = load_mnist("train")      # (60000, 28, 28) uint8, (60000,) uint8
"""

from minivae.data.idx import DataError, read_idx, write_idx
from minivae.data.mnist import as_flat, as_nchw, batch_indices, load_mnist, to_float, train_val_split
from minivae.data.sources import DATASETS, FILES, data_info, default_root, fetch

__all__ = [
    "DATASETS",
    "FILES",
    "DataError",
    "as_flat",
    "as_nchw",
    "batch_indices",
    "data_info",
    "default_root",
    "fetch",
    "load_mnist",
    "read_idx",
    "to_float",
    "train_val_split",
    "write_idx",
]
