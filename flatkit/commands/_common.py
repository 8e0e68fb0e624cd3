"""Options and helpers shared by the subcommands (EDM-style click options: metavar, ranges, show_default)."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from flatkit.errors import UsageError


def weights_option(f: Callable) -> Callable:
    return click.option("--weights", metavar="raw|ema|swa", default="raw", show_default=True,
                        help="Which weights of the checkpoint: raw, ema (first rate), ema_<rate>, swa.")(f)


def device_option(f: Callable) -> Callable:
    return click.option("--device", metavar="DEV", default="auto", show_default=True,
                        help="cpu, cuda, cuda:N or auto (cuda when available).")(f)


def seed_option(f: Callable) -> Callable:
    return click.option("--seed", metavar="INT", type=click.IntRange(min=0), default=0, show_default=True,
                        help="Random seed (evaluation bank, directions, probes).")(f)


def out_option(f: Callable) -> Callable:
    return click.option("--out", metavar="DIR", type=str, default=None,
                        help="Output folder (default: a new folder under runs/).")(f)


def data_option(f: Callable) -> Callable:
    return click.option("--data", metavar="SPEC", default=None,
                        help="Data spec: builtin:NAME, cifar10:PATH, folder:PATH, npz:PATH "
                             "(default: the data recorded in the checkpoint).")(f)


def n_eval_option(default: int = 256) -> Callable:
    def deco(f: Callable) -> Callable:
        return click.option("--n-eval", metavar="N", type=click.IntRange(min=1), default=default,
                            show_default=True, help="Size of the frozen evaluation bank.")(f)
    return deco


def batch_size_option(default: int = 64) -> Callable:
    def deco(f: Callable) -> Callable:
        return click.option("--batch-size", metavar="N", type=click.IntRange(min=1), default=default,
                            show_default=True, help="Micro-batch size for evaluation.")(f)
    return deco


def checkpoint_options(f: Callable) -> Callable:
    """``--adm-flags FILE`` and ``--trust-checkpoint`` for commands that load a checkpoint."""
    f = click.option("--trust-checkpoint", is_flag=True,
                     help="Allow a full unpickle of a checkpoint that weights_only=True refuses "
                          "(runs code from the file: only for files you trust).")(f)
    f = click.option("--adm-flags", metavar="FILE", default=None,
                     help="JSON file of ADM flags for a plain guided-diffusion / DDPM-IP state dict.")(f)
    return f


def analysis_options(n_eval: int = 64, batch_size: int = 64) -> Callable:
    """The options every loss-based analysis of one checkpoint takes: data, bank size, seed, weights, device,
    micro-batch, output folder and checkpoint loading."""
    def deco(f: Callable) -> Callable:
        for option in (checkpoint_options, out_option, batch_size_option(batch_size), device_option,
                       weights_option, seed_option, n_eval_option(n_eval), data_option):
            f = option(f)
        return f
    return deco


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when available else cpu; an unavailable device is a usage error naming --device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device}: not a device name (cpu, cuda, cuda:N, auto)") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if d.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device}: unsupported device type")
    return d


def resolve_out_dir(out: str | None, name: str) -> Path:
    """``--out`` or a new folder ``runs/<name>-<timestamp>`` (never an existing one)."""
    if out is not None:
        p = Path(out)
        if p.exists() and not p.is_dir():
            raise UsageError(f"--out {out}: exists and is not a directory")
        return p
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    p = Path("runs") / f"{name}-{stamp}"
    i = 1
    while p.exists():
        p = Path("runs") / f"{name}-{stamp}-{i}"
        i += 1
    return p


def load_run(ckpt: str, weights: str = "raw", adm_flags: str | None = None, trust: bool = False,
             device: str | torch.device | None = None):
    """Load a checkpoint for a command; ADM flags that had to be assumed are reported on stderr."""
    from flatkit.run import load

    run = load(ckpt, weights=weights, adm_flags=adm_flags, trust=trust,
               device=resolve_device(device) if isinstance(device, str) else device)
    if run.assumed:
        click.echo(f"note: {ckpt}: assumed ADM defaults for {', '.join(run.assumed)} "
                   "(not determined by the state dict; pass --adm-flags to set them)", err=True)
    return run


def write_json(path: str | os.PathLike, obj: Any) -> None:
    from flatkit.results import atomic_write_text, jsonable

    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def parse_float_list(value: str, option: str) -> list[float]:
    """``"0,0.5,1"`` → ``[0.0, 0.5, 1.0]``; anything else is a usage error naming the option."""
    try:
        vals = [float(v) for v in str(value).split(",") if v.strip() != ""]
    except ValueError:
        raise UsageError(f"{option} {value}: expected comma-separated numbers") from None
    if not vals:
        raise UsageError(f"{option}: expected at least one value")
    return vals


def parse_int_list(value: str, option: str) -> list[int]:
    try:
        vals = [int(v) for v in str(value).split(",") if v.strip() != ""]
    except ValueError:
        raise UsageError(f"{option} {value}: expected comma-separated integers") from None
    if not vals:
        raise UsageError(f"{option}: expected at least one value")
    return vals


def echo_written(paths: list) -> None:
    for p in paths:
        if p is not None:
            click.echo(f"wrote {p}")


