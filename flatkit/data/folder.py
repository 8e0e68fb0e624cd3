"""``folder:PATH``: image files found recursively, centre-cropped and resized as ADM's ``center_crop_arr``.

ADM's recipe (guided-diffusion, ``image_datasets.py``): halve the image with a box filter while its short side
is at least twice the target, then resize with bicubic so that the short side equals the target, then crop the
centre square. Re-implemented here; the same function resizes any uint8 image array (:func:`resize_images`).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from flatkit.errors import UsageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def center_crop_arr(img: Image.Image, image_size: int) -> np.ndarray:
    """PIL image -> uint8 (image_size, image_size, C), ADM's centre crop (box halving, bicubic, crop)."""
    while min(img.size) >= 2 * image_size:
        img = img.resize((img.size[0] // 2, img.size[1] // 2), resample=Image.Resampling.BOX)
    scale = image_size / min(img.size)
    new = (max(image_size, round(img.size[0] * scale)), max(image_size, round(img.size[1] * scale)))
    if new != img.size:
        img = img.resize(new, resample=Image.Resampling.BICUBIC)
    arr = np.asarray(img)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 NHWC (C = 1 or 3) -> uint8 (N, image_size, image_size, C) by :func:`center_crop_arr`."""
    n, h, w, c = images.shape
    if h == w == image_size:
        return images
    out = np.empty((n, image_size, image_size, c), dtype=np.uint8)
    for i in range(n):
        img = Image.fromarray(images[i, :, :, 0] if c == 1 else images[i])
        arr = center_crop_arr(img, image_size)
        out[i] = arr[..., None] if c == 1 else arr
    return out


def list_images(root: str) -> list[str]:
    """Image files under ``root`` (recursive), sorted by path relative to ``root``; dot-files skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, f), root))
    return [os.path.join(root, p) for p in sorted(found)]


def _open_rgb(path: str, mode: str = "RGB") -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UsageError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def load_folder(path: str, image_size: int | None = None, channels: int | None = None,
                limit: int | None = None) -> np.ndarray:
    """All images under ``path`` (the first ``limit``) -> uint8 NHWC, RGB (``channels`` 3 or None) or grayscale
    (``channels`` 1, PIL's ``L``). With ``image_size`` each is cropped and resized (:func:`center_crop_arr`);
    without it images that are all square of one size are kept as they are, and otherwise every image is
    centre-cropped to the smallest short side among them."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such directory")
    if not os.path.isdir(path):
        raise UsageError(f"{path}: not a directory (folder: expects a directory of images)")
    if image_size is not None and image_size < 1:
        raise UsageError(f"image_size {image_size}: must be positive")
    files = list_images(path)[:limit]
    if not files:
        raise UsageError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    mode = "L" if channels == 1 else "RGB"
    imgs = [_open_rgb(f, mode) for f in files]
    if image_size is None:
        sizes = {img.size for img in imgs}
        if len(sizes) == 1 and next(iter(sizes))[0] == next(iter(sizes))[1]:
            return _nhwc(np.stack([np.asarray(img) for img in imgs]))
        image_size = min(min(size) for size in sizes)  # centre-crop every image to one square size
    return _nhwc(np.stack([center_crop_arr(img, image_size) for img in imgs]))


def _nhwc(arr: np.ndarray) -> np.ndarray:
    return arr[..., None] if arr.ndim == 3 else arr
