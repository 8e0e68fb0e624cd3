"""``npz:PATH``: ADM sample files, ``arr_0`` uint8 NHWC or (N, H, W) grayscale (the format of ADM's
``sample.py`` and its evaluator's reference batches); written atomically by :func:`write_uint8_npz`."""

from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

from flatkit.errors import UsageError


def _check_images(arr, where: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
        dtype = getattr(arr, "dtype", type(arr).__name__)
        raise UsageError(f"{where}: images must be uint8, got {dtype}")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3):  # (N, H, W): grayscale ((H, W, 3) is one image: refused)
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise UsageError(f"{where}: images must be NHWC with 1 or 3 channels, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise UsageError(f"{where}: empty image array of shape {tuple(arr.shape)}")
    return arr


def load_npz(path: str) -> np.ndarray:
    """Read ``arr_0`` (or the file's only array) as uint8 NHWC; a ``.npy`` of one array is accepted too."""
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
        if isinstance(z, np.lib.npyio.NpzFile):
            with z:
                keys = list(z.files)
                if "arr_0" in keys:
                    arr = z["arr_0"]
                elif len(keys) == 1:
                    arr = z[keys[0]]
                else:
                    raise UsageError(f"{path}: no arr_0 array (keys: {', '.join(keys) or 'none'})")
        else:
            arr = z
    except UsageError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    return _check_images(np.asarray(arr), path)


def write_uint8_npz(path: str, images_nhwc_uint8: np.ndarray) -> None:
    """Write images as ``arr_0`` (uint8 NHWC, ADM's convention) atomically: temp file beside ``path``, then
    ``os.replace``. The file name is used exactly as given (no ``.npz`` appended)."""
    arr = _check_images(np.asarray(images_nhwc_uint8), str(path))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    from flatkit.outputs import fix_mode

    fix_mode(fd)  # the umask's mode, not mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, arr_0=arr)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
