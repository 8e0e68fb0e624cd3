"""The DDPM trainer: ``TrainConfig`` and ``train(config, out_dir, ...)``.

ADM's training recipe (AdamW, lr 1e-4, no weight decay, EMA, uniform or loss-second-moment timesteps) with
optional SAM / ASAM, SWA and input perturbation, so one run yields the raw, EMA and SWA weights of one of
the paper's training arms.  Everything random is drawn from explicit CPU generators, one per stream (data
order, timesteps, eps, IP noise, dropout seeds), whose states go into every checkpoint together with the
optimizer, the timestep sampler, the data order position, the averages and the metrics window: ``--steps 2N``
in one go equals ``--steps N`` then ``--resume --steps 2N`` bit for bit on the same device.

Output folder::

    DIR/ckpt.pt          latest checkpoint (flatkit format, atomic), DIR/ckpt_<step>.pt with keep_checkpoints
    DIR/train.json       the full configuration (and resolved model / diffusion configs)
    DIR/metrics.jsonl    append-only metrics (see flatkit/train/metrics.py)
    DIR/holdout.json     with --holdout: the held-out items (rule, sorted indices, sha256; flatkit/data/holdout.py)
    DIR/samples.png      samples from the EMA (else raw) weights after training
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flatkit import __version__
from flatkit import distributed as dist
from flatkit.checkpoint import is_flatkit_checkpoint, make_checkpoint, read_pt, save_checkpoint
from flatkit.config import DiffusionConfig, ModelConfig, RunConfig, config_hash
from flatkit.data.holdout import holdout_summary
from flatkit.errors import FlatkitError, UsageError
from flatkit.results import atomic_write_text, jsonable
from flatkit.train.averaging import EMA, SWA, ema_name
from flatkit.train.loggers import CSV_NAME, SAMPLES_DIR, TENSORBOARD_DIR, Logger, Loggers, read_png
from flatkit.train.metrics import MetricsWindow, truncate_metrics
from flatkit.train.sam import SAM, global_norm
from flatkit.train.schedules import RHO_SCHEDULES, lr_at, rho_at
from flatkit.train.step import AMP_MODES, Batch, StepResult, train_step
from flatkit.train.timestep_sampler import TIMESTEP_SAMPLERS, create_timestep_sampler

#: Settings a resume may change; any other difference refuses the resume.
RESUMABLE_CHANGES = (
    "steps",
    "save_every",
    "keep_checkpoints",
    "log_every",
    "device",
    "threads",
    "sample_count",
    "sample_steps",
    "sample_every",
    "log",  # where metrics go besides metrics.jsonl (a resume may add csv / tensorboard)
    "sam_sync",  # how ranks share the SAM ascent step under torchrun (see flatkit/distributed.py)
)

#: Files that mark a folder as holding a run.
RUN_FILES = ("ckpt.pt", "train.json", "metrics.jsonl")

#: Independent random streams, each an explicit CPU torch.Generator.
STREAMS = ("data", "timesteps", "noise", "ip", "dropout")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in ``train.json`` and in every checkpoint)."""

    data: str = "builtin:shapes16"  # data spec
    holdout: float | int | None = None  # hold out a fraction in (0, 0.5] or a count of the items (never trained on)
    holdout_seed: int = 0  # seeds which items are held out (independent of seed)
    preset: str = "auto"  # model preset; "auto": tiny for images, mlp for 2-D points
    dropout: float | None = None  # None: the preset's
    steps: int = 1000  # total optimizer steps (a resume continues up to this)
    batch_size: int = 32
    lr: float | None = None  # AdamW; None: the preset's (ADM presets 1e-4, tiny / mlp 1e-3)
    weight_decay: float = 0.0
    warmup: int = 0  # linear lr warm-up steps
    grad_clip: float = 0.0  # max global grad norm (0: off); on the second-pass gradient with SAM
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # CPU intra-op threads (None: 1 for the tiny / mlp presets, else torch's)
    amp: str = "off"  # off | bf16 | fp16 (fp16 uses a GradScaler)
    sam_rho: float = 0.0  # 0: plain training
    sam_adaptive: bool = False  # ASAM with T_w = |w| + eta on all parameters
    sam_eta: float = 0.01
    sam_sync: bool = True  # under torchrun: all-reduce the first-pass gradient (same e on every rank)
    rho_schedule: str | None = None  # constant | linear (warm-up over rho_warmup steps); None: the preset's
    rho_warmup: int | None = None  # None: the preset's warm-up with the linear schedule, else 0
    ema: list[float] = field(default_factory=lambda: [0.9999])  # EMA rates (empty: none)
    ema_warmup: bool = True  # rate min(r, (1 + n) / (10 + n)) after step n; False: ADM's constant rate
    swa_start: int | None = None  # first step whose weights enter the SWA average (None: no SWA)
    swa_every: int = 1
    ip_gamma: float = 0.0  # input perturbation gamma (DDPM-IP); 0: off
    timestep_sampler: str = "uniform"  # uniform | loss-second-moment
    save_every: int = 1000
    keep_checkpoints: bool = False  # also keep DIR/ckpt_<step>.pt
    log_every: int = 50
    sample_count: int = 64  # samples drawn into DIR/samples.png after training (0: none)
    sample_steps: int = 100  # ancestral DDPM steps (respaced) for those samples
    sample_every: int = 0  # also draw that grid every N steps into DIR/samples/ (and TensorBoard); 0: off
    log: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl (always), csv, tensorboard (loggers.py)


# ----------------------------------------------------------------------------------------------- validation
def _positive(name: str, value, allow_zero: bool = False) -> None:
    if (
        value is None
        or (value < 0 if allow_zero else value <= 0)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        rel = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"{name}: must be {rel}, got {value}")


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Check every field; returns a copy with the data spec normalised (absolute paths). Raises UsageError."""
    from flatkit.data.holdout import parse_holdout

    cfg = dataclasses.replace(cfg, ema=[float(r) for r in cfg.ema], holdout=parse_holdout(cfg.holdout))
    cfg = _with_preset_defaults(cfg)
    _check_numbers(cfg)
    _check_choices(cfg)
    return _with_normalised_data(cfg)


def _with_preset_defaults(cfg: TrainConfig) -> TrainConfig:
    """``lr``, ``rho_schedule`` and ``rho_warmup`` left None filled in from the (resolved) preset."""
    from flatkit.data import spec_kind
    from flatkit.models.presets import PRESET_LR, PRESET_RHO_WARMUP

    preset = cfg.preset
    if preset == "auto":
        preset = "mlp" if spec_kind(cfg.data) == "points" else "tiny"
    if cfg.lr is None:
        cfg = dataclasses.replace(cfg, lr=PRESET_LR.get(preset, 1e-4))
    # SAM's radius schedule: the preset's (a linear ramp for `tiny`, constant for the paper's presets)
    ramp = PRESET_RHO_WARMUP.get(preset, 0) if cfg.sam_rho and cfg.sam_rho > 0 else 0
    if cfg.rho_schedule is None:
        cfg = dataclasses.replace(cfg, rho_schedule="linear" if ramp else "constant")
    if cfg.rho_warmup is None:
        cfg = dataclasses.replace(cfg, rho_warmup=ramp if cfg.rho_schedule == "linear" else 0)
    return cfg


def _check_numbers(cfg: TrainConfig) -> None:
    """The numeric fields: signs, ranges, EMA rates, the SWA start."""
    for name in ("steps", "batch_size", "save_every", "log_every", "swa_every", "sample_steps"):
        _positive(name, getattr(cfg, name))
    for name in ("lr",):
        _positive(name, getattr(cfg, name))
    for name in ("weight_decay", "warmup", "grad_clip", "sam_rho", "ip_gamma", "rho_warmup", "sample_count",
                 "sample_every"):
        _positive(name, getattr(cfg, name), allow_zero=True)
    if cfg.sample_every > 0 and cfg.sample_count == 0:
        raise UsageError(f"sample_every {cfg.sample_every}: needs --samples N > 0 (the grid it draws)")
    _positive("sam_eta", cfg.sam_eta)
    _positive("holdout_seed", cfg.holdout_seed, allow_zero=True)
    if cfg.threads is not None:
        _positive("threads", cfg.threads)
    if cfg.dropout is not None and not 0.0 <= cfg.dropout < 1.0:
        raise UsageError(f"dropout: must lie in [0, 1), got {cfg.dropout}")
    for r in cfg.ema:
        if not 0.0 < r < 1.0:
            raise UsageError(f"ema: rates must lie in (0, 1), got {r:g}")
    if len(set(cfg.ema)) != len(cfg.ema):
        raise UsageError(f"ema: a rate is given twice ({', '.join(f'{r:g}' for r in cfg.ema)})")
    if cfg.swa_start is not None and cfg.swa_start < 1:
        raise UsageError(f"swa_start: must be >= 1, got {cfg.swa_start}")


def _check_choices(cfg: TrainConfig) -> None:
    """The named choices (AMP mode, rho schedule, timestep sampler) and the SAM options that need a radius."""
    if cfg.amp not in AMP_MODES:
        raise UsageError(f"amp: unknown mode {cfg.amp!r} (choose from {', '.join(AMP_MODES)})")
    if cfg.rho_schedule not in RHO_SCHEDULES:
        raise UsageError(
            f"rho_schedule: unknown {cfg.rho_schedule!r} (choose from {', '.join(RHO_SCHEDULES)})"
        )
    if cfg.timestep_sampler not in TIMESTEP_SAMPLERS:
        raise UsageError(
            f"timestep_sampler: unknown {cfg.timestep_sampler!r} "
            f"(choose from {', '.join(TIMESTEP_SAMPLERS)})"
        )
    if (cfg.sam_adaptive or cfg.rho_schedule != "constant") and cfg.sam_rho == 0:
        raise UsageError("sam_adaptive / --rho-schedule: need --sam-rho > 0")
    from flatkit.train.loggers import check_log

    cfg.log = check_log(cfg.log)  # a copy made by validate_config: normalised, tensorboard refused if missing


def _with_normalised_data(cfg: TrainConfig) -> TrainConfig:
    try:
        from flatkit.data.spec import normalise_spec
    except ImportError:  # pragma: no cover - the data package normalises when present
        normalise_spec = None
    if normalise_spec is not None:
        cfg = dataclasses.replace(cfg, data=normalise_spec(cfg.data))
    return cfg


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"device: unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"device {name}: only cpu and cuda are supported")
    return dev


def resolve_model(
    cfg: TrainConfig, kind: str, sample_shape: tuple[int, ...]
) -> tuple[str, ModelConfig, DiffusionConfig]:
    """The preset's configs adapted to the data's shape (image size / channels / point dimension)."""
    from flatkit.models.presets import get_preset

    preset = cfg.preset
    if preset == "auto":
        preset = "mlp" if kind == "points" else "tiny"
    model_cfg, diffusion_cfg = get_preset(preset)
    if kind == "points":
        if model_cfg.arch != "mlp":
            raise UsageError(
                f"preset {preset}: an image model, but {cfg.data} holds 2-D points (use --preset mlp)"
            )
        model_cfg.data_dim = int(sample_shape[0])
    else:
        if model_cfg.arch == "mlp":
            raise UsageError(
                f"preset {preset}: a 2-D point model, but {cfg.data} holds images "
                f"{'x'.join(map(str, sample_shape))} (use --preset tiny or an image preset)"
            )
        c, h, w = sample_shape
        if h != w:
            raise UsageError(f"data {cfg.data}: images must be square, got {h}x{w}")
        model_cfg.in_channels = int(c)
        model_cfg.image_size = int(h)
    if cfg.dropout is not None:
        model_cfg.dropout = float(cfg.dropout)
    return preset, model_cfg, diffusion_cfg


def stream_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed per random stream, derived from the run seed."""
    return (
        int.from_bytes(hashlib.sha256(f"flatkit-train:{seed}:{stream}".encode()).digest()[:8], "little") >> 1
    )


def changed_fields(old: dict, new: dict) -> list[str]:
    """``name: old -> new`` for every field that differs and is not a resumable setting."""
    out = []
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for k in sorted(set(old) | set(new)):
        if k in RESUMABLE_CHANGES or (k not in old and new.get(k) == defaults.get(k)):  # a field added since
            continue
        if jsonable(old.get(k)) != jsonable(new.get(k)):
            out.append(f"{k}: {old.get(k)!r} -> {new.get(k)!r}")
    return out


# ----------------------------------------------------------------------------------------------- data order
class DataOrder:
    """Epoch permutations from an explicit generator; batches never straddle an epoch (ADM's drop_last)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n = int(n)
        self.generator = generator
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def next(self, batch_size: int) -> torch.Tensor:
        if self.perm is None or self.pos + batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + batch_size]
        self.pos += batch_size
        return idx

    def state_dict(self) -> dict:
        return {"perm": None if self.perm is None else self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.perm = None if s["perm"] is None else s["perm"].clone()
        self.pos = int(s["pos"])


# ----------------------------------------------------------------------------------------------- the run
def _check_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise UsageError("resume / --overwrite: choose one")
    if out.exists() and not out.is_dir():
        raise UsageError(f"out {out}: exists and is not a folder")
    present = [f for f in RUN_FILES if (out / f).exists()]
    if resume:
        if not (out / "ckpt.pt").is_file():
            raise UsageError(f"resume: {out} holds no checkpoint (ckpt.pt) to resume from")
    elif present and not overwrite:
        raise UsageError(
            f"out {out}: already holds a run ({', '.join(present)}); pass --resume to continue "
            "it or --overwrite to replace it"
        )


def _check_foreign_files(out: Path, resume: bool, overwrite: bool) -> None:
    """A new run refuses a folder holding files it did not write (checked once the configuration is valid)."""
    if resume or overwrite or not out.is_dir():
        return
    from flatkit.outputs import LOCK_NAME

    other = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME and not _is_run_file(p.name))
    if other:
        raise UsageError(f"out {out}: holds other files ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}"
                         "); a training run needs its own folder (or pass --overwrite to write beside them)")


def _is_run_file(name: str) -> bool:
    """A file flatkit train writes (checkpoints, its json, metrics, sample grids, temp files)."""
    if name in (CSV_NAME, TENSORBOARD_DIR, SAMPLES_DIR):  # the --log and --sample-every outputs
        return True
    return (name in RUN_FILES or name == "holdout.json" or name.endswith(".tmp")
            or (name.startswith("ckpt") and name.endswith(".pt"))
            or (name.startswith(("samples", ".ckpt", ".train", ".metrics")) and "." in name))


def _remove_orphans(out: Path) -> None:
    """Temp files a kill between writing and renaming left behind (``.ckpt.pt.*.tmp``, ``metrics.jsonl.tmp``):
    the renamed files before them are complete, so they are only removed."""
    if not dist.is_main():
        return
    for p in [*out.glob(".ckpt*.pt.*.tmp"), *out.glob(".*.json.*.tmp"), out / "metrics.jsonl.tmp"]:
        if p.is_file():
            p.unlink(missing_ok=True)
            print(f"note: removed {p} (a temp file an interrupted run left behind)", file=sys.stderr)


def _clear_run_files(out: Path) -> None:
    for name in (*RUN_FILES, "samples.png", "holdout.json"):
        (out / name).unlink(missing_ok=True)
    for p in out.glob("ckpt_*.pt"):
        p.unlink()
    _clear_watch_files(out)


def _clear_watch_files(out: Path, after_step: int | None = None) -> None:
    """metrics.csv, the TensorBoard event files and the sample grids of DIR/samples/ (with ``after_step``: only
    the grids of later steps, which a resumed run draws again); folders left empty are removed."""
    if after_step is None:
        (out / CSV_NAME).unlink(missing_ok=True)
        for p in (out / TENSORBOARD_DIR).glob("events.out.tfevents.*"):
            p.unlink()
    for p in (out / SAMPLES_DIR).glob("step_*.png"):
        step = p.stem[len("step_"):]
        if after_step is None or (step.isdigit() and int(step) > after_step):
            p.unlink()
    for d in (out / TENSORBOARD_DIR, out / SAMPLES_DIR):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    loggers: Sequence[Logger] = (),
) -> Path:
    """Train (or continue training) a DDPM; returns the path of the final checkpoint ``DIR/ckpt.pt``.

    All input is checked before anything is written; bad input raises :class:`UsageError`.
    ``config.threads`` sets torch's CPU thread count for the duration of the call only.
    ``loggers``: custom :class:`flatkit.train.loggers.Logger` objects that receive every metrics record and
    sample grid besides the ``config.log`` ones (on the writing rank only).
    """
    threads_before = torch.get_num_threads()
    threads = config.threads
    if threads is None and config.preset in ("auto", "tiny", "mlp"):
        # The small presets gain nothing from intra-op threads, and when another process shares the cores
        # torch's spin-waiting threads slow a step 10-50x (measured: 0.22 s vs 10 s per SAM step on 2 cores).
        threads = 1
    if threads is not None and threads > 0:
        torch.set_num_threads(int(threads))
    try:
        return _train(config, out_dir, resume, overwrite, progress, loggers)
    finally:
        torch.set_num_threads(threads_before)


@dataclass
class _Training:
    """What a training run carries from step to step, all of it saved in its checkpoints."""

    cfg: TrainConfig
    out: Path
    main: bool  # this process writes the files (rank 0 under torchrun)
    preset: str
    run_config: RunConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    sam: SAM | None
    ema: EMA
    swa: SWA | None
    sampler: Any  # the timestep sampler
    gens: dict[str, torch.Generator]
    order: DataOrder
    window: MetricsWindow
    step: int = 0
    elapsed: float = 0.0
    watch: Loggers = field(default_factory=lambda: Loggers([]))  # where records go (none off the writing rank)
    preview: Any = None  # preview(out, file): the sample grid of every weight set into DIR/file

    def rho(self, at_step: int) -> float:
        """SAM's radius at ``at_step`` (0 without SAM)."""
        cfg = self.cfg
        return rho_at(at_step, cfg.sam_rho, cfg.rho_schedule, cfg.rho_warmup) if self.sam is not None else 0.0


def _train(
    config: TrainConfig, out_dir: str | Path, resume: bool, overwrite: bool, progress: bool,
    loggers: Sequence[Logger] = (),
) -> Path:
    from flatkit.data import load_dataset
    from flatkit.diffusion import create_diffusion

    cfg = validate_config(config)
    out = Path(out_dir)
    _check_out_dir(out, resume, overwrite)
    if resume:
        _remove_orphans(out)
    ckpt = _resume_checkpoint(out, cfg) if resume else None
    device = resolve_device(cfg.device)
    dist.init()  # under torchrun: DDP over the ranks, rank 0 writes (no-op in one process)
    shard = dist.TrainSharding(cfg.batch_size, cfg.sam_sync)
    main = dist.is_main()
    if cfg.amp == "fp16" and device.type != "cuda":
        raise UsageError("amp fp16: needs a CUDA device (use bf16 on the CPU)")

    dataset, holdout = _training_data(cfg, load_dataset(cfg.data))
    if len(dataset) < cfg.batch_size:
        raise UsageError(
            f"batch_size {cfg.batch_size}: larger than the dataset {cfg.data} ({len(dataset)} samples"
            f"{' left after --holdout' if holdout else ''})"
        )
    preset, model_cfg, diffusion_cfg = resolve_model(cfg, dataset.kind, tuple(dataset.sample_shape))
    diffusion = create_diffusion(diffusion_cfg)
    run_config = RunConfig(model=model_cfg, diffusion=diffusion_cfg, data=cfg.data, source="flatkit",
                           holdout=holdout)
    _check_foreign_files(out, resume, overwrite)
    tr = _new_training(cfg, out, main, preset, run_config, int(diffusion.num_timesteps), len(dataset), device)

    dist.barrier()  # every rank has checked --out and read the checkpoint before rank 0 writes
    if ckpt is not None:
        _restore(tr, ckpt)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            _clear_run_files(out)
    if main:
        _write_train_json(tr, device, resumed=ckpt is not None)
        if holdout is not None:
            atomic_write_text(out / "holdout.json", json.dumps(holdout) + "\n")

    tr.preview = functools.partial(_write_preview, tr.model, model_cfg, diffusion_cfg, tr.ema, tr.swa, cfg,
                                   dataset, device)
    if main:
        tr.watch = _open_loggers(tr, ckpt, loggers)
    try:
        lr, rho = _run_steps(tr, diffusion, shard, dataset, device, progress)
        if tr.window.steps > 0:
            _log_line(tr, tr.step, lr, rho, partial=True)  # after the checkpoint, which keeps the window's sums

        if cfg.sample_count > 0 and main:
            tr.preview(out)
    finally:
        tr.watch.close()
    return out / "ckpt.pt"


def _open_loggers(tr: _Training, ckpt: dict | None, extra: Sequence[Logger]) -> Loggers:
    """The ``--log`` loggers and ``extra`` ones; a resumed run first drops the sample grids past its checkpoint."""
    resume_step = None if ckpt is None else int(ckpt["step"])
    if resume_step is not None:
        _clear_watch_files(tr.out, after_step=resume_step)
    return Loggers.open(tr.cfg.log, tr.out, resume_step, extra)


def _training_data(cfg: TrainConfig, dataset: Any) -> tuple[Any, dict | None]:
    """The items the trainer sees: the whole data set, or with ``holdout`` its train side (the held-out items,
    chosen by ``holdout_seed``, are never drawn); and the held-out record (None without ``holdout``)."""
    if cfg.holdout is None:
        return dataset, None
    from flatkit.data.holdout import Split, holdout_record

    record = holdout_record(cfg.data, len(dataset), cfg.holdout, cfg.holdout_seed)
    return Split(dataset, record, "train"), record


def _resume_checkpoint(out: Path, cfg: TrainConfig) -> dict:
    """The checkpoint of the run in ``out``, refused if its configuration differs beyond the resumable settings
    or it is past ``cfg.steps``."""
    ckpt = read_pt(out / "ckpt.pt")
    if not is_flatkit_checkpoint(ckpt) or "config" not in ckpt.get("train", {}):
        raise UsageError(f"resume: {out / 'ckpt.pt'} is not a flatkit training checkpoint")
    old = ckpt["train"]["config"]
    diff = changed_fields(old, dataclasses.asdict(cfg))
    if diff:
        raise UsageError(
            f"resume: the configuration differs from the run in {out} ({'; '.join(diff)}); "
            "only --steps, --save-every, --log-every, --keep-checkpoints, --device, --threads "
            "and the sample options may change"
        )
    if int(ckpt["step"]) > cfg.steps:
        raise UsageError(f"steps {cfg.steps}: the run in {out} is already at step {ckpt['step']}")
    return ckpt


def _new_training(
    cfg: TrainConfig, out: Path, main: bool, preset: str, run_config: RunConfig, T: int, n_data: int,
    device: torch.device,
) -> _Training:
    """A fresh run over ``n_data`` samples and ``T`` timesteps: the model (seeded), optimizer, averages, timestep
    sampler, random streams and data order."""
    from flatkit.models.presets import build_model

    model = build_model(run_config.model, seed=cfg.seed, device=device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    sam = SAM(params, adaptive=cfg.sam_adaptive, eta=cfg.sam_eta) if cfg.sam_rho > 0 else None
    ema = EMA(model, cfg.ema, warmup=cfg.ema_warmup)
    swa = SWA(model, cfg.swa_start, cfg.swa_every) if cfg.swa_start is not None else None
    sampler = create_timestep_sampler(cfg.timestep_sampler, T)
    gens = {s: torch.Generator().manual_seed(stream_seed(cfg.seed, s)) for s in STREAMS}
    order = DataOrder(n_data, gens["data"])
    return _Training(
        cfg=cfg, out=out, main=main, preset=preset, run_config=run_config, model=model, optimizer=optimizer,
        scaler=scaler, sam=sam, ema=ema, swa=swa, sampler=sampler, gens=gens, order=order, window=MetricsWindow(),
    )


def _restore(tr: _Training, ckpt: dict) -> None:
    """Load the state of a resumed run (weights, optimizer, averages, sampler, streams, data order, window)."""
    state = ckpt["train"]
    tr.model.load_state_dict(ckpt["weights"]["raw"])
    tr.optimizer.load_state_dict(state["optimizer"])
    if tr.scaler is not None and state.get("scaler"):
        tr.scaler.load_state_dict(state["scaler"])
    tr.ema.load_state_dicts(ckpt["weights"])
    if tr.swa is not None and int(state["swa_n"]) > 0:
        tr.swa.load_state_dict(ckpt["weights"]["swa"], int(state["swa_n"]))
    tr.sampler.load_state_dict(state["timestep_sampler"])
    for s in STREAMS:
        tr.gens[s].set_state(state["rng"][s])
    tr.order.load_state_dict(state["data_order"])
    tr.window.load_state_dict(state["metrics_window"])
    tr.step, tr.elapsed = int(ckpt["step"]), float(state["elapsed"])
    if tr.main:
        truncate_metrics(tr.out / "metrics.jsonl", tr.step)


def _write_train_json(tr: _Training, device: torch.device, resumed: bool) -> None:
    cfg = tr.cfg
    n_params = sum(p.numel() for p in tr.model.parameters())
    atomic_write_text(
        tr.out / "train.json",
        json.dumps(
            jsonable(
                {
                    "config": dataclasses.asdict(cfg),
                    "config_hash": config_hash(_hashed(cfg)),
                    "preset": tr.preset,
                    "model": tr.run_config.model,
                    "diffusion": tr.run_config.diffusion,
                    "parameters": n_params,
                    "device": str(device),
                    "flatkit_version": __version__,
                    "torch_version": torch.__version__,
                    "resumed_from_step": tr.step if resumed else None,
                    "holdout": holdout_summary(tr.run_config.holdout),
                }
            ),
            indent=2,
        )
        + "\n",
    )


def _save(tr: _Training, at_step: int) -> None:
    """DIR/ckpt.pt (and DIR/ckpt_<step>.pt with keep_checkpoints): weights and the full training state."""
    if not tr.main:
        return
    cfg = tr.cfg
    weights = {"raw": tr.model.state_dict(), **tr.ema.state_dicts(tr.model)}
    if tr.swa is not None and tr.swa.n > 0:
        weights["swa"] = tr.swa.state_dict()
    train_state = {
        "config": dataclasses.asdict(cfg),
        "config_hash": config_hash(_hashed(cfg)),
        "preset": tr.preset,
        "optimizer": tr.optimizer.state_dict(),
        "scaler": tr.scaler.state_dict() if tr.scaler is not None else None,
        "timestep_sampler": tr.sampler.state_dict(),
        "rng": {s: g.get_state() for s, g in tr.gens.items()},
        "data_order": tr.order.state_dict(),
        "swa_n": tr.swa.n if tr.swa is not None else 0,
        "metrics_window": tr.window.state_dict(),
        "elapsed": tr.elapsed,
    }
    ck = make_checkpoint(tr.run_config, weights, step=at_step, ema_rates=cfg.ema, train=train_state)
    save_checkpoint(ck, tr.out / "ckpt.pt")
    if cfg.keep_checkpoints:
        save_checkpoint(ck, tr.out / f"ckpt_{at_step}.pt")


def _log_line(tr: _Training, at_step: int, lr: float, rho: float, partial: bool) -> None:
    """One record of DIR/metrics.jsonl: the metrics window's summary at ``at_step``."""
    if not tr.main:
        return
    rec = {"step": at_step, **tr.window.summary(), "lr": lr, "rho": rho, "wall_time": tr.elapsed,
           **_averaging_metrics(tr, at_step)}
    if partial:
        rec["partial"] = True
    # every record goes through tr.watch (not append_metrics): metrics.jsonl first (the source of truth), then
    # the --log csv / tensorboard views and custom loggers
    tr.watch.log_metrics(rec)


@torch.no_grad()
def _averaging_metrics(tr: _Training, at_step: int) -> dict:
    """EMA / SWA bookkeeping: per EMA rate the rate of its last update (``ema_<r>_rate``, with the warm-up) and
    ``ema_<r>_dist`` = ||w_ema - w||_2 over the parameters; ``swa_n`` (weight sets averaged) and ``swa_dist``."""
    params = dict(tr.model.named_parameters())
    out: dict[str, Any] = {}
    for r, shadow in zip(tr.ema.rates, tr.ema.shadow, strict=True):
        out[f"{ema_name(r)}_rate"] = tr.ema.rate_at(r, at_step)
        out[f"{ema_name(r)}_dist"] = _dist(shadow, params)
    if tr.swa is not None:
        out["swa_n"] = tr.swa.n
        out["swa_dist"] = _dist(tr.swa.mean, params) if tr.swa.n else None
    return out


def _dist(avg: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> float:
    """||avg - w||_2 over the parameters, in float64."""
    return float(global_norm([avg[n].double() - p.detach().double() for n, p in params.items()]))


def _run_steps(
    tr: _Training, diffusion, shard: dist.TrainSharding, dataset, device: torch.device, progress: bool
) -> tuple[float, float]:
    """Train from ``tr.step`` up to ``cfg.steps``, logging and saving on the way; the last lr and rho."""
    from flatkit.progress import bar as progress_bar

    cfg = tr.cfg
    T = int(diffusion.num_timesteps)
    bar = progress_bar(total=cfg.steps, initial=tr.step, desc="train", unit="step", enabled=progress and tr.main)
    lr = lr_at(max(tr.step, 1), cfg.lr, cfg.warmup)
    rho = tr.rho(max(tr.step, 1))
    step_model = shard.wrap(tr.model, device)  # DDP under torchrun, the model itself in one process
    try:
        while tr.step < cfg.steps:
            s = tr.step + 1
            t0 = time.perf_counter()
            lr = lr_at(s, cfg.lr, cfg.warmup)
            _set_lr(tr.optimizer, lr)
            rho = tr.rho(s)
            batch = _draw_batch(dataset, tr.order, tr.sampler, tr.gens, cfg, device)
            res = _step(tr, s, step_model, diffusion, shard, batch, rho)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            tr.elapsed += dt
            tr.window.add(res.losses, batch.t, T, res.grad_norm, res.e_norm, dt)
            tr.step = s
            bar.update(1)
            bar.set_postfix(loss=f"{res.loss:.4f}", refresh=False)
            _after_step(tr, res, lr, rho)
    finally:
        bar.close()
    return lr, rho


def _step(
    tr: _Training, s: int, step_model: torch.nn.Module, diffusion, shard: dist.TrainSharding, batch: Batch,
    rho: float,
) -> StepResult:
    """Optimizer step ``s`` on ``batch``, then the timestep sampler and the weight averages."""
    cfg = tr.cfg
    res = train_step(
        step_model,
        diffusion,
        tr.optimizer,
        shard.local(batch),  # this rank's slice of the global batch
        ip_gamma=cfg.ip_gamma,
        sam=tr.sam,
        rho=rho,
        grad_clip=cfg.grad_clip,
        amp=cfg.amp,
        scaler=tr.scaler,
        first_pass_context=shard.first_pass_context(step_model),
    )
    res = shard.gather(res, batch)  # the global batch's per-sample losses, on every rank
    tr.sampler.update(batch.t.cpu(), res.losses)
    if not res.skipped:
        tr.ema.update(tr.model, s)
        if tr.swa is not None:
            tr.swa.maybe_update(tr.model, s)
    return res


def _after_step(tr: _Training, res: StepResult, lr: float, rho: float) -> None:
    """Log every ``log_every`` steps, stop on a diverged loss, save every ``save_every`` steps and at the end."""
    cfg, step = tr.cfg, tr.step
    diverged = not math.isfinite(res.loss) and tr.scaler is None
    if step % cfg.log_every == 0 or diverged:
        _log_line(tr, step, lr, rho, partial=diverged)
        tr.window.reset()
    if diverged:
        raise FlatkitError(
            f"training diverged at step {step} (loss {res.loss}); the last good "
            f"checkpoint is {tr.out / 'ckpt.pt'} (try a smaller --lr or --sam-rho)"
        )
    if cfg.sample_every and step % cfg.sample_every == 0 and tr.main:
        _periodic_samples(tr, step)
    if step % cfg.save_every == 0 or step == cfg.steps:
        _save(tr, step)


def _periodic_samples(tr: _Training, step: int) -> None:
    """``--sample-every``: DIR/samples/step_<step>.png (the panels of samples.png), also handed to the loggers."""
    name = f"{SAMPLES_DIR}/step_{step:07d}.png"
    (tr.out / SAMPLES_DIR).mkdir(exist_ok=True)
    tr.preview(tr.out, name)
    tr.watch.log_image(step, "samples", read_png(tr.out / name))


def _hashed(cfg: TrainConfig) -> dict:
    """The part of the configuration a resume must keep (its hash is recorded)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES}


def _draw_batch(
    dataset,
    order: DataOrder,
    sampler,
    gens: dict[str, torch.Generator],
    cfg: TrainConfig,
    device: torch.device,
) -> Batch:
    """x0 as the dataset gives it; t and importance weights from the sampler; eps, IP noise and the dropout
    seed from their own generators (all drawn on the CPU, so the streams do not depend on the device)."""
    idx = order.next(cfg.batch_size)
    x0 = dataset.get(idx).to(device)
    t, w = sampler.sample(cfg.batch_size, gens["timesteps"])
    noise = torch.randn(x0.shape, generator=gens["noise"], dtype=x0.dtype)
    ip_noise = torch.randn(x0.shape, generator=gens["ip"], dtype=x0.dtype) if cfg.ip_gamma > 0 else None
    dropout_seed = int(torch.randint(0, 2**62, (1,), generator=gens["dropout"]))
    return Batch(
        x0=x0,
        t=t.to(device),
        weights=w.to(device),
        noise=noise.to(device),
        ip_noise=None if ip_noise is None else ip_noise.to(device),
        dropout_seed=dropout_seed,
    )


def _write_preview(
    model,
    model_cfg: ModelConfig,
    diffusion_cfg: DiffusionConfig,
    ema: EMA,
    swa: SWA | None,
    cfg: TrainConfig,
    dataset,
    device: torch.device,
    out: Path,
    file: str = "samples.png",
) -> None:
    """DIR/samples.png (or DIR/file): one panel per weight set (raw, each EMA rate, SWA), same x_T, on a separate
    copy."""
    from flatkit.models.presets import build_model
    from flatkit.train.preview import draw_samples, save_panels, save_point_panels

    sets = {"raw": model.state_dict(), **ema.state_dicts(model)}
    if swa is not None and swa.n > 0:
        sets["swa"] = swa.state_dict()
    net = build_model(model_cfg, seed=cfg.seed, device=device)
    net.eval()
    shape = tuple(dataset.sample_shape)
    panels = {}
    for name, sd in sets.items():
        net.load_state_dict(sd)
        panels[name] = draw_samples(
            net, diffusion_cfg, shape, dataset.kind, cfg.sample_count, cfg.sample_steps, cfg.seed, device
        ).cpu()
    if dataset.kind == "image":
        save_panels(panels, out / file, upscale=max(1, 64 // shape[-1]))
    else:
        save_point_panels(panels, dataset.get(torch.arange(min(len(dataset), 2000))), out / file)
