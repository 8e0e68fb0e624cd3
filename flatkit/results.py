"""Result files: ``<name>.json`` (numbers + ``meta``) and ``<name>.npz`` (arrays).

Every analysis returns a typed :class:`Result` (a dataclass) that writes itself with :meth:`Result.save` and
reads itself back with :meth:`Result.load`; plots, ``flatkit figures``, ``flatkit report`` and the demo read
results only through these, never through raw JSON keys. Several checkpoints measured in one call give ONE result
whose per-model fields are indexed by the model m (``labels[m]``), with ``meta["checkpoints"][m]`` recording each
model's checkpoint, sha256, weights, training step and label, and one shared bank / direction fingerprint.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flatkit import __version__, context
from flatkit.errors import UsageError
from flatkit.outputs import atomic_path


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
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the flatkit checkout this package runs from (None when installed from a wheel)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "flatkit"],
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def checkpoint_meta(run: Any, label: str | None = None) -> dict:
    """What a result records of one analysed model: label, checkpoint path and sha256, weights, training step."""
    out = {
        "label": label if label is not None else getattr(run, "label", None),
        "checkpoint": getattr(run, "path", None),
        "checkpoint_sha256": getattr(run, "sha256", None),
        "weights": getattr(run, "weights", None),
        "step": getattr(run, "step", None),
    }
    if getattr(run, "hub", None):  # a Hugging Face repo id: repo, revision, commit, file hashes
        out["hub"] = run.hub
    return out


def make_meta(config: Any = None, run: Any = None, device: Any = None, wall_time_s: float | None = None,
              runs: Any = None, labels: Any = None, **extra: Any) -> dict:
    """The ``meta`` object every result carries: settings, checkpoints (path, sha256, weights, step, label),
    versions (and the git commit from a checkout), command line, device, wall time.

    ``run`` is the first (or only) model; ``runs`` / ``labels`` every model of a comparison, in result order.
    """
    meta: dict[str, Any] = {
        "flatkit_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command_line": list(context.COMMAND_LINE) if context.COMMAND_LINE is not None else None,
    }
    if config is not None:
        meta["config"] = jsonable(config.to_dict() if hasattr(config, "to_dict") else config)
    runs = list(runs) if runs is not None else ([run] if run is not None else [])
    if run is None and runs:
        run = runs[0]
    if run is not None:
        labels = list(labels) if labels is not None else [getattr(r, "label", None) for r in runs]
        meta["checkpoints"] = [checkpoint_meta(r, lab) for r, lab in zip(runs, labels, strict=True)]
        first = meta["checkpoints"][0]
        meta["checkpoint"] = first["checkpoint"]
        meta["checkpoint_sha256"] = first["checkpoint_sha256"]
        meta["weights"] = first["weights"]
        meta["step"] = first["step"]
        meta["label"] = first["label"]
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
        # --repeats R > 1 (flatkit.repeats): per-repeat scalars and their intervals; written only when filled,
        # so a result without repeats is what it always was
        self.repeats: list = []
        self.intervals: dict = {}

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
        for k in ("repeats", "intervals"):
            if getattr(self, k, None):
                out[k] = jsonable(getattr(self, k))
        out["meta"] = jsonable(getattr(self, "meta", {}) or {})
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, name: str | None = None) -> Any:
        """The result back from ``<name>.json`` (+ ``<name>.npz``) in a folder; fields annotated as arrays come
        back as numpy arrays (NaN where the JSON has ``null``)."""
        name = name or cls.name
        d = Path(directory)
        jpath, npath = d / f"{name}.json", d / f"{name}.npz"
        if not jpath.is_file():
            raise UsageError(f"{directory}: no {name}.json in this folder")
        try:
            js = json.loads(jpath.read_text())
            arrs: dict[str, np.ndarray] = {}
            if npath.is_file():
                with np.load(npath) as z:
                    arrs = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise UsageError(f"{jpath}: unreadable result ({e})") from None
        if not isinstance(js, dict) or not isinstance(js.get("meta"), dict):
            raise UsageError(f"{jpath}: not a {name} result (a JSON object with a meta object)")
        hints = _type_hints(cls)
        for k, v in js.items():
            expected = _SIMPLE_TYPES.get(hints.get(k))
            if v is not None and expected is not None and not (isinstance(v, expected) and not isinstance(v, bool)
                                                                or hints.get(k) is bool and isinstance(v, bool)):
                raise UsageError(f"{jpath}: not a {name} result ({k} is {type(v).__name__}, expected "
                                 f"{hints[k].__name__})")
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in arrs:
                kw[f.name] = arrs[f.name]
            elif f.name in js and not (isinstance(js[f.name], dict) and "npz" in js[f.name]):
                v = js[f.name]
                if hints.get(f.name) is np.ndarray and v is not None:
                    v = _array_with_nan(v) if _nested_has_none(v) else np.asarray(v)
                kw[f.name] = v
        try:
            res = cls(**kw)
        except TypeError as e:
            raise UsageError(f"{jpath}: not a {name} result ({e})") from None
        res.repeats = js.get("repeats") if isinstance(js.get("repeats"), list) else []
        res.intervals = js.get("intervals") if isinstance(js.get("intervals"), dict) else {}
        return res

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


#: the annotation of a result field -> the JSON types it may hold (None is always allowed)
_SIMPLE_TYPES: dict = {list: list, dict: dict, str: str, int: int, float: (int, float), bool: bool}


def _type_hints(cls: type) -> dict:
    try:
        return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    except Exception:  # noqa: BLE001 - hints are a convenience for loading; fall back to none
        return {}


def _nested_has_none(v: Any) -> bool:
    if isinstance(v, list):
        return any(_nested_has_none(x) for x in v)
    return v is None


def _array_with_nan(v: Any) -> np.ndarray:
    def conv(x: Any) -> Any:
        return [conv(y) for y in x] if isinstance(x, list) else (np.nan if x is None else x)

    return np.asarray(conv(v), dtype=float)
