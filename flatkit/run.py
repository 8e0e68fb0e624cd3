"""``flatkit.load``: a checkpoint (flatkit's own or a plain ADM state dict) as a :class:`Run`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatkit.checkpoint import is_flatkit_checkpoint, read_pt, select_weights, weight_names
from flatkit.config import (
    RunConfig,
    diffusion_config_from_dict,
    model_config_from_dict,
)
from flatkit.errors import UsageError
from flatkit.results import file_sha256

STRIP_PREFIXES = ("module.", "_orig_mod.")


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

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def to(self, device: str | torch.device) -> Run:
        self.model.to(device)
        return self


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


def _read_flags(adm_flags: dict | str | os.PathLike | None) -> dict | None:
    if adm_flags is None or isinstance(adm_flags, dict):
        return adm_flags
    p = Path(adm_flags)
    if not p.is_file():
        raise UsageError(f"--adm-flags {adm_flags}: no such file")
    try:
        flags = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--adm-flags {adm_flags}: not valid JSON ({e})") from None
    if not isinstance(flags, dict):
        raise UsageError(f"--adm-flags {adm_flags}: expected a JSON object of ADM flags")
    if "flags" in flags and isinstance(flags["flags"], dict):  # the fixtures' layout {"flags": {...}}
        flags = flags["flags"]
    return flags


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _load_state(model: nn.Module, sd: dict[str, torch.Tensor], path: str) -> None:
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


def load(
    path: str | os.PathLike,
    weights: str = "raw",
    adm_flags: dict | str | os.PathLike | None = None,
    trust: bool = False,
    device: str | torch.device | None = None,
) -> Run:
    """Load a checkpoint as a :class:`Run` (model in eval mode, float64 diffusion schedule).

    ``path``: a flatkit checkpoint (or a training folder holding ``ckpt.pt``), a plain ADM
    (guided-diffusion / DDPM-IP) state dict, or a diffusers ``UNet2DModel`` directory (``config.json`` + weights,
    or a pipeline holding ``unet/`` and ``scheduler/``; see :mod:`flatkit.interop.diffusers`).
    ``weights``: ``raw`` / ``ema`` / ``ema_<rate>`` / ``swa`` (a diffusers variant name for a diffusers directory).
    ``adm_flags``: ADM command-line flags (dict or JSON file) for state dicts, which carry no configuration;
    what the shapes determine is inferred and contradicting flags are refused. ``trust=True`` allows a full
    unpickle of a file that ``weights_only=True`` refuses (only for files you trust).
    """
    from flatkit.diffusion import create_diffusion, diffusion_config_from_adm_flags
    from flatkit.models.adm_flags import infer_adm_config
    from flatkit.models.presets import build_model

    p = Path(path)
    if p.is_dir() and not (p / "ckpt.pt").is_file():
        from flatkit.interop.diffusers import is_diffusers_dir, load_diffusers

        if is_diffusers_dir(p):  # config.json + diffusion_pytorch_model.*, or a pipeline holding unet/
            if adm_flags is not None:
                raise UsageError(f"--adm-flags: {path} is a diffusers directory, which carries its own configuration")
            return load_diffusers(p, weights=weights, trust=trust, device=device)
    if p.is_dir():
        if (p / "ckpt.pt").is_file():
            p = p / "ckpt.pt"
        else:
            raise UsageError(f"{path}: is a directory without ckpt.pt (pass the checkpoint file)")
    obj = read_pt(p, trust=trust)
    spath = str(p)
    assumed: list[str] = []

    if is_flatkit_checkpoint(obj):
        if adm_flags is not None:
            raise UsageError(f"--adm-flags: {spath} is a flatkit checkpoint, which carries its own configuration")
        version = obj.get("format_version")
        if not isinstance(version, int) or version > 1:
            raise UsageError(f"{spath}: flatkit checkpoint format version {version!r} is newer than this flatkit")
        cfg = obj.get("config", {})
        try:
            rc = RunConfig(
                model=model_config_from_dict(cfg["model"]),
                diffusion=diffusion_config_from_dict(cfg["diffusion"]),
                data=cfg.get("data"),
                source=cfg.get("source", "flatkit"),
            )
        except (KeyError, TypeError) as e:
            raise UsageError(f"{spath}: flatkit checkpoint with a damaged config ({e})") from None
        name, sd = select_weights(obj, weights, spath)
        available = weight_names(obj)
        step = obj.get("step")
    else:
        sd = obj
        if isinstance(obj, dict) and not _is_state_dict(obj):
            # common wrappers: {"state_dict": ...}, {"model": ...}, {"ema": ...}
            for key in ("state_dict", "model", "model_state_dict", "ema"):
                if _is_state_dict(obj.get(key)):
                    sd = obj[key]
                    break
        if not _is_state_dict(sd):
            raise UsageError(f"{spath}: neither a flatkit checkpoint nor a model state dict")
        if weights not in ("raw",):
            raise UsageError(
                f"--weights {weights}: {spath} is a plain state dict holding one set of weights; "
                "ADM writes EMA weights to their own file (ema_<rate>_<step>.pt): load that file with --weights raw"
            )
        sd = strip_prefixes(sd)
        flags = _read_flags(adm_flags) or {}
        inferred = infer_adm_config(sd, flags, source=spath)
        mcfg = inferred.config
        assumed = [f"{k}={v}" for k, v in inferred.assumed.items()]
        dflags = dict(flags)
        dflags.setdefault("learn_sigma", mcfg.learn_sigma)
        if bool(dflags["learn_sigma"]) != mcfg.learn_sigma:
            raise UsageError("--adm-flags learn_sigma: contradicts the state dict's output channels")
        dcfg = diffusion_config_from_adm_flags(dflags)
        for flag, default in (("diffusion_steps", dcfg.diffusion_steps), ("noise_schedule", dcfg.noise_schedule)):
            if flag not in flags:
                assumed.append(f"{flag}={default}")
        rc = RunConfig(model=mcfg, diffusion=dcfg, data=flags.get("data"), source="adm")
        name, available, step = "raw", ["raw"], None

    model = build_model(rc.model)
    _load_state(model, sd, spath)
    model.eval()
    if device is not None:
        model.to(device)
    diffusion = create_diffusion(rc.diffusion)
    return Run(
        model=model, diffusion=diffusion, config=rc, weights=name, path=spath, sha256=file_sha256(p),
        step=step, available_weights=available, assumed=assumed,
    )
