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
                        help="Which weights of the checkpoint: raw, ema (first rate), ema_<rate>, swa "
                             "(a diffusers directory: raw or a variant name).")(f)


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


def model_options(f: Callable) -> Callable:
    """``--model MODULE:FACTORY`` (any torch model instead of CKPT), ``--diffusion-steps``, ``--noise-schedule``.

    Wraps the command so that, with ``--model``, CKPT becomes a :class:`~flatkit.interop.custom.ModelSpec` (a
    string carrying the diffusion options) that :func:`load_run` and :func:`make_objective` recognise.
    """
    import functools

    @functools.wraps(f)
    def wrapper(*args: Any, model: str | None = None, diffusion_steps: int | None = None,
                noise_schedule: str | None = None, **kwargs: Any) -> Any:
        if model is None:
            for name, value in (("--diffusion-steps", diffusion_steps), ("--noise-schedule", noise_schedule)):
                if value is not None:
                    raise UsageError(f"{name}: only with --model (a checkpoint records its own diffusion)")
            if "ckpt" in kwargs and kwargs["ckpt"] is None and not kwargs.get("replot"):
                raise UsageError("CKPT: a checkpoint is required (or --model MODULE:FACTORY)")
            return f(*args, **kwargs)
        from flatkit.interop.custom import ModelSpec

        if kwargs.get("ckpt") is not None:
            raise UsageError(f"--model: pass either CKPT ({kwargs['ckpt']}) or --model {model}, not both")
        for name, key in (("--compare", "compare"), ("--trajectory", "trajectory"), ("--adm-flags", "adm_flags"),
                          ("--replot", "replot")):
            if kwargs.get(key):
                raise UsageError(f"{name}: not available with --model")
        kwargs["ckpt"] = ModelSpec(model, diffusion_steps if diffusion_steps is not None else 1000,
                                   noise_schedule if noise_schedule is not None else "linear")
        return f(*args, **kwargs)

    g: Callable = wrapper
    g = click.option("--noise-schedule", type=click.Choice(["linear", "cosine"]), default=None,
                     help="With --model: the beta schedule of the diffusion.  [default: linear]")(g)
    g = click.option("--diffusion-steps", metavar="T", type=click.IntRange(min=1), default=None,
                     help="With --model: the number of diffusion steps.  [default: 1000]")(g)
    g = click.option("--model", metavar="MODULE:FACTORY", default=None,
                     help="Analyse any torch model instead of CKPT: FACTORY() in MODULE (a dotted name found from "
                          "the current directory and sys.path, or a .py file) returns a denoiser nn.Module "
                          "model(x_t, t) -> eps (needs --data) or a flatkit.Task; --weights FILE then names a "
                          "state-dict file (.pt or .safetensors) loaded into it (default: the factory's own "
                          "initialisation).")(g)
    return g


def precision_options(hessian: bool = False) -> Callable:
    """``--precision fp32|bf16|fp16`` (autocast of the model's forward) and ``--channels-last`` (see
    :mod:`flatkit.precision`); ``hessian``: the help says what reduced precision costs the curvature numerics."""
    help_precision = ("Model forward under autocast: fp32 (as is), bf16 or fp16 (CUDA; bf16/fp16 also on the "
                      "CPU). Losses are still accumulated in float64.")
    if hessian:
        help_precision += (" Only when asked: Lanczos, trace and density on 16-bit HVPs lose accuracy "
                           "(small eigenvalues, orthogonality).")

    def deco(f: Callable) -> Callable:
        f = click.option("--channels-last", is_flag=True,
                         help="Channels-last memory format for 4-D inputs and weights (conv models on CUDA; "
                              "ignored on the CPU).")(f)
        return click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
                            show_default=True, help=help_precision)(f)
    return deco


def apply_precision(objs: list, precision: str, channels_last: bool) -> dict:
    """Set ``--precision`` / ``--channels-last`` on the objectives; returns what the result's meta records."""
    from flatkit.precision import check_precision, precision_meta

    dev = objs[0].device if objs else torch.device("cpu")
    check_precision(precision, dev)
    for o in objs:
        if precision != "fp32" or channels_last:
            o.set_precision(precision, channels_last)
    return precision_meta(precision, channels_last, dev)


def sampling_precision_for(runs: list, precision: str, channels_last: bool, device: Any) -> tuple[Any, dict]:
    """``--precision`` / ``--channels-last`` of a sampling command: the context to sample in and what the result's
    meta records. On CUDA, channels-last converts the command's own models (loaded for it) in place."""
    from flatkit.precision import check_precision, precision_meta, sampling_precision

    dev = torch.device(device)
    check_precision(precision, dev)
    if channels_last and dev.type == "cuda":
        for r in runs:
            r.model.to(memory_format=torch.channels_last)
    return sampling_precision(precision, channels_last), precision_meta(precision, channels_last, dev)


def analysis_options(n_eval: int = 64, batch_size: int = 64) -> Callable:
    """The options every loss-based analysis of one checkpoint takes: data, bank size, seed, weights, device,
    micro-batch, output folder, checkpoint loading and ``--model`` (any torch model)."""
    def deco(f: Callable) -> Callable:
        for option in (model_options, checkpoint_options, out_option, batch_size_option(batch_size), device_option,
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
    """Load a checkpoint for a command (or, for a ``--model`` spec, build the model); assumptions go to stderr."""
    from flatkit.interop.custom import ModelSpec, load_custom
    from flatkit.run import load

    dev = resolve_device(device) if isinstance(device, str) else device
    if isinstance(ckpt, ModelSpec):
        return load_custom(ckpt, weights=None if weights == "raw" else weights, diffusion_steps=ckpt.diffusion_steps,
                           noise_schedule=ckpt.noise_schedule, trust=trust, device=dev)
    run = load(ckpt, weights=weights, adm_flags=adm_flags, trust=trust, device=dev)
    if run.assumed and run.config.source == "adm":
        click.echo(f"note: {ckpt}: assumed ADM defaults for {', '.join(run.assumed)} "
                   "(not determined by the state dict; pass --adm-flags to set them)", err=True)
    elif run.assumed:
        click.echo(f"note: {ckpt}: assumed {'; '.join(run.assumed)}", err=True)
    return run


def make_objective(run: Any, **kwargs: Any) -> Any:
    """``Objective(run, **kwargs)``, or the objective of a ``--model`` factory's :class:`flatkit.Task`."""
    from flatkit.interop.custom import TaskRun, task_objective
    from flatkit.objective import Objective

    if isinstance(run, TaskRun):
        return task_objective(run, **kwargs)
    if run.config.source == "custom" and kwargs.get("data") is None:
        raise UsageError("--data: required with --model (a denoiser factory records no data)")
    return Objective(run, **kwargs)


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


