"""``cifar10:PATH``: the official CIFAR-10 python batches, read with a restricted unpickler.

PATH is either a directory holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (or a directory
holding ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``), or the ``cifar-10-python.tar.gz`` tarball
itself, whose members are read in memory (nothing is extracted to disk).

Each batch is a dict pickled by Python 2 (protocol 2): ``data`` uint8 (N, 3072), each row the 32x32 image in
row-major CHW order (1024 red, 1024 green, 1024 blue), and ``labels`` a list of N ints in 0..9. It is loaded
with ``encoding="bytes"`` through :class:`RestrictedUnpickler`, which resolves only the three numpy globals
that a pickled ndarray needs and refuses every other global (so a pickle whose reduce calls ``os.system`` is
refused before anything runs).

Nothing is downloaded unless asked: :func:`download_cifar10` fetches the official archive and checks its md5.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile

import numpy as np

from flatkit.errors import FlatkitError, UsageError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCHES_DIR = "cifar-10-batches-py"
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _numpy_reconstruct():
    try:  # numpy >= 2 keeps it in numpy._core; numpy.core is a deprecated alias there
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


#: (module, name) -> object: exactly what a pickled numpy array needs, under its numpy 1 and numpy 2 names.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RefusedPickle(pickle.UnpicklingError):
    """A pickle asked for something a CIFAR-10 batch never needs (a foreign global, a persistent id)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ``numpy.(_)core.multiarray._reconstruct``, ``numpy.ndarray`` and
    ``numpy.dtype``; any other global raises :class:`RefusedPickle` before anything is called."""

    def find_class(self, module: str, name: str):
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise RefusedPickle(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return factory()

    def persistent_load(self, pid):
        raise RefusedPickle("persistent ids are not allowed in a CIFAR-10 batch")


def _get(d: dict, key: str):
    return d[key.encode()] if key.encode() in d else d.get(key)


def unpickle_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch's bytes -> (images uint8 NHWC (N, 32, 32, 3), labels int64 (N,)); ``name`` is for errors."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RefusedPickle as e:
        raise UsageError(f"{name}: refused to unpickle: {e}") from None
    except Exception as e:  # truncated or foreign: UnpicklingError, EOFError, ValueError, MemoryError, ...
        raise UsageError(f"{name}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{name}: not a CIFAR-10 python batch (a {type(obj).__name__}, not a dict)")
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UsageError(f"{name}: 'data' is not a uint8 (N, 3072) array")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: 'labels' is not a list of integers") from None
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise UsageError(f"{name}: 'labels' must be {data.shape[0]} integers in 0..9")
    # row-major CHW rows -> NHWC
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


# ------------------------------------------------------------------------------------------ where batches are
def _batches_in(directory: str, names: list[str]) -> bool:
    return all(os.path.isfile(os.path.join(directory, n)) for n in names)


def _locate(path: str, split: str) -> tuple[str, str]:
    """-> ("dir", directory) or ("tar", archive); UsageError naming ``path`` when neither holds the split."""
    names = SPLITS[split]
    if os.path.isfile(path):
        return "tar", path
    if not os.path.isdir(path):
        raise UsageError(
            f"{path}: no such file or directory (cifar10 expects the batches directory or {ARCHIVE_NAME})"
        )
    for d in (path, os.path.join(path, BATCHES_DIR)):
        if _batches_in(d, names):
            return "dir", d
    archive = os.path.join(path, ARCHIVE_NAME)
    if os.path.isfile(archive):
        return "tar", archive
    missing = [n for n in names if not os.path.isfile(os.path.join(path, n))]
    raise UsageError(f"{path}: no CIFAR-10 {split} batches (missing {', '.join(missing)})")


def _read_dir(directory: str, names: list[str]) -> list[tuple[bytes, str]]:
    out = []
    for n in names:
        f = os.path.join(directory, n)
        try:
            with open(f, "rb") as fh:
                out.append((fh.read(), f))
        except OSError as e:
            raise UsageError(f"{f}: cannot read ({e.strerror or e})") from None
    return out


def _read_tar(archive: str, names: list[str]) -> list[tuple[bytes, str]]:
    found: dict[str, tuple[bytes, str]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if base in names and base not in found and member.isfile():
                    fh = tar.extractfile(member)
                    found[base] = (fh.read(), f"{archive}:{member.name}")
    except (tarfile.TarError, EOFError, OSError, ValueError, struct.error) as e:
        raise UsageError(
            f"{archive}: not a readable CIFAR-10 tar archive ({type(e).__name__}: {e})"
        ) from None
    missing = [n for n in names if n not in found]
    if missing:
        raise UsageError(f"{archive}: archive lacks CIFAR-10 batches {', '.join(missing)}")
    return [found[n] for n in names]


def load_cifar10(path: str, split: str = "train", *, download: bool = False, root: str | None = None):
    """Read a CIFAR-10 split -> (images uint8 NHWC, labels int64).

    With ``download=True`` and nothing at ``path``, the official archive is first fetched into ``root``
    (default: ``path`` itself, or its directory when ``path`` names a ``.tar.gz``) and read from there.
    """
    if split not in SPLITS:
        raise UsageError(f"cifar10:{path}: split {split!r} not one of {', '.join(SPLITS)}")
    if download and not os.path.exists(path):
        is_archive = path.endswith((".tar.gz", ".tgz"))
        root = root or (os.path.dirname(path) or "." if is_archive else path)
        path = download_cifar10(root)
    kind, where = _locate(path, split)
    names = SPLITS[split]
    raws = _read_dir(where, names) if kind == "dir" else _read_tar(where, names)
    parts = [unpickle_batch(raw, name) for raw, name in raws]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --------------------------------------------------------------------------------------------------- download
def md5_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_cifar10(root: str, *, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> str:
    """Fetch the official archive into ``root/cifar-10-python.tar.gz`` (temp file, md5 check, then rename).

    An archive already there with the right md5 is reused. Only called when the user asks for a download.
    """
    import urllib.request

    os.makedirs(root, exist_ok=True)
    dest = os.path.join(root, ARCHIVE_NAME)
    if os.path.isfile(dest) and md5_file(dest) == md5:
        return dest
    tmp = f"{dest}.part{os.getpid()}"
    h = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
        if h.hexdigest() != md5:
            raise FlatkitError(
                f"{url}: md5 {h.hexdigest()} differs from the expected {md5}; download refused"
            )
        os.replace(tmp, dest)
    except OSError as e:
        raise FlatkitError(f"{url}: download failed ({e})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


# ------------------------------------------------------------------------------- writing (tests and fixtures)
class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes what Python 2 wrote: byte strings as (SHORT_)BINSTRING and numpy's
    globals under their numpy 1 names, so a fake batch has the structure of the official files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_str8(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(raw)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8

    def save_global(self, obj, name=None):
        module, name = obj.__module__, name or obj.__qualname__
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core") :]
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)


def cifar_batch_bytes(images_nhwc: np.ndarray, labels, batch_label: str = "fake batch") -> bytes:
    """Bytes of a batch in the official format from uint8 (N, 32, 32, 3) images and N labels."""
    images_nhwc = np.asarray(images_nhwc)
    if images_nhwc.dtype != np.uint8 or images_nhwc.shape[1:] != (32, 32, 3):
        raise ValueError("images must be uint8 (N, 32, 32, 3)")
    data = np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), 3072))
    d = {
        b"batch_label": batch_label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(data))],
    }
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(d)
    return buf.getvalue()
