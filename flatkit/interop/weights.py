"""Reading a state dict from a file without running code: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from flatkit.errors import UsageError

# keys under which training scripts commonly nest the model's state dict
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "ema", "module")


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def read_safetensors(path: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a CPU state dict (safetensors stores tensors only: nothing can run)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UsageError(f"{name}: reading .safetensors needs the safetensors package (pip install safetensors)") \
            from None
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
    if p.suffix == ".safetensors":
        return read_safetensors(p, name)
    try:
        obj = read_pt(p, trust=trust)
    except UsageError as e:
        raise UsageError(f"{name}: {str(e).removeprefix(str(path) + ': ')}") from None
    if isinstance(obj, dict) and isinstance(obj.get("weights"), dict) and is_state_dict(obj["weights"].get("raw")):
        obj = obj["weights"]["raw"]  # a flatkit checkpoint: its raw weights
    if isinstance(obj, dict) and not is_state_dict(obj):
        for key in WRAPPER_KEYS:
            if is_state_dict(obj.get(key)):
                obj = obj[key]
                break
    if not is_state_dict(obj):
        raise UsageError(f"{name}: not a state dict (a dict of parameter name -> tensor)")
    return obj
