"""What a file is, from its first bytes (never from its name): :func:`sniff` and :func:`describe`.

Used by :func:`flatkit.checkpoint.read_pt` so that a foreign file is named for what it is ("a NumPy .npy array",
"an HDF5 file") instead of being suspected of holding code, and so that ``--trust-checkpoint`` is suggested only
for a real pickle that needs it.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

#: kind -> how a message names it
DESCRIPTIONS: dict[str, str] = {
    "torch-zip": "a PyTorch (zip) archive",
    "pickle": "a Python pickle (legacy torch.save format)",
    "safetensors": "a safetensors file",
    "npy": "a NumPy .npy array",
    "npz": "a NumPy .npz archive",
    "zip": "a zip archive (not a PyTorch checkpoint)",
    "zip-damaged": "a truncated or damaged zip archive (a PyTorch checkpoint cut short?)",
    "hdf5": "an HDF5 file (Keras / h5py), not a PyTorch checkpoint",
    "gzip": "a gzip-compressed file",
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "json": "a JSON text file",
    "text": "a text file",
    "empty": "an empty file",
    "unknown": "not a format flatkit reads (unrecognised bytes)",
}

_HEAD = 4096


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "zip-damaged"
    if any(n.endswith("data.pkl") for n in names):
        return "torch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def _text_kind(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the head is still text
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return None
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            json.loads(text)
            return "json"
        except ValueError:
            pass
    return "text"


def sniff(path: str | os.PathLike) -> str:
    """The kind of file at ``path`` (a key of :data:`DESCRIPTIONS`) from its magic bytes."""
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        return "empty"
    with open(p, "rb") as f:
        head = f.read(_HEAD)
    magic = {b"PK\x03\x04": None, b"PK\x05\x06": None}
    if head[:4] in magic:
        return _zip_kind(p)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if _is_safetensors(head, size):
        return "safetensors"
    return _text_kind(head) or "unknown"


def describe(kind: str) -> str:
    return DESCRIPTIONS.get(kind, kind)
