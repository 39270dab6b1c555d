"""The IDX file format (LeCun's MNIST format), read and written, raw or gzip-compressed.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the array in C order::

    magic = 0x00 0x00 <type code> <ndim>         type code: 0x08 uint8, 0x09 int8, 0x0B int16,
    dims  = ndim x uint32 (big-endian)                      0x0C int32, 0x0D float32, 0x0E float64
    data  = prod(dims) items, big-endian

MNIST's ``train-images-idx3-ubyte`` is (60000, 28, 28) uint8 (magic 0x00000803); its labels file is (60000,)
uint8 (magic 0x00000801). A file is read as gzip when it starts with the gzip magic bytes, whatever its name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from minivae.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian dtype, and back.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_CODES = {(d.kind, d.itemsize): code for code, d in IDX_DTYPES.items()}


# mkstemp makes files 0600; finished files get the usual mode (0666 less the umask), like open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


def set_default_mode(path: str | os.PathLike) -> None:
    """chmod a file to 0666 & ~umask (what open() would have created)."""
    os.chmod(path, 0o666 & ~_UMASK)


class DataError(UserError):
    """A data file or directory is missing, corrupt or unreachable; the message names it and the fix."""


class CorruptFileError(DataError):
    """A file's content is damaged (truncated or corrupt gzip), as opposed to unreadable."""


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes (1f 8b)."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_uncompressed(path: str | os.PathLike) -> bytes:
    """The file's content, gunzipped when it is gzip; a truncated or corrupt gzip is a DataError."""
    path = Path(path)
    try:
        if not is_gzip(path):
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise CorruptFileError(
            f"{path}: corrupt or truncated gzip file ({type(e).__name__}: {e}). Delete it and fetch it "
            "again (`minivae data fetch`), or replace it with a good copy."
        ) from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e}). Check that the file exists and is readable.") from e


def md5_hex(data: bytes) -> str:
    """MD5 of the bytes, as 32 hex digits (checksums here are over the uncompressed content)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes into an array in native byte order; `name` is used in errors.

    Returns an array of shape dims and the file's dtype (uint8, int8, int16, int32, float32 or float64).
    """
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes, too short for an IDX header (4 bytes at least).")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in IDX_DTYPES:
        raise DataError(
            f"{name}: wrong IDX magic number: expected 00 00 <type> <ndim> with type one of "
            f"{', '.join(f'{c:#04x}' for c in IDX_DTYPES)}, got {data[:4].hex(' ')}. This is not an IDX "
            "file (or it is still compressed by something other than gzip); replace it with a good copy."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header: {ndim} dims need {header} bytes, got {len(data)}.")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{name}: size does not match its IDX header: dims {dims} of {dtype.name} need {expected} "
            f"bytes, got {len(data)} ({'truncated' if len(data) < expected else 'trailing bytes'}). "
            "Delete it and fetch it again."
        )
    a = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return a.astype(dtype.newbyteorder("="), copy=True)  # native order, writeable, owns its memory


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into an array of its stored shape and dtype, native byte order."""
    return parse_idx(read_uncompressed(path), str(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as uncompressed IDX bytes (dtype uint8, int8, int16, int32, float32 or float64)."""
    a = np.asarray(array)
    code = IDX_CODES.get((a.dtype.kind, a.dtype.itemsize))
    if code is None:
        names = ", ".join(d.name for d in IDX_DTYPES.values())
        raise ValueError(f"IDX cannot store dtype {a.dtype}: use one of {names}")
    if a.ndim > 255 or any(d >= 2**32 for d in a.shape):
        raise ValueError(f"IDX cannot store shape {a.shape}: at most 255 dims, each below 2**32")
    head = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
    return head + np.ascontiguousarray(a, IDX_DTYPES[code]).tobytes()


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for writing; on success it replaces `path` in one step.

    On any error the temporary file is removed, so a half-written file never appears under the final name.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write `array` as an IDX file, atomically; gzip-compressed when the name ends in .gz."""
    path = Path(path)
    data = idx_bytes(array)
    with atomic_write(path) as f:
        if path.suffix == ".gz":
            # mtime=0: the same array always gives the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(data)
        else:
            f.write(data)
    return path
