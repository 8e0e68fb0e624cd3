"""``Dataset`` and ``load_dataset``: a data spec -> samples held in memory.

Images are held as uint8 NHWC (CIFAR-10's 50k images are 150 MB so) and converted on each ``get`` to float32
NCHW in [-1, 1] by x / 127.5 - 1 (ADM's ``image_datasets.py`` convention). Points are held as float32 (N, D).
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np
import torch

from flatkit.data.builtin import make_builtin
from flatkit.data.cifar10 import load_cifar10
from flatkit.data.folder import load_folder, resize_images
from flatkit.data.npz import load_npz
from flatkit.data.spec import format_spec, parse_spec
from flatkit.errors import UsageError


class Dataset:
    """Samples of one data spec, held in memory.

    Attributes: ``spec`` (normalised spec string), ``kind`` (``"image"`` | ``"points"``), ``sample_shape``
    ((C, H, W) or (D,)), ``labels`` (int64 (N,) for CIFAR-10, else None).

    Every index (int, slice, list, numpy array, LongTensor or bool mask) returns a batch: an int ``i``
    gives a batch of one, like ``[i]``. Results are fresh arrays: the stored data cannot change through them.
    """

    def __init__(
        self,
        spec: str,
        kind: str,
        *,
        images: np.ndarray | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ):
        self.spec = spec
        self.kind = kind
        if kind == "image":
            if images is None or images.dtype != np.uint8 or images.ndim != 4:
                raise ValueError("an image Dataset needs uint8 NHWC images")
            self._data = images
            n, h, w, c = images.shape
            self.sample_shape: tuple = (c, h, w)
        elif kind == "points":
            if points is None or points.ndim != 2:
                raise ValueError("a points Dataset needs an (N, D) array")
            self._data = np.asarray(points, dtype=np.float32)
            self.sample_shape = (self._data.shape[1],)
        else:
            raise ValueError(f"unknown kind {kind!r}")
        self.labels = labels
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return int(self._data.shape[0])

    def __repr__(self) -> str:
        return f"Dataset({self.spec!r}, kind={self.kind!r}, n={len(self)}, sample_shape={self.sample_shape})"

    @staticmethod
    def _index(index):
        if isinstance(index, torch.Tensor):
            index = index.detach().cpu().numpy()
        if isinstance(index, (int, np.integer)):
            return np.array([int(index)])
        return index

    def _take(self, index) -> np.ndarray:
        x = self._data[self._index(index)]
        return np.array(x, copy=True) if np.may_share_memory(x, self._data) else x

    def get(self, index) -> torch.Tensor:
        """float32 batch: images NCHW in [-1, 1] (x / 127.5 - 1), points (N, D)."""
        x = self._take(index)
        if self.kind == "points":
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(torch.float32)
        return t.div_(127.5).sub_(1.0)

    def uint8(self, index) -> np.ndarray:
        """Images as uint8 NHWC (ADM ``arr_0`` convention)."""
        if self.kind != "image":
            raise UsageError(f"--data {self.spec}: a points data set has no uint8 images")
        return self._take(index)

    def fingerprint(self) -> str:
        """First 16 hex digits of sha256 over kind, dtype, shape and the stored bytes."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"{self.kind}|{self._data.dtype.str}|{self._data.shape}|".encode())
            h.update(memoryview(np.ascontiguousarray(self._data)).cast("B"))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


@functools.lru_cache(maxsize=4)
def _builtin_cached(name: str, n: int, seed: int) -> np.ndarray:
    arr = make_builtin(name, n, seed)
    arr.setflags(write=False)
    return arr


def load_dataset(
    spec: str, *, image_size: int | None = None, download: bool = False, root: str | None = None
) -> Dataset:
    """Load the samples a data spec names (see ``docs/data.md``).

    ``image_size``: resize images (ADM centre crop) to this size; required for folders of mixed or
    non-square sizes; ignored for point sets. ``download``/``root``: only for ``cifar10:``, fetch the official
    archive into ``root`` when nothing is at PATH. Bad specs and bad files raise UsageError naming them.
    """
    p = parse_spec(spec)
    if image_size is not None and (
        isinstance(image_size, bool) or int(image_size) != image_size or image_size < 1
    ):
        raise UsageError(f"image_size {image_size!r}: must be a positive integer")
    if image_size is None:
        image_size = p.options.get("image_size")
    channels = p.options.get("channels")
    if p.prefix == "builtin":
        arr = _builtin_cached(p.target, p.options["n"], p.options["seed"])
        if p.kind == "points":
            return Dataset(format_spec(p), "points", points=arr)
        images = arr if image_size is None else resize_images(arr, int(image_size))
        return Dataset(format_spec(p), "image", images=convert_channels(images, channels))

    path = os.path.abspath(os.path.expanduser(p.target))
    norm = format_spec(type(p)(p.prefix, path, p.options))
    labels = None
    if p.prefix == "cifar10":
        images, labels = load_cifar10(path, p.options["split"], download=download, root=root)
    elif p.prefix == "folder":
        images = load_folder(path, image_size, channels=channels, limit=p.options.get("n"))
    else:  # npz
        images = load_npz(path)
    if p.options.get("n") is not None:
        images = images[: p.options["n"]]
        labels = None if labels is None else labels[: p.options["n"]]
    if image_size is not None and p.prefix != "folder":
        images = resize_images(images, int(image_size))
    return Dataset(norm, "image", images=convert_channels(images, channels), labels=labels)


def convert_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    """uint8 NHWC with ``channels`` channels: RGB -> grayscale as PIL's ``L`` (ITU-R 601-2 luma), grayscale ->
    RGB by repetition; unchanged for None or the same count."""
    if channels is None or images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    luma = images.astype(np.uint32) @ np.array([299, 587, 114], dtype=np.uint32)
    return ((luma + 500) // 1000).astype(np.uint8)[..., None]
