"""State dicts: reading one from a file without running code (safetensors, or ``torch.load(weights_only=True)``),
normalising its keys (:func:`strip_prefixes`) and loading it into a model with one clear error on a mismatch
(:func:`load_state`). Shared by :func:`flatkit.load` and the loaders of :mod:`flatkit.interop`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatkit.errors import UsageError

# keys under which training scripts commonly nest the model's state dict
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "ema", "module")
# key prefixes added by wrappers: DataParallel / DDP (module.) and torch.compile (_orig_mod.)
STRIP_PREFIXES = ("module.", "_orig_mod.")


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def read_safetensors(path: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a CPU state dict (safetensors stores tensors only: nothing can run)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UsageError(f"{name}: is a safetensors file; reading it needs the safetensors package "
                         "(pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: one line naming the file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{name}: not a readable safetensors file ({msg})") from None


def read_state_dict(path: str | os.PathLike, name: str | None = None, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``.safetensors``, else a torch file read with ``weights_only=True``).

    A dict nesting the state dict under a common key (``state_dict``, ``model``, ...) is unwrapped.
    ``name`` prefixes every error (e.g. ``"--weights w.pt"``); ``trust`` allows a full unpickle on the
    user's explicit request (``--trust-checkpoint``).
    """
    from flatkit.checkpoint import read_pt

    p = Path(path)
    name = name or str(path)
    if not p.is_file():
        raise UsageError(f"{name}: no such file")
    from flatkit.sniff import sniff

    if p.suffix == ".safetensors" or sniff(p) == "safetensors":
        return read_safetensors(p, name)
    try:
        obj = read_pt(p, trust=trust)
    except UsageError as e:
        raise UsageError(f"{name}: {str(e).removeprefix(str(path) + ': ')}") from None
    if isinstance(obj, dict) and isinstance(obj.get("weights"), dict) and is_state_dict(obj["weights"].get("raw")):
        obj = obj["weights"]["raw"]  # a flatkit checkpoint: its raw weights
    sd = unwrap_state_dict(obj)
    if sd is None:
        raise UsageError(f"{name}: not a state dict (a dict of parameter name -> tensor)")
    return sd


def unwrap_state_dict(obj: Any, keys: Sequence[str] = WRAPPER_KEYS) -> dict[str, torch.Tensor] | None:
    """``obj`` itself when it is a state dict, else what the first of the wrapper ``keys`` holding a state dict
    holds; None when neither."""
    if isinstance(obj, dict) and not is_state_dict(obj):
        for key in keys:
            if is_state_dict(obj.get(key)):
                return obj[key]
    return obj if is_state_dict(obj) else None


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` (DataParallel / DDP) and ``_orig_mod.`` (torch.compile) key prefixes."""
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in STRIP_PREFIXES:
                if k.startswith(p):
                    k = k[len(p):]
                    changed = True
        out[k] = v
    return out


def load_state(model: nn.Module, sd: dict[str, torch.Tensor], path: str) -> None:
    """``model.load_state_dict(sd, strict=True)`` after checking keys and shapes, failing with one line.

    A mismatch raises :class:`~flatkit.errors.UsageError` naming ``path``, the number of missing and unexpected
    keys (with an example of each) or the first tensor whose shape differs.
    """
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise UsageError(f"{path}: weights do not match the architecture: " + ", ".join(parts))
    for k, v in want.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise UsageError(
                f"{path}: weights do not match the architecture: {k} has shape {tuple(sd[k].shape)}, "
                f"expected {tuple(v.shape)}"
            )
    model.load_state_dict(sd, strict=True)
