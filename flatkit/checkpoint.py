"""The flatkit checkpoint format (docs/checkpoints.md, "flatkit's own format"), safe reading of any ``.pt``
file, and :class:`Run`, what a loaded checkpoint becomes (built by :func:`flatkit.load` and the loaders of
:mod:`flatkit.interop`; also importable as ``flatkit.run.Run`` and ``flatkit.Run``).

A flatkit checkpoint is one ``torch.save`` file holding only tensors and plain Python values, so that it loads
with ``torch.load(weights_only=True)``::

    {
      "format": "flatkit", "format_version": 1, "flatkit_version": "0.1.0",
      "config": {"model": {...ModelConfig}, "diffusion": {...DiffusionConfig}, "data": "builtin:shapes16",
                 "source": "flatkit"},
      "step": 600,
      "weights": {"raw": state_dict, "ema_0.999": state_dict, ..., "swa": state_dict},
      "ema_rates": [0.999],
      "train": {...}   # optional: trainer config, optimizer, sampler and RNG states (the trainer's business)
    }

Weights are selected by name: ``raw``, ``swa``, ``ema`` (the first EMA rate) or ``ema_<rate>``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatkit import __version__
from flatkit.config import RunConfig, to_dict
from flatkit.errors import UsageError

FORMAT = "flatkit"
FORMAT_VERSION = 1


@dataclass
class Run:
    """A loaded model with its diffusion: what every analysis starts from."""

    model: nn.Module
    diffusion: Any
    config: RunConfig
    weights: str = "raw"
    path: str | None = None
    sha256: str | None = None
    step: int | None = None
    available_weights: list[str] = field(default_factory=lambda: ["raw"])
    assumed: list[str] = field(default_factory=list)  # ADM flags taken as defaults, not from shapes or the user
    hub: dict | None = None  # a Hugging Face repo id: repo_id, revision, commit, subfolder, sha256 per file

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def to(self, device: str | torch.device) -> Run:
        self.model.to(device)
        return self


def make_checkpoint(
    config: RunConfig,
    weights: dict[str, dict[str, torch.Tensor]],
    step: int = 0,
    ema_rates: list[float] | None = None,
    train: dict | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict; every state dict is moved to the CPU and detached."""
    if "raw" not in weights:
        raise ValueError("a checkpoint needs raw weights")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "flatkit_version": __version__,
        "config": to_dict(config),
        "step": int(step),
        "weights": {name: {k: v.detach().cpu() for k, v in sd.items()} for name, sd in weights.items()},
        "ema_rates": [float(r) for r in (ema_rates or [])],
        "train": train if train is not None else {},
    }


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the target folder, then ``os.replace``: a reader never sees half a file."""
    from flatkit.outputs import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> None:
    """Write a checkpoint atomically."""
    atomic_torch_save(ckpt, path)


def read_pt(path: str | os.PathLike, *, trust: bool = False) -> Any:
    """Read a ``.pt`` file safely: ``weights_only=True`` always, a full unpickle only with ``trust=True``.

    The file is sniffed first (:mod:`flatkit.sniff`): a safetensors file is read as a state dict whatever its
    name, anything but a torch archive or pickle is refused naming what it is. Every failure is a one-line
    :class:`UsageError` naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory, expected a checkpoint file")
    if p.stat().st_size == 0:
        raise UsageError(f"{path}: file is empty")
    from flatkit.sniff import describe, sniff

    kind = sniff(p)
    if kind == "safetensors":  # a state dict stored as tensors only (ADM / diffusers weights)
        from flatkit.interop.weights import read_safetensors

        return read_safetensors(p, str(path))
    if kind not in ("torch-zip", "pickle"):
        raise UsageError(f"{path}: not a PyTorch checkpoint: the file is {describe(kind)}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
            if "Unsupported global" in str(e) or "GLOBAL" in str(e):
                raise UsageError(
                    f"{path}: refusing to load: the file holds Python objects that would run code when unpickled "
                    "(weights_only=True failed). Pass --trust-checkpoint (trust=True) only if you trust its origin"
                ) from None
            if "WeightsUnpickler error" in str(e):  # torch's own text is advice to unpickle: not repeated
                first = str(e).split("WeightsUnpickler error:")[1].strip().splitlines()[0]
            raise UsageError(f"{path}: {describe(kind)} that is not a PyTorch checkpoint ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{path}: not a readable PyTorch checkpoint, truncated or foreign ({msg})") from None
    # trust=True and weights_only failed: full unpickle on the user's explicit request.
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - anything at all goes back as one line
        raise UsageError(f"{path}: could not be loaded even with trust ({type(e).__name__}: {e})") from None


def is_flatkit_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def weight_names(ckpt: dict) -> list[str]:
    """Names of the weight sets present, e.g. ``["raw", "ema_0.999", "swa"]``."""
    return list(ckpt.get("weights", {}).keys())


def select_weights(ckpt: dict, weights: str, path: str = "checkpoint") -> tuple[str, dict[str, torch.Tensor]]:
    """Resolve ``raw`` / ``ema`` / ``ema_<rate>`` / ``swa`` to (resolved name, state dict)."""
    available = ckpt.get("weights", {})
    if weights in available:
        return weights, available[weights]
    if weights == "ema":
        emas = [k for k in available if k.startswith("ema")]
        if emas:
            return emas[0], available[emas[0]]
    have = ", ".join(available) or "none"
    raise UsageError(f"--weights {weights}: {path} has no such weights (it holds: {have})")
