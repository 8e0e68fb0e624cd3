"""``flatkit.load``: a checkpoint (flatkit's own, a plain ADM state dict or a diffusers directory) as a
:class:`Run`.

:class:`Run` is defined in :mod:`flatkit.checkpoint` and the state-dict helpers (:func:`strip_prefixes`) in
:mod:`flatkit.interop.weights`, both re-exported here: the diffusers loader builds a ``Run`` too, and it must not
import this module, which dispatches to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from flatkit.checkpoint import Run, is_flatkit_checkpoint, read_pt, select_weights, weight_names
from flatkit.config import (
    RunConfig,
    diffusion_config_from_dict,
    model_config_from_dict,
)
from flatkit.errors import UsageError
from flatkit.interop.weights import STRIP_PREFIXES, load_state, strip_prefixes, unwrap_state_dict
from flatkit.results import file_sha256

__all__ = ["STRIP_PREFIXES", "Run", "load", "strip_prefixes"]

# keys under which a plain state dict may be wrapped: {"state_dict": ...}, {"model": ...}, {"ema": ...}
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "ema")


def _read_flags(adm_flags: dict | str | os.PathLike | None) -> dict | None:
    if adm_flags is None or isinstance(adm_flags, dict):
        return adm_flags
    p = Path(adm_flags)
    if not p.is_file():
        raise UsageError(f"adm_flags {adm_flags}: no such file")
    try:
        flags = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"adm_flags {adm_flags}: not valid JSON ({e})") from None
    if not isinstance(flags, dict):
        raise UsageError(f"adm_flags {adm_flags}: expected a JSON object of ADM flags")
    if "flags" in flags and isinstance(flags["flags"], dict):  # the fixtures' layout {"flags": {...}}
        flags = flags["flags"]
    return flags


def _checkpoint_file(p: Path, path: str | os.PathLike) -> Path:
    """``p`` itself, or the ``ckpt.pt`` of a training folder."""
    if p.is_dir():
        if (p / "ckpt.pt").is_file():
            return p / "ckpt.pt"
        raise UsageError(f"{path}: is a directory without ckpt.pt (pass the checkpoint file)")
    return p


def _flatkit_run_config(obj: dict, spath: str) -> RunConfig:
    """The :class:`RunConfig` a flatkit checkpoint records (its format version checked first)."""
    version = obj.get("format_version")
    if version is None:
        raise UsageError(f"{spath}: a pickle without a flatkit checkpoint format (no format_version): not a flatkit "
                         "checkpoint; pass the state dict's model with --model, or --adm-flags for an ADM state "
                         "dict")
    if not isinstance(version, int) or version > 1:
        raise UsageError(f"{spath}: flatkit checkpoint format version {version!r} is newer than this flatkit")
    cfg = obj.get("config", {})
    try:
        return RunConfig(
            model=model_config_from_dict(cfg["model"]),
            diffusion=diffusion_config_from_dict(cfg["diffusion"]),
            data=cfg.get("data"),
            source=cfg.get("source", "flatkit"),
            holdout=cfg.get("holdout"),
        )
    except (KeyError, TypeError) as e:
        raise UsageError(f"{spath}: flatkit checkpoint with a damaged config ({e})") from None


def _unwrap_state_dict(obj: Any, spath: str) -> dict[str, torch.Tensor]:
    """The model state dict in a plain torch file: the file itself or one of the common wrapper keys."""
    sd = unwrap_state_dict(obj, _STATE_DICT_KEYS)
    if sd is None:
        raise UsageError(f"{spath}: neither a flatkit checkpoint nor a model state dict")
    return sd


def _adm_run_config(
    sd: dict[str, torch.Tensor], adm_flags: dict | str | os.PathLike | None, spath: str
) -> tuple[RunConfig, list[str]]:
    """The :class:`RunConfig` of an ADM state dict (shapes, then flags, then ADM defaults) and the assumed flags."""
    from flatkit.diffusion import diffusion_config_from_adm_flags
    from flatkit.models.adm_flags import infer_adm_config

    flags = _read_flags(adm_flags) or {}
    inferred = infer_adm_config(sd, flags, source=spath)
    mcfg = inferred.config
    assumed = [f"{k}={v}" for k, v in inferred.assumed.items()]
    dflags = dict(flags)
    dflags.setdefault("learn_sigma", mcfg.learn_sigma)
    if bool(dflags["learn_sigma"]) != mcfg.learn_sigma:
        raise UsageError("adm_flags learn_sigma: contradicts the state dict's output channels")
    dcfg = diffusion_config_from_adm_flags(dflags)
    for flag, default in (("diffusion_steps", dcfg.diffusion_steps), ("noise_schedule", dcfg.noise_schedule)):
        if flag not in flags:
            assumed.append(f"{flag}={default}")
    return RunConfig(model=mcfg, diffusion=dcfg, data=flags.get("data"), source="adm"), assumed


def load(
    path: str | os.PathLike,
    weights: str = "raw",
    adm_flags: dict | str | os.PathLike | None = None,
    trust: bool = False,
    device: str | torch.device | None = None,
    download: bool = False,
) -> Run:
    """Load a checkpoint as a :class:`Run` (model in eval mode, float64 diffusion schedule).

    ``path``: a flatkit checkpoint (or a training folder holding ``ckpt.pt``), a plain ADM
    (guided-diffusion / DDPM-IP) state dict, or a diffusers ``UNet2DModel`` directory (``config.json`` + weights,
    or a pipeline holding ``unet/`` and ``scheduler/``; see :mod:`flatkit.interop.diffusers`).
    ``weights``: ``raw`` / ``ema`` / ``ema_<rate>`` / ``swa`` (a diffusers variant name for a diffusers directory).
    ``adm_flags``: ADM command-line flags (dict or JSON file) for state dicts, which carry no configuration;
    what the shapes determine is inferred and contradicting flags are refused. ``trust=True`` allows a full
    unpickle of a file that ``weights_only=True`` refuses (only for files you trust).

    ``path`` may also be a Hugging Face repo id, ``OWNER/NAME[@REVISION][/SUBFOLDER]`` (or ``hf://...``), when no
    local path of that name exists: it is read from huggingface_hub's local cache (``HF_HUB_CACHE``), never the
    network, unless ``download=True`` (see :mod:`flatkit.interop.hub`).
    """
    from flatkit.diffusion import create_diffusion
    from flatkit.interop.hub import load_hub, parse_repo_id
    from flatkit.models.presets import build_model

    ref = parse_repo_id(path)
    if ref is not None:  # not a local path: a Hugging Face repo id, resolved in the local cache
        if adm_flags is not None:
            raise UsageError(f"adm_flags: {path} is a Hugging Face repo, which carries its own configuration")
        return load_hub(str(path), ref, weights=weights, trust=trust, device=device, download=download)
    p = Path(path)
    if p.is_dir() and not (p / "ckpt.pt").is_file():
        from flatkit.interop.diffusers import is_diffusers_dir, load_diffusers

        if is_diffusers_dir(p):  # config.json + diffusion_pytorch_model.*, or a pipeline holding unet/
            if adm_flags is not None:
                raise UsageError(f"adm_flags: {path} is a diffusers directory, which carries its own configuration")
            return load_diffusers(p, weights=weights, trust=trust, device=device)
    p = _checkpoint_file(p, path)
    obj = read_pt(p, trust=trust)
    spath = str(p)

    if is_flatkit_checkpoint(obj):
        if adm_flags is not None:
            raise UsageError(f"adm_flags: {spath} is a flatkit checkpoint, which carries its own configuration")
        rc = _flatkit_run_config(obj, spath)
        name, sd = select_weights(obj, weights, spath)
        available, step, assumed = weight_names(obj), obj.get("step"), []
    else:
        sd = _unwrap_state_dict(obj, spath)
        if weights not in ("raw",):
            raise UsageError(
                f"weights {weights}: {spath} is a plain state dict holding one set of weights; "
                "ADM writes EMA weights to their own file (ema_<rate>_<step>.pt): load that file with --weights raw"
            )
        sd = strip_prefixes(sd)
        rc, assumed = _adm_run_config(sd, adm_flags, spath)
        name, available, step = "raw", ["raw"], None

    model = build_model(rc.model)
    load_state(model, sd, spath)
    model.eval()
    if device is not None:
        model.to(device)
    diffusion = create_diffusion(rc.diffusion)
    return Run(
        model=model, diffusion=diffusion, config=rc, weights=name, path=spath, sha256=file_sha256(p),
        step=step, available_weights=available, assumed=assumed,
    )
