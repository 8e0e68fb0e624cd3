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
    DIR/samples.png      samples from the EMA (else raw) weights after training
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flatkit import __version__
from flatkit import distributed as dist
from flatkit.checkpoint import is_flatkit_checkpoint, make_checkpoint, read_pt, save_checkpoint
from flatkit.config import DiffusionConfig, ModelConfig, RunConfig, config_hash
from flatkit.errors import FlatkitError, UsageError
from flatkit.results import atomic_write_text, jsonable
from flatkit.train.averaging import EMA, SWA
from flatkit.train.metrics import MetricsWindow, append_metrics, truncate_metrics
from flatkit.train.sam import SAM
from flatkit.train.schedules import RHO_SCHEDULES, lr_at, rho_at
from flatkit.train.step import AMP_MODES, Batch, train_step
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


# ----------------------------------------------------------------------------------------------- validation
def _positive(name: str, value, allow_zero: bool = False) -> None:
    if (
        value is None
        or (value < 0 if allow_zero else value <= 0)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        rel = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"--{name}: must be {rel}, got {value}")


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Check every field; returns a copy with the data spec normalised (absolute paths). Raises UsageError."""
    cfg = dataclasses.replace(cfg, ema=[float(r) for r in cfg.ema])
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
    for name in ("steps", "batch_size", "save_every", "log_every", "swa_every", "sample_steps"):
        _positive(name.replace("_", "-"), getattr(cfg, name))
    for name in ("lr",):
        _positive(name, getattr(cfg, name))
    for name in ("weight_decay", "warmup", "grad_clip", "sam_rho", "ip_gamma", "rho_warmup", "sample_count"):
        _positive(name.replace("_", "-"), getattr(cfg, name), allow_zero=True)
    _positive("sam-eta", cfg.sam_eta)
    if cfg.threads is not None:
        _positive("threads", cfg.threads)
    if cfg.dropout is not None and not 0.0 <= cfg.dropout < 1.0:
        raise UsageError(f"--dropout: must lie in [0, 1), got {cfg.dropout}")
    for r in cfg.ema:
        if not 0.0 < r < 1.0:
            raise UsageError(f"--ema: rates must lie in (0, 1), got {r:g}")
    if len(set(cfg.ema)) != len(cfg.ema):
        raise UsageError(f"--ema: a rate is given twice ({', '.join(f'{r:g}' for r in cfg.ema)})")
    if cfg.swa_start is not None and cfg.swa_start < 1:
        raise UsageError(f"--swa-start: must be >= 1, got {cfg.swa_start}")
    if cfg.amp not in AMP_MODES:
        raise UsageError(f"--amp: unknown mode {cfg.amp!r} (choose from {', '.join(AMP_MODES)})")
    if cfg.rho_schedule not in RHO_SCHEDULES:
        raise UsageError(
            f"--rho-schedule: unknown {cfg.rho_schedule!r} (choose from {', '.join(RHO_SCHEDULES)})"
        )
    if cfg.timestep_sampler not in TIMESTEP_SAMPLERS:
        raise UsageError(
            f"--timestep-sampler: unknown {cfg.timestep_sampler!r} "
            f"(choose from {', '.join(TIMESTEP_SAMPLERS)})"
        )
    if (cfg.sam_adaptive or cfg.rho_schedule != "constant") and cfg.sam_rho == 0:
        raise UsageError("--sam-adaptive / --rho-schedule: need --sam-rho > 0")
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
        raise UsageError(f"--device: unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: only cpu and cuda are supported")
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
                f"--preset {preset}: an image model, but {cfg.data} holds 2-D points (use --preset mlp)"
            )
        model_cfg.data_dim = int(sample_shape[0])
    else:
        if model_cfg.arch == "mlp":
            raise UsageError(
                f"--preset {preset}: a 2-D point model, but {cfg.data} holds images "
                f"{'x'.join(map(str, sample_shape))} (use --preset tiny or an image preset)"
            )
        c, h, w = sample_shape
        if h != w:
            raise UsageError(f"--data {cfg.data}: images must be square, got {h}x{w}")
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
    for k in sorted(set(old) | set(new)):
        if k in RESUMABLE_CHANGES:
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
        raise UsageError("--resume / --overwrite: choose one")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    present = [f for f in RUN_FILES if (out / f).exists()]
    if resume:
        if not (out / "ckpt.pt").is_file():
            raise UsageError(f"--resume: {out} holds no checkpoint (ckpt.pt) to resume from")
    elif present and not overwrite:
        raise UsageError(
            f"--out {out}: already holds a run ({', '.join(present)}); pass --resume to continue "
            "it or --overwrite to replace it"
        )


def _clear_run_files(out: Path) -> None:
    for name in (*RUN_FILES, "samples.png"):
        (out / name).unlink(missing_ok=True)
    for p in out.glob("ckpt_*.pt"):
        p.unlink()


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train (or continue training) a DDPM; returns the path of the final checkpoint ``DIR/ckpt.pt``.

    All input is checked before anything is written; bad input raises :class:`UsageError`.
    ``config.threads`` sets torch's CPU thread count for the duration of the call only.
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
        return _train(config, out_dir, resume, overwrite, progress)
    finally:
        torch.set_num_threads(threads_before)


def _train(config: TrainConfig, out_dir: str | Path, resume: bool, overwrite: bool, progress: bool) -> Path:
    from flatkit.data import load_dataset
    from flatkit.diffusion import create_diffusion
    from flatkit.models.presets import build_model

    cfg = validate_config(config)
    out = Path(out_dir)
    _check_out_dir(out, resume, overwrite)
    ckpt = None
    if resume:
        ckpt = read_pt(out / "ckpt.pt")
        if not is_flatkit_checkpoint(ckpt) or "config" not in ckpt.get("train", {}):
            raise UsageError(f"--resume: {out / 'ckpt.pt'} is not a flatkit training checkpoint")
        old = ckpt["train"]["config"]
        diff = changed_fields(old, dataclasses.asdict(cfg))
        if diff:
            raise UsageError(
                f"--resume: the configuration differs from the run in {out} ({'; '.join(diff)}); "
                "only --steps, --save-every, --log-every, --keep-checkpoints, --device, --threads "
                "and the sample options may change"
            )
        if int(ckpt["step"]) > cfg.steps:
            raise UsageError(f"--steps {cfg.steps}: the run in {out} is already at step {ckpt['step']}")
    device = resolve_device(cfg.device)
    dist.init()  # under torchrun: DDP over the ranks, rank 0 writes (no-op in one process)
    shard = dist.TrainSharding(cfg.batch_size, cfg.sam_sync)
    main = dist.is_main()
    if cfg.amp == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16: needs a CUDA device (use bf16 on the CPU)")

    dataset = load_dataset(cfg.data)
    if len(dataset) < cfg.batch_size:
        raise UsageError(
            f"--batch-size {cfg.batch_size}: larger than the dataset {cfg.data} ({len(dataset)} samples)"
        )
    preset, model_cfg, diffusion_cfg = resolve_model(cfg, dataset.kind, tuple(dataset.sample_shape))
    diffusion = create_diffusion(diffusion_cfg)
    T = int(diffusion.num_timesteps)
    model = build_model(model_cfg, seed=cfg.seed, device=device)
    model.train()
    run_config = RunConfig(model=model_cfg, diffusion=diffusion_cfg, data=cfg.data, source="flatkit")

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    sam = SAM(params, adaptive=cfg.sam_adaptive, eta=cfg.sam_eta) if cfg.sam_rho > 0 else None
    ema = EMA(model, cfg.ema, warmup=cfg.ema_warmup)
    swa = SWA(model, cfg.swa_start, cfg.swa_every) if cfg.swa_start is not None else None
    sampler = create_timestep_sampler(cfg.timestep_sampler, T)
    gens = {s: torch.Generator().manual_seed(stream_seed(cfg.seed, s)) for s in STREAMS}
    order = DataOrder(len(dataset), gens["data"])
    window = MetricsWindow()
    step, elapsed = 0, 0.0

    dist.barrier()  # every rank has checked --out and read the checkpoint before rank 0 writes
    if ckpt is not None:
        tr = ckpt["train"]
        model.load_state_dict(ckpt["weights"]["raw"])
        optimizer.load_state_dict(tr["optimizer"])
        if scaler is not None and tr.get("scaler"):
            scaler.load_state_dict(tr["scaler"])
        ema.load_state_dicts(ckpt["weights"])
        if swa is not None and int(tr["swa_n"]) > 0:
            swa.load_state_dict(ckpt["weights"]["swa"], int(tr["swa_n"]))
        sampler.load_state_dict(tr["timestep_sampler"])
        for s in STREAMS:
            gens[s].set_state(tr["rng"][s])
        order.load_state_dict(tr["data_order"])
        window.load_state_dict(tr["metrics_window"])
        step, elapsed = int(ckpt["step"]), float(tr["elapsed"])
        if main:
            truncate_metrics(out / "metrics.jsonl", step)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            _clear_run_files(out)

    n_params = sum(p.numel() for p in model.parameters())
    if main:
        atomic_write_text(
            out / "train.json",
            json.dumps(
                jsonable(
                    {
                        "config": dataclasses.asdict(cfg),
                        "config_hash": config_hash(_hashed(cfg)),
                        "preset": preset,
                        "model": model_cfg,
                        "diffusion": diffusion_cfg,
                        "parameters": n_params,
                        "device": str(device),
                        "flatkit_version": __version__,
                        "torch_version": torch.__version__,
                        "resumed_from_step": step if ckpt is not None else None,
                    }
                ),
                indent=2,
            )
            + "\n",
        )

    def save(at_step: int) -> None:
        if not main:
            return
        weights = {"raw": model.state_dict(), **ema.state_dicts(model)}
        if swa is not None and swa.n > 0:
            weights["swa"] = swa.state_dict()
        train_state = {
            "config": dataclasses.asdict(cfg),
            "config_hash": config_hash(_hashed(cfg)),
            "preset": preset,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "timestep_sampler": sampler.state_dict(),
            "rng": {s: g.get_state() for s, g in gens.items()},
            "data_order": order.state_dict(),
            "swa_n": swa.n if swa is not None else 0,
            "metrics_window": window.state_dict(),
            "elapsed": elapsed,
        }
        ck = make_checkpoint(run_config, weights, step=at_step, ema_rates=cfg.ema, train=train_state)
        save_checkpoint(ck, out / "ckpt.pt")
        if cfg.keep_checkpoints:
            save_checkpoint(ck, out / f"ckpt_{at_step}.pt")

    def log_line(at_step: int, lr: float, rho: float, partial: bool) -> None:
        if not main:
            return
        rec = {"step": at_step, **window.summary(), "lr": lr, "rho": rho, "wall_time": elapsed}
        if partial:
            rec["partial"] = True
        append_metrics(out / "metrics.jsonl", rec)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.steps, initial=step, desc="train", disable=not (progress and main), dynamic_ncols=True, unit="step"
    )
    lr = lr_at(max(step, 1), cfg.lr, cfg.warmup)
    rho = rho_at(max(step, 1), cfg.sam_rho, cfg.rho_schedule, cfg.rho_warmup) if sam is not None else 0.0
    step_model = shard.wrap(model, device)  # DDP under torchrun, the model itself in one process
    try:
        while step < cfg.steps:
            s = step + 1
            t0 = time.perf_counter()
            lr = lr_at(s, cfg.lr, cfg.warmup)
            _set_lr(optimizer, lr)
            rho = rho_at(s, cfg.sam_rho, cfg.rho_schedule, cfg.rho_warmup) if sam is not None else 0.0
            batch = _draw_batch(dataset, order, sampler, gens, cfg, device)
            res = train_step(
                step_model,
                diffusion,
                optimizer,
                shard.local(batch),  # this rank's slice of the global batch
                ip_gamma=cfg.ip_gamma,
                sam=sam,
                rho=rho,
                grad_clip=cfg.grad_clip,
                amp=cfg.amp,
                scaler=scaler,
                first_pass_context=shard.first_pass_context(step_model),
            )
            res = shard.gather(res, batch)  # the global batch's per-sample losses, on every rank
            sampler.update(batch.t.cpu(), res.losses)
            if not res.skipped:
                ema.update(model, s)
                if swa is not None:
                    swa.maybe_update(model, s)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            elapsed += dt
            window.add(res.losses, batch.t, T, res.grad_norm, res.e_norm, dt)
            step = s
            bar.update(1)
            bar.set_postfix(loss=f"{res.loss:.4f}", refresh=False)
            diverged = not math.isfinite(res.loss) and scaler is None
            if step % cfg.log_every == 0 or diverged:
                log_line(step, lr, rho, partial=diverged)
                window.reset()
            if diverged:
                raise FlatkitError(
                    f"training diverged at step {step} (loss {res.loss}); the last good "
                    f"checkpoint is {out / 'ckpt.pt'} (try a smaller --lr or --sam-rho)"
                )
            if step % cfg.save_every == 0 or step == cfg.steps:
                save(step)
    finally:
        bar.close()
    if window.steps > 0:
        log_line(step, lr, rho, partial=True)  # after the checkpoint, which keeps the window's sums

    if cfg.sample_count > 0 and main:
        _write_preview(model, model_cfg, diffusion_cfg, ema, swa, cfg, dataset, device, out)
    return out / "ckpt.pt"


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
) -> None:
    """DIR/samples.png: one panel per weight set (raw, each EMA rate, SWA), same x_T, on a separate copy."""
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
        save_panels(panels, out / "samples.png", upscale=max(1, 64 // shape[-1]))
    else:
        save_point_panels(panels, dataset.get(torch.arange(min(len(dataset), 2000))), out / "samples.png")
