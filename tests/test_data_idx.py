"""IDX read/write: round trips over shapes and dtypes, raw and gzip, and every malformed-file case."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minivae.data.idx import (
    CorruptFileError,
    DataError,
    atomic_write,
    idx_bytes,
    parse_idx,
    read_idx,
    read_uncompressed,
    write_idx,
)

DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6))
)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes (so NaNs and -0.0 count as equal to themselves)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@given(arrays)
def test_round_trip_in_memory(a):
    assert same(parse_idx(idx_bytes(a)), a)


@settings(max_examples=40, deadline=None)
@given(arrays, st.booleans())
def test_round_trip_file(a, gz):
    with tempfile.TemporaryDirectory() as d:
        path = write_idx(Path(d) / ("a.idx.gz" if gz else "a.idx"), a)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
        b = read_idx(path)
        assert same(b, a) and b.flags.writeable
        assert [p.name for p in Path(d).iterdir()] == [path.name]  # no temporary file left behind


def test_big_endian_input_and_mnist_header():
    a = np.arange(6, dtype=">i4").reshape(2, 3)
    assert same(parse_idx(idx_bytes(a)), a.astype("=i4"))
    images = np.zeros((2, 28, 28), np.uint8)
    assert idx_bytes(images)[:16] == bytes.fromhex("00000803 00000002 0000001c 0000001c")
    assert idx_bytes(np.zeros(5, np.uint8))[:8] == bytes.fromhex("00000801 00000005")


def test_gzip_is_detected_by_content_not_name(tmp_path):
    a = np.arange(10, dtype=np.uint8)
    p = tmp_path / "labels"  # no .gz suffix
    p.write_bytes(gzip.compress(idx_bytes(a)))
    assert same(read_idx(p), a)


def test_unsupported_dtype_is_refused():
    with pytest.raises(ValueError, match="cannot store dtype"):
        idx_bytes(np.zeros(3, np.uint16))


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x00\x00", "too short"),
        (b"\x08\x03\x00\x00" + bytes(12), "wrong IDX magic"),  # bytes out of order
        (b"\x00\x00\x07\x01" + bytes(8), "wrong IDX magic"),  # unknown type code
        (b"PK\x03\x04" + bytes(12), "wrong IDX magic"),  # a zip, not IDX
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    ],
)
def test_bad_header(data, match):
    with pytest.raises(DataError, match=match):
        parse_idx(data, "x.idx")


def test_truncated_and_trailing_data(tmp_path):
    good = idx_bytes(np.ones((3, 28, 28), np.uint8))
    for data, word in ((good[:-1], "truncated"), (good + b"\x00", "trailing bytes")):
        p = tmp_path / "images"
        p.write_bytes(data)
        with pytest.raises(DataError, match=rf"{p}: size does not match .* \(3, 28, 28\).*{word}"):
            read_idx(p)


def test_truncated_gzip(tmp_path):
    p = tmp_path / "images.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))[:-20])
    with pytest.raises(CorruptFileError, match=rf"{p}: corrupt or truncated gzip.*fetch it again"):
        read_idx(p)


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32))))
    data[20:40] = bytes(20)  # damage the deflate stream
    p = tmp_path / "images.gz"
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="corrupt or truncated gzip"):
        read_uncompressed(p)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(p) as f:
        f.write(b"half a new fi")
        raise RuntimeError("interrupted")
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["f"]
