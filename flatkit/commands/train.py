"""``flatkit train --data SPEC --out DIR ...``: the bundled DDPM trainer (over ``flatkit.train.train``).

One run trains one arm of the paper and tracks its averages: e.g. ``--sam-rho 0.5 --ema 0.9999 --swa-start K``
yields the +SAM (raw), +SAM+EMA and +SAM+SWA weights (``--weights raw|ema|swa`` in the analyses).
"""

from __future__ import annotations

import math
from typing import Any

import click
from click.core import ParameterSource

from flatkit.errors import UsageError


class Number(click.ParamType):
    """An int or float with an allowed range; a bad value is a one-line UsageError naming the option."""

    def __init__(
        self,
        kind: type,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        hi_open: bool = False,
    ) -> None:
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.name = kind.__name__

    def _range(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return " and ".join(parts)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            v = value
        else:
            opt = param.opts[0] if param is not None else "value"
            try:
                v = self.kind(value)
            except (TypeError, ValueError):
                raise UsageError(
                    f"{opt}: expected {'an integer' if self.kind is int else 'a number'}, got {value!r}"
                ) from None
        opt = param.opts[0] if param is not None else "value"
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"{opt}: must be finite, got {value}")
        bad_lo = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        bad_hi = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
        if bad_lo or bad_hi:
            raise UsageError(f"{opt}: must be {self._range()}, got {value}")
        return v


class Holdout(click.ParamType):
    """``--holdout F``: a fraction in (0, 0.5] or a count of items >= 1 (flatkit/data/holdout.py)."""

    name = "holdout"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from flatkit.data.holdout import parse_holdout

        return parse_holdout(value, param.opts[0] if param is not None else "holdout")


class Choice(click.ParamType):
    """One of a fixed list; otherwise a one-line UsageError naming the option."""

    name = "choice"

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value not in self.choices:
            opt = param.opts[0] if param is not None else "value"
            raise UsageError(f"{opt}: unknown value {value!r} (choose from {', '.join(self.choices)})")
        return value


def parse_ema(values: tuple[str, ...]) -> list[float]:
    """``--ema`` values, repeatable, comma-separated (``--ema 0.999,0.9999 --ema 0.99``); none: no EMA."""
    rates: list[float] = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if part == "" or part.lower() == "none":
                continue
            try:
                r = float(part)
            except ValueError:
                raise UsageError(f"--ema: expected rates in (0, 1) or 'none', got {part!r}") from None
            if not 0.0 < r < 1.0:
                raise UsageError(f"--ema: rates must lie in (0, 1), got {part}")
            rates.append(r)
    return rates


def recorded_config(out: str) -> dict:
    """The configuration of the run in ``out`` (from train.json, else from ckpt.pt)."""
    import json
    from pathlib import Path

    from flatkit.checkpoint import read_pt

    d = Path(out)
    try:
        return dict(json.loads((d / "train.json").read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not (d / "ckpt.pt").is_file():
        raise UsageError(f"--resume: {out} holds no checkpoint (ckpt.pt) to resume from")
    ck = read_pt(d / "ckpt.pt")
    try:
        return dict(ck["train"]["config"])
    except (KeyError, TypeError):
        raise UsageError(f"--resume: {d / 'ckpt.pt'} is not a flatkit training checkpoint") from None


def _preset_help() -> str:
    return "Model preset: auto (tiny for images, mlp for 2-D points), tiny, mlp, cifar10, lsun64, ffhq64."


@click.command("train", context_settings={"max_content_width": 110})
@click.option(
    "--data",
    metavar="SPEC",
    default="builtin:shapes16",
    show_default=True,
    help="Training data: builtin:NAME, cifar10:PATH, folder:PATH, npz:PATH.",
)
@click.option(
    "--out",
    metavar="DIR",
    default=None,
    help="Output folder (default: a new folder under runs/; required with --resume).",
)
@click.option(
    "--holdout",
    metavar="F",
    type=Holdout(),
    default=None,
    help="Hold out items of --data that training never sees: a fraction in (0, 0.5] or a count N >= 1 (recorded "
    "in the checkpoint and DIR/holdout.json; analyses measure on them with --bank holdout).  [default: none]",
)
@click.option(
    "--holdout-seed",
    metavar="INT",
    type=Number(int, 0),
    default=0,
    show_default=True,
    help="Seed of which items --holdout reserves (independent of --seed: runs of any seed hold out the same).",
)
@click.option("--preset", metavar="NAME", default="auto", show_default=True, help=_preset_help())
@click.option(
    "--dropout",
    metavar="P",
    type=Number(float, 0, 1, hi_open=True),
    default=None,
    help="Override the preset's dropout (ADM CIFAR-10: 0.3).  [default: the preset's]",
)
@click.option(
    "--steps",
    metavar="N",
    type=Number(int, 1),
    default=1000,
    show_default=True,
    help="Total optimizer steps (with --resume: continue up to N).",
)
@click.option(
    "--batch-size", metavar="B", type=Number(int, 1), default=32, show_default=True, help="Batch size."
)
@click.option(
    "--lr",
    metavar="LR",
    type=Number(float, 0, lo_open=True),
    default=None,
    show_default="the preset's: 1e-4 for cifar10/lsun64/ffhq64 (ADM), 1e-3 for tiny/mlp",
    help="AdamW learning rate.",
)
@click.option(
    "--weight-decay",
    metavar="WD",
    type=Number(float, 0),
    default=0.0,
    show_default=True,
    help="AdamW weight decay (ADM: 0).",
)
@click.option(
    "--warmup",
    metavar="N",
    type=Number(int, 0),
    default=0,
    show_default=True,
    help="Linear learning-rate warm-up steps (0: none).",
)
@click.option(
    "--grad-clip",
    metavar="C",
    type=Number(float, 0),
    default=0.0,
    show_default=True,
    help="Clip the global gradient norm to C (0: off); with SAM, the second-pass gradient.",
)
@click.option(
    "--sam-rho",
    metavar="R",
    type=Number(float, 0),
    default=0.0,
    show_default=True,
    help="SAM radius rho (0: plain training).  Diffusion models need a large rho (e.g. 0.5).",
)
@click.option(
    "--sam-adaptive",
    is_flag=True,
    help="ASAM: perturbation scaled by T_w = |w| + eta on all parameters (Kwon et al. 2021).",
)
@click.option(
    "--sam-eta",
    metavar="ETA",
    type=Number(float, 0, lo_open=True),
    default=0.01,
    show_default=True,
    help="ASAM's eta.",
)
@click.option(
    "--sam-sync/--no-sam-sync",
    default=True,
    show_default=True,
    help="Under torchrun: all-reduce SAM's first-pass gradient so every rank takes the same ascent step "
    "(the one-process SAM step); --no-sam-sync: each rank perturbs by its own slice's gradient.",
)
@click.option(
    "--rho-schedule",
    metavar="constant|linear",
    type=Choice(("constant", "linear")),
    default=None,
    help="rho schedule (linear: warm-up over --rho-warmup).  [default: the preset's: linear for tiny, "
    "constant (vanilla SAM) for the others]",
)
@click.option(
    "--rho-warmup",
    metavar="N",
    type=Number(int, 0),
    default=None,
    help="Steps of the linear rho warm-up.  [default: the preset's: 300 for tiny, else 0]",
)
@click.option(
    "--ema",
    "ema",
    metavar="RATE[,RATE]",
    multiple=True,
    default=("0.9999",),
    show_default=True,
    help="EMA rate(s), repeatable or comma-separated; 'none' for no EMA.",
)
@click.option(
    "--ema-warmup/--no-ema-warmup",
    default=True,
    show_default=True,
    help="EMA rate min(r, (1+n)/(10+n)) after step n; --no-ema-warmup: ADM's constant rate.",
)
@click.option(
    "--swa-start",
    metavar="STEP",
    type=Number(int, 1),
    default=None,
    help="First step averaged into SWA (default: no SWA).",
)
@click.option(
    "--swa-every",
    metavar="K",
    type=Number(int, 1),
    default=1,
    show_default=True,
    help="SWA takes the weights every K steps from --swa-start.",
)
@click.option(
    "--ip-gamma",
    metavar="G",
    type=Number(float, 0),
    default=0.0,
    show_default=True,
    help="Input perturbation gamma (DDPM-IP: 0.1; 0.15 for CIFAR-10); 0: off.",
)
@click.option(
    "--timestep-sampler",
    metavar="uniform|loss-second-moment",
    type=Choice(("uniform", "loss-second-moment")),
    default="uniform",
    show_default=True,
    help="ADM timestep sampler.",
)
@click.option(
    "--amp",
    metavar="off|bf16|fp16",
    type=Choice(("off", "bf16", "fp16")),
    default="off",
    show_default=True,
    help="Mixed precision (fp16 with a GradScaler, CUDA only).",
)
@click.option(
    "--seed",
    metavar="INT",
    type=Number(int, 0),
    default=0,
    show_default=True,
    help="Seed of the initialisation, data order, timesteps, noise and dropout.",
)
@click.option(
    "--device",
    metavar="DEV",
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:N or auto (cuda when available).",
)
@click.option(
    "--threads",
    metavar="N",
    type=Number(int, 1),
    default=None,
    help="CPU threads for training.  [default: 1 for the tiny and mlp presets (faster, and robust to a busy "
    "CPU), else torch's]",
)
@click.option(
    "--save-every",
    metavar="N",
    type=Number(int, 1),
    default=1000,
    show_default=True,
    help="Checkpoint every N steps (and at the end) to DIR/ckpt.pt.",
)
@click.option("--keep-checkpoints", is_flag=True, help="Also keep DIR/ckpt_<step>.pt at every save.")
@click.option(
    "--log-every",
    metavar="N",
    type=Number(int, 1),
    default=50,
    show_default=True,
    help="Append averaged metrics to DIR/metrics.jsonl every N steps.",
)
@click.option(
    "--samples",
    "sample_count",
    metavar="N",
    type=Number(int, 0),
    default=64,
    show_default=True,
    help="Samples drawn into DIR/samples.png after training (EMA weights if any; 0: none).",
)
@click.option(
    "--sample-steps",
    metavar="N",
    type=Number(int, 1),
    default=100,
    show_default=True,
    help="Respaced ancestral DDPM steps for those samples.",
)
@click.option(
    "--sample-every",
    metavar="N",
    type=Number(int, 0),
    default=0,
    show_default=True,
    help="Also draw that grid every N steps into DIR/samples/step_<N>.png (and TensorBoard); 0: off.",
)
@click.option(
    "--log",
    "log",
    metavar="jsonl|csv|tensorboard",
    multiple=True,
    default=("jsonl",),
    show_default=True,
    help="Where metrics go, comma-separated or repeated: DIR/metrics.jsonl always, csv adds DIR/metrics.csv, "
    "tensorboard DIR/tensorboard/ (pip install 'flatkit[tensorboard]').",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out up to --steps.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(
    data: str,
    out: str | None,
    holdout: float | int | None,
    holdout_seed: int,
    preset: str,
    dropout: float | None,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    grad_clip: float,
    sam_rho: float,
    sam_adaptive: bool,
    sam_eta: float,
    sam_sync: bool,
    rho_schedule: str | None,
    rho_warmup: int | None,
    ema: tuple[str, ...],
    ema_warmup: bool,
    swa_start: int | None,
    swa_every: int,
    ip_gamma: float,
    timestep_sampler: str,
    amp: str,
    seed: int,
    device: str,
    threads: int | None,
    save_every: int,
    keep_checkpoints: bool,
    log_every: int,
    sample_count: int,
    sample_steps: int,
    sample_every: int,
    log: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Train a DDPM (plain, SAM/ASAM, EMA, SWA, input perturbation)."""
    from flatkit import distributed as dist
    from flatkit.commands._common import resolve_out_dir
    from flatkit.train.loggers import parse_log
    from flatkit.train.trainer import TrainConfig, train

    dist.setup_command("train", click.get_current_context().params)  # torchrun: join, same options

    if resume and out is None:
        raise UsageError("--resume: needs --out DIR (the folder of the run to continue)")
    given = dict(
        data=data,
        holdout=holdout,
        holdout_seed=holdout_seed,
        preset=preset,
        dropout=dropout,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        grad_clip=grad_clip,
        seed=seed,
        device=device,
        threads=threads,
        amp=amp,
        sam_rho=sam_rho,
        sam_adaptive=sam_adaptive,
        sam_eta=sam_eta,
        sam_sync=sam_sync,
        rho_schedule=rho_schedule,
        rho_warmup=rho_warmup,
        ema=parse_ema(ema),
        ema_warmup=ema_warmup,
        swa_start=swa_start,
        swa_every=swa_every,
        ip_gamma=ip_gamma,
        timestep_sampler=timestep_sampler,
        save_every=save_every,
        keep_checkpoints=keep_checkpoints,
        log_every=log_every,
        sample_count=sample_count,
        sample_steps=sample_steps,
        sample_every=sample_every,
        log=parse_log(log),
    )
    if resume:
        # Options not given on the command line keep the run's values; given ones must match (or be
        # resumable settings such as --steps), which the trainer checks.
        ctx = click.get_current_context()
        recorded = recorded_config(out)
        for name in given:
            if name in recorded and ctx.get_parameter_source(name) == ParameterSource.DEFAULT:
                given[name] = recorded[name]
    cfg = TrainConfig(**given)
    out_dir = resolve_out_dir(out, "train")
    from flatkit import progress
    from flatkit.outputs import lock_out

    progress.configure(not quiet)
    lock_out(out_dir)  # created, one writer at a time (rank 0 under torchrun); train refuses an occupied --out
    path = train(cfg, out_dir, resume=resume, overwrite=overwrite, progress=not quiet)
    if not dist.is_main():  # several ranks: rank 0 wrote the run
        return
    click.echo(f"wrote {path}")
    for name in ("train.json", "metrics.jsonl", *(("holdout.json",) if holdout is not None else ())):
        click.echo(f"wrote {out_dir / name}")
    _echo_watch_files(out_dir, cfg)
    if sample_count > 0 and (out_dir / "samples.png").exists():
        click.echo(
            f"wrote {out_dir / 'samples.png'} ({sample_count} DDPM-{sample_steps} samples per weight set)"
        )


def _echo_watch_files(out_dir, cfg) -> None:
    """The --log and --sample-every outputs, with the command that shows TensorBoard's."""
    from flatkit.train.loggers import CSV_NAME, SAMPLES_DIR, TENSORBOARD_DIR

    log = cfg.log if isinstance(cfg.log, (list, tuple)) else [cfg.log]
    if "csv" in log and (out_dir / CSV_NAME).exists():
        click.echo(f"wrote {out_dir / CSV_NAME}")
    if "tensorboard" in log and (out_dir / TENSORBOARD_DIR).is_dir():
        click.echo(f"wrote {out_dir / TENSORBOARD_DIR}/ (view: tensorboard --logdir {out_dir / TENSORBOARD_DIR})")
    if cfg.sample_every > 0 and (out_dir / SAMPLES_DIR).is_dir():
        click.echo(f"wrote {out_dir / SAMPLES_DIR}/step_*.png (every {cfg.sample_every} steps)")
