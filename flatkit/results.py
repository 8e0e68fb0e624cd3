"""Result files: ``<name>.json`` (numbers + ``meta``) and ``<name>.npz`` (arrays) (DESIGN.md, "Interface")."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flatkit import __version__


def jsonable(x: Any) -> Any:
    """Plain JSON values; NaN / inf become ``null`` (a mask, never a sentinel number)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_meta(config: Any = None, run: Any = None, device: Any = None, wall_time_s: float | None = None,
              **extra: Any) -> dict:
    """The ``meta`` object every result carries: configuration, seeds, checkpoint, versions, device, wall time."""
    meta: dict[str, Any] = {
        "flatkit_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if config is not None:
        meta["config"] = jsonable(config)
    if run is not None:
        meta["checkpoint"] = getattr(run, "path", None)
        meta["checkpoint_sha256"] = getattr(run, "sha256", None)
        meta["weights"] = getattr(run, "weights", None)
        rc = getattr(run, "config", None)
        if rc is not None:
            meta["run_config"] = jsonable(rc)
    if device is not None:
        meta["device"] = str(device)
    if wall_time_s is not None:
        meta["wall_time_s"] = float(wall_time_s)
    meta.update(jsonable(extra))
    return meta


@dataclasses.dataclass
class Result:
    """Base of every analysis result.

    Subclasses are dataclasses; fields holding numpy arrays / tensors with more than ``_JSON_MAX`` elements go to
    the ``.npz``, everything else to the ``.json``. ``meta`` is filled by the caller (see :func:`make_meta`).
    """

    name = "result"
    _JSON_MAX = 4096

    def __post_init__(self) -> None:
        if not hasattr(self, "meta") or self.meta is None:  # type: ignore[has-type]
            self.meta = {}

    def _fields(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            if f.name.startswith("_") or f.name == "meta":
                continue
            out[f.name] = getattr(self, f.name)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays for the ``.npz`` (every array-valued field, whatever its size)."""
        arrs = {}
        for k, v in self._fields().items():
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu().numpy()
            if isinstance(v, np.ndarray):
                arrs[k] = v
        return arrs

    def to_json(self) -> dict:
        out = {}
        for k, v in self._fields().items():
            if isinstance(v, (np.ndarray, torch.Tensor)) and np.size(v) > self._JSON_MAX:
                out[k] = {"npz": k, "shape": list(np.shape(v))}
            elif isinstance(v, list) and v and isinstance(v[0], dict) and all(
                isinstance(t, torch.Tensor) for t in v[0].values()
            ):
                continue  # parameter dicts (eigenvectors) are not JSON material
            else:
                out[k] = jsonable(v)
        out["meta"] = jsonable(getattr(self, "meta", {}) or {})
        return out

    def save(self, directory: str | os.PathLike, name: str | None = None) -> tuple[Path, Path | None]:
        """Write ``<name>.json`` (and ``<name>.npz`` when there are arrays) atomically; return their paths."""
        name = name or self.name
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        jpath = d / f"{name}.json"
        atomic_write_text(jpath, json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        arrs = self.arrays()
        npath = None
        if arrs:
            npath = d / f"{name}.npz"
            atomic_savez(npath, **arrs)
        return jpath, npath
