"""Batched sampling with per-sample seeds (DDPM ancestral or DDIM over T' respaced steps).

Every sample i owns a ``torch.Generator`` seeded from (seed, i) through ``numpy.random.SeedSequence``; it
draws
the sample's x_T first, then every noise of its chain. So a sample depends only on (seed, i), never on the
batch
it was drawn in, and two runs that share a seed are paired sample by sample: the prior-perturbation and
quantization analyses reuse the same generators with a perturbed x_T or perturbed weights.

Respacing follows ADM (``timestep_respacing``): by default ``"ddim<T'>"`` for DDIM and ``"<T'>"`` (evenly
spaced
sections) for DDPM, and all steps when T' equals the schedule's length.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flatkit.errors import FlatkitError, UsageError
from flatkit.results import Result
from flatkit.settings import SampleSettings, takes

SAMPLERS = ("ddpm", "ddim")

#: z (N, ...) standard normal and the samples' global indices -> x_T (N, ...): how the prior is drawn.
PriorFn = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]
#: (global indices, respaced index i, original t (B,), x_t, model output) at every step of every batch.
ChainCallback = Callable[[Sequence[int], int, torch.Tensor, torch.Tensor, torch.Tensor], None]


#: How samples are drawn: the sampler settings plus the seed and micro-batch (:class:`flatkit.settings.SampleSettings`,
#: whose fields are ``n``, ``sampler``, ``sampling_steps``, ``ddim_eta``, ``respacing``, ``clip``, ``seed``,
#: ``batch_size``). Every sampling analysis derives its own with :func:`sampler_config`.
SamplerConfig = SampleSettings


def sampler_config(s: Any) -> SampleSettings:
    """The :class:`SamplerConfig` of any settings that include the sampler's (prior, exposure, quantize ...)."""
    if type(s) is SampleSettings:
        return s
    return SampleSettings(**{k: getattr(s, k) for k in SampleSettings.__dataclass_fields__})


def respacing_spec(num_timesteps: int, cfg: Any) -> str:
    """The ADM respacing string for T' steps ("" = every step of the schedule)."""
    if cfg.respacing is not None:
        return cfg.respacing
    if cfg.sampling_steps > num_timesteps:
        raise UsageError(f"sampling_steps {cfg.sampling_steps}: the schedule has only {num_timesteps} steps")
    if cfg.sampling_steps == num_timesteps:
        return ""
    return f"ddim{cfg.sampling_steps}" if cfg.sampler == "ddim" else str(cfg.sampling_steps)


def respaced(diffusion: Any, cfg: Any) -> Any:
    """The diffusion respaced to T' steps (from its original schedule)."""
    spec = respacing_spec(int(diffusion.original_num_steps), cfg)
    try:
        return diffusion.respace(spec)
    except UsageError as e:
        raise UsageError(f"respacing {spec!r}: {e}") from None


def sample_seed(seed: int, i: int, stream: int = 0) -> int:
    """A 63-bit seed for sample ``i`` of run ``seed`` (stream 0: x_T and the chain; others: extra noise)."""
    state = np.random.SeedSequence([int(seed), int(i), int(stream)]).generate_state(1, np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def sample_generators(seed: int, indices: Sequence[int], stream: int = 0) -> list[torch.Generator]:
    """One CPU generator per sample (the noise is drawn on the CPU and moved, so any device gives the
    same)."""
    return [torch.Generator(device="cpu").manual_seed(sample_seed(seed, i, stream)) for i in indices]


def standard_normal(generators: Sequence[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    """z (N, *shape) ~ N(0, I), row i drawn from generator i (float32, CPU)."""
    return torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators])


def sample_shape(model_config: Any) -> tuple[int, ...]:
    """(C, H, W) for the ADM UNet, (D,) for the MLP denoiser."""
    if getattr(model_config, "arch", "adm_unet") == "mlp":
        return (int(model_config.data_dim),)
    return (int(model_config.in_channels), int(model_config.image_size), int(model_config.image_size))


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def run_chain(model: Any, diffusion: Any, x_T: torch.Tensor, generator: Any, cfg: Any,
              callback: Callable | None = None) -> torch.Tensor:
    """x_0 of one batch of chains from ``x_T`` with ``cfg.sampler`` (DDPM ancestral or DDIM with ``cfg.ddim_eta``),
    clipping the x_0 prediction when ``cfg.clip``; ``generator``: one per sample, or one for the batch. The one
    place that picks the per-step sampler of :mod:`flatkit.diffusion.samplers`."""
    from flatkit.diffusion.samplers import ddim_sample, ddpm_sample

    with torch.no_grad():
        if cfg.sampler == "ddpm":
            return ddpm_sample(diffusion, model, x_T, generator, clip_denoised=cfg.clip, callback=callback)
        return ddim_sample(diffusion, model, x_T, generator, eta=cfg.ddim_eta, clip_denoised=cfg.clip,
                           callback=callback)


class _BatchSampler:
    """One batch of :func:`draw_samples`: the first ``size`` of the remaining indices. Called again with a
    smaller size after running out of memory, which is only transparent while no step has been reported yet
    (a callback that accumulates would see the steps twice)."""

    def __init__(self, model: Any, diffusion: Any, cfg: SamplerConfig, shape: Sequence[int], dev: torch.device,
                 prior: PriorFn | None, callback: ChainCallback | None, bar: Any, rest: list[int]) -> None:
        self.model, self.diffusion, self.cfg, self.shape, self.dev = model, diffusion, cfg, shape, dev
        self.prior, self.callback, self.bar, self.rest = prior, callback, bar, rest
        self.delivered = 0

    def __call__(self, size: int) -> torch.Tensor:
        from flatkit.memory import is_out_of_memory

        bidx = self.rest[:size]
        base = self.bar.n if self.bar is not None else 0  # samples finished before this batch
        T = int(self.diffusion.num_timesteps)
        try:
            gens = sample_generators(self.cfg.seed, bidx)
            z = standard_normal(gens, self.shape)
            x_T = (z if self.prior is None else self.prior(z, bidx)).to(self.dev)

            def cb(i: int, t: torch.Tensor, x: torch.Tensor, mo: torch.Tensor) -> None:
                self.delivered += 1
                if self.callback is not None:
                    self.callback(bidx, i, t, x, mo)
                if self.bar is not None:  # samples done, counting this batch's finished fraction of its T' steps
                    self.bar.set_postfix_str(f"batch of {len(bidx)}: step {self.delivered}/{T}")
                    self.bar.set(base + len(bidx) * self.delivered // T)

            x0 = run_chain(self.model, self.diffusion, x_T, gens, self.cfg, callback=cb)
            return x0.detach().to("cpu", torch.float32)
        except Exception as e:
            if self.delivered and is_out_of_memory(e):
                raise FlatkitError(f"out of memory while sampling a batch of {len(bidx)} after {self.delivered} "
                                   "step(s): rerun with a smaller --batch-size") from None
            raise


def draw_samples(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    diffusion: Any,
    cfg: SamplerConfig,
    shape: Sequence[int],
    device: torch.device | str | None = None,
    prior: PriorFn | None = None,
    callback: ChainCallback | None = None,
    indices: Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "sampling",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Samples (N, *shape) float32 on the CPU, in [-1, 1] for images (x_0 of the chain).

    ``diffusion`` is used as given (respace it first, see :func:`respaced`). ``model`` is any ``model(x, t)``;
    it is called under ``torch.no_grad`` and never modified. ``prior`` maps the per-sample standard normal
    z to
    x_T (default x_T = z). ``indices``: the global sample indices (default ``range(cfg.n)``).

    ``generator``: draw x_T and every noise of all ``cfg.n`` chains from this one generator, in one batch (the
    trainer's preview stream; the samples then depend on ``n``, and ``prior``/``indices`` are not used).
    """

    idx = list(range(cfg.n)) if indices is None else [int(i) for i in indices]
    dev = torch.device(device) if device is not None else _model_device(model)
    from flatkit.precision import autocast_model, current_sampling_precision

    model = autocast_model(model, *current_sampling_precision())  # as given unless --precision/--channels-last
    if generator is not None:
        x_T = torch.randn((cfg.n, *shape), generator=generator).to(dev)
        return run_chain(model, diffusion, x_T, generator, cfg).detach().to("cpu", torch.float32)
    T = int(diffusion.num_timesteps)
    bar = None
    if progress:
        from flatkit.progress import bar as progress_bar

        bar = progress_bar(total=len(idx), desc=f"{desc} ({T} steps each)", unit="sample")
    out = []
    from flatkit.memory import Knob, retry_on_oom

    size = {"batch": int(cfg.batch_size)}  # halved on out of memory (samples do not depend on the batch)
    knob = Knob("sampling batch {}", lambda: size["batch"], lambda b: size.__setitem__("batch", b))
    try:
        b0 = 0
        while b0 < len(idx):
            chunk = _BatchSampler(model, diffusion, cfg, shape, dev, prior, callback, bar, idx[b0:])
            x0 = retry_on_oom(lambda chunk=chunk: chunk(size["batch"]), [knob], what="sampling")
            out.append(x0)
            b0 += x0.shape[0]
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(out)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W) → uint8 NHWC by round((x + 1) · 127.5), clamped (ADM ``sample.py``)."""
    if x.ndim != 4:
        raise UsageError(f"samples: expected NCHW images, got shape {tuple(x.shape)}")
    y = ((x.detach().cpu().to(torch.float32) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 NHWC images into one HWC image (``ncol`` columns, default ≈ √N)."""
    n, h, w, c = images.shape
    ncol = int(ncol or max(1, int(np.ceil(np.sqrt(n)))))
    nrow = int(np.ceil(n / ncol))
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, ncol)
        y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
        grid[y0 : y0 + h, x0 : x0 + w] = images[k]
    return grid


def save_png(image_hwc: np.ndarray, path: str | Path, upscale: int = 1) -> Path:
    """Write a uint8 HWC image as PNG (nearest-neighbour upscaled), atomically."""
    import os
    import tempfile

    from PIL import Image

    img = image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc
    pil = Image.fromarray(img)
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    from flatkit.outputs import fix_mode

    fix_mode(fd)  # the umask's mode, not mkstemp's 0600
    os.close(fd)
    try:
        pil.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def grid_upscale(h: int) -> int:
    """A nearest-neighbour factor so small images stay visible (≥ 64 px per tile)."""
    return max(1, int(np.ceil(64 / max(h, 1))))


def save_points_png(
    points: np.ndarray, path: str | Path, reference: np.ndarray | None = None, title: str = "samples"
) -> Path:
    """Scatter plot of 2-D samples (and the data in grey), for point data sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=3, c="0.75", label="data")
    ax.scatter(points[:, 0], points[:, 1], s=4, c="C0", label="samples")
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


#: a sample whose lag-1 spatial autocorrelation is below this is "noise": i.i.d. N(0, 1) noise (clipped or
#: not) has 0 ± 2/sqrt(H·W·C) (at most 0.094 over 200 draws at 16x16x3), the built-in shapes 0.84 and more
#: (tests/commands/test_nan_weights.py)
NOISE_AUTOCORRELATION = 0.2


def spatial_autocorrelation(x: torch.Tensor) -> torch.Tensor:
    """Per sample of NCHW images: the lag-1 autocorrelation of the pixels about each channel's mean, horizontal
    and vertical neighbours pooled (1.0 for a constant image)."""
    xc = x.to(torch.float64)
    xc = xc - xc.mean(dim=(2, 3), keepdim=True)
    num = (xc[:, :, 1:, :] * xc[:, :, :-1, :]).sum(dim=(1, 2, 3)) + (xc[:, :, :, 1:] * xc[:, :, :, :-1]).sum(
        dim=(1, 2, 3))
    h, w = x.shape[2], x.shape[3]
    var = (xc**2).sum(dim=(2, 3))  # (N, C)
    den = (var * ((h - 1) * w + h * (w - 1)) / (h * w)).sum(dim=1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.ones_like(den))


def sample_flags(x: torch.Tensor) -> list[str]:
    """Per sample: ``"non-finite"`` (NaN or inf anywhere), ``"noise"`` (images whose lag-1 spatial
    autocorrelation is below :data:`NOISE_AUTOCORRELATION`: what pure noise, not a denoised image, looks like),
    else ``"ok"``."""
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    noise = torch.zeros_like(finite)
    if x.dim() == 4 and x.shape[2] > 1 and x.shape[3] > 1:
        noise = spatial_autocorrelation(torch.nan_to_num(x)) < NOISE_AUTOCORRELATION
    pairs = zip(finite.tolist(), noise.tolist(), strict=True)
    return ["non-finite" if not f else "noise" if n else "ok" for f, n in pairs]


def warn_flagged(flags: Sequence[str], path: Any = None) -> None:
    """One ``warning:`` line when samples are non-finite or pure noise."""
    bad = {k: flags.count(k) for k in ("non-finite", "noise") if k in flags}
    if bad:
        what = ", ".join(f"{v} of {len(flags)} {'pure noise' if k == 'noise' else k}" for k, v in bad.items())
        first = next(i for i, f in enumerate(flags) if f != "ok")
        print(f"warning: {path or 'the model'}: samples flagged: {what} (first: sample {first}; "
              "see flags in sample.json)", file=sys.stderr, flush=True)


@dataclass
class SampleResult(Result):
    """What ``flatkit sample`` measured: the configuration and the samples (uint8 NHWC or float points)."""

    name = "sample"
    sampler: dict = field(default_factory=dict)
    respacing: str = ""
    timestep_map: list = field(default_factory=list)
    shape: list = field(default_factory=list)
    seeds: list = field(default_factory=list)  # per-sample seeds (stream 0)
    flags: list = field(default_factory=list)  # per sample: "ok", "non-finite" or "noise" (see sample_flags)
    images: np.ndarray | None = None  # uint8 NHWC for image models
    points: np.ndarray | None = None  # float32 (N, D) for point models
    meta: dict = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        return {}  # the samples go to samples.npz (ADM's arr_0), not sample.npz

    def _fields(self) -> dict[str, Any]:
        out = super()._fields()
        out.pop("images", None)
        out.pop("points", None)
        return out

    def save(self, directory: str | Path, name: str | None = None) -> tuple[Path, Path | None]:
        """``sample.json``, ``samples.npz`` (``arr_0``) and ``samples.png``."""
        from flatkit.data import write_uint8_npz
        from flatkit.results import atomic_savez

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        jpath, _ = super().save(d, name)
        npath = d / "samples.npz"
        if self.images is not None:
            write_uint8_npz(str(npath), self.images)
            grid = image_grid(self.images[:256])
            save_png(grid, d / "samples.png", upscale=grid_upscale(self.images.shape[1]))
        elif self.points is not None:
            atomic_savez(npath, arr_0=self.points)
            save_points_png(self.points, d / "samples.png")
        return jpath, npath


def data_fingerprint(spec: str | None) -> str | None:
    """The fingerprint of the data a spec names (None when there is none or it cannot be read)."""
    if spec is None:
        return None
    try:
        from flatkit.data import load_dataset

        return load_dataset(spec).fingerprint()
    except Exception:  # noqa: BLE001 - provenance only: a sample does not need its data
        return None


@takes(SampleSettings)
def sample(
    run: Any,
    device: torch.device | str | None = None,
    progress: bool = False,
    precision: str = "fp32",
    channels_last: bool = False,
    label: str | None = None,
    *,
    settings: SampleSettings,
) -> SampleResult:
    """Draw ``n`` samples from a :class:`flatkit.run.Run` with T' = ``sampling_steps`` (Python twin of ``flatkit
    sample``). Under torchrun (an initialised group of several ranks) the batches are shared out and the samples
    gathered on rank 0; the other ranks get a result without samples."""
    import time

    from flatkit.results import make_meta

    s = settings
    t0 = time.perf_counter()
    from flatkit import distributed as dist
    from flatkit.precision import precision_meta, sampling_precision

    diff = respaced(run.diffusion, s)
    shape = sample_shape(run.config.model)
    dev = torch.device(device) if device is not None else _model_device(run.model)
    from flatkit import budget

    budget.check_samples(s.n, shape)  # the samples gather on the CPU
    if dist.world() == 1:
        with sampling_precision(precision, channels_last):
            x = draw_samples(run.model, diff, s, shape, device=dev, progress=progress)
    else:  # several ranks (torchrun): whole batches dealt round-robin, gathered on rank 0 in index order
        idx = dist.batch_shard(s.n, s.batch_size)
        with sampling_precision(precision, channels_last):
            mine = draw_samples(run.model, diff, s, shape, device=dev, indices=idx,
                                progress=progress and dist.is_main()) if idx else torch.zeros((0, *shape))
        parts = dist.gather_objects((idx, mine))
        x = None  # the other ranks return no samples
        if parts is not None:
            x = torch.zeros((s.n, *shape), dtype=torch.float32)
            for part_idx, part in parts:
                if part_idx:
                    x[torch.as_tensor(part_idx)] = part
    res = SampleResult(
        sampler=s.to_dict(),
        respacing=respacing_spec(int(diff.original_num_steps), s),
        timestep_map=[int(v) for v in diff.timestep_map],
        shape=list(shape),
        seeds=[sample_seed(s.seed, i) for i in range(s.n)],
    )
    if x is not None:
        res.flags = sample_flags(x)
        warn_flagged(res.flags, getattr(run, "path", None))
    if x is not None and len(shape) == 3:
        res.images = to_uint8(x)
    elif x is not None:
        res.points = x.numpy().astype(np.float32)
    spec = getattr(run.config, "data", None)
    res.meta = make_meta(config=s, run=run, labels=[label] if label is not None else None, device=dev,
                         wall_time_s=time.perf_counter() - t0, precision=precision_meta(precision, channels_last, dev),
                         data=spec, data_fingerprint=data_fingerprint(spec))
    return res
