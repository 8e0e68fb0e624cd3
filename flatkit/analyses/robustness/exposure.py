"""Exposure bias, measured with the ADM-ES protocol (Ning et al. 2024, "Elucidating the exposure bias in
diffusion
models"; PAPER.md "Figures and how they are measured").

At sampling time the network sees its own x̂_t instead of x_t ∼ q(x_t | x_0): a prior perturbation that a flat
minimum should absorb (the paper's first benefit).

- Sampling curve: for each respaced step i (original timestep t = timestep_map[i]) along the real T'-step
chain
  from x_T ∼ N(0, I), the mean over images of ‖ε_θ(x̂_t, t)‖ (per-image L2 norm over all pixels and channels).
- Training curve: the same mean norm on x_t = q_sample(x_0, t, ε) from training images at the same respaced t
  (fresh ε per step, from an explicit generator).
- gap_t = sampling − training; reported per step, at the last step (t = timestep_map[0]) and averaged over
steps.
- δ_t (ADM-ES's variance-mismatch metric): forward-noise real x_0 to the last respaced step, sample back
with the
  same sampler, and at each step compare the std over all pixels of x̂_t − √ᾱ_t x_0 with √(1 − ᾱ_t):
  δ_t = (std − √(1 − ᾱ_t))².

``eps_norm="squared"`` reports ‖ε_θ‖² instead (the "‖ε_θ‖² gap" of secondary summaries); the choice is recorded.
For x_0-predicting models ε_θ is recovered from the x_0 prediction; with learned σ the first C channels are
ε_θ.
Arrays are in sampling order (t from high to low).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flatkit.results import Result
from flatkit.settings import ExposureSettings, takes


def eps_from_output(
    diffusion: Any, x: torch.Tensor, t: torch.Tensor, model_output: torch.Tensor
) -> torch.Tensor:
    """ε_θ(x_t, t) from the raw model output (first C channels; converted from x̂_0 for x_0-prediction)."""
    out = model_output[:, : x.shape[1]] if diffusion.learn_sigma else model_output
    if diffusion.model_mean_type == "x0":
        return diffusion.predict_eps_from_xstart(x, t, out)
    return out


def eps_norm(eps: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Per-image ‖ε‖₂ (or ‖ε‖₂²) over all non-batch dimensions, float64 (B,)."""
    sq = eps.detach().to(torch.float64).reshape(eps.shape[0], -1).pow(2).sum(dim=1)
    return sq if norm == "squared" else sq.sqrt()


def delta_t_of(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: float) -> float:
    """δ_t = (std(x̂_t − √ᾱ_t x_0) − √(1 − ᾱ_t))², the std over all images and pixels (ADM-ES)."""
    r = (x_t.to(torch.float64) - np.sqrt(alpha_bar) * x0.to(torch.float64)).reshape(-1)
    return float((r.std() - np.sqrt(1.0 - alpha_bar)) ** 2)


@dataclass
class ExposureResult(Result):
    """``exposure.json``: for each model m (``labels[m]``) the per-step curves in sampling order (``t[m]``,
    ``sampling_norm[m]`` …) and their summaries (``gap_last[m]``, ``gap_mean[m]``, ``delta_mean[m]``)."""

    name = "exposure"
    labels: list = field(default_factory=list)
    data: list = field(default_factory=list)  # the data spec of each model
    t: list = field(default_factory=list)  # original timesteps, sampling order
    index: list = field(default_factory=list)  # respaced indices
    sampling_norm: list = field(default_factory=list)
    training_norm: list = field(default_factory=list)
    gap: list = field(default_factory=list)
    gap_last: list = field(default_factory=list)
    gap_mean: list = field(default_factory=list)
    delta_t: list = field(default_factory=list)
    delta_mean: list = field(default_factory=list)
    eps_norm: str = "l2"
    meta: dict = field(default_factory=dict)


PER_MODEL = ("data", "t", "index", "sampling_norm", "training_norm", "gap", "gap_last", "gap_mean", "delta_t",
             "delta_mean")


def _exposure_one(
    run: Any, cfg: Any, spec: str, norm: str, device: Any, progress: bool, with_delta: bool, label: str
) -> dict[str, Any]:
    from flatkit.analyses.robustness.common import reference_samples
    from flatkit.sampling import draw_samples, respaced, sample_generators, sample_shape

    diff = respaced(run.diffusion, cfg)
    shape = sample_shape(run.config.model)
    x0 = reference_samples(spec, cfg.n, cfg.seed + 1, shape, getattr(run, "path", None))  # data fits: checked first
    T = int(diff.num_timesteps)
    samp_sum = np.zeros(T)

    # sampling chain from x_T ~ N(0, I): record ||eps_theta(x_hat_t, t)|| at every step
    def record(idx: Sequence[int], i: int, t: torch.Tensor, x: torch.Tensor, mo: torch.Tensor) -> None:
        ti = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        samp_sum[i] += float(eps_norm(eps_from_output(diff, x, ti, mo), norm).sum())

    draw_samples(
        run.model,
        diff,
        cfg,
        shape,
        device=device,
        callback=record,
        progress=progress,
        desc=f"{label} chain",
    )
    sampling = samp_sum / cfg.n

    # training curve: x_t = q_sample(x0, t, eps) on training images at the same respaced steps
    n = x0.shape[0]
    train_sum = np.zeros(T)
    g = torch.Generator().manual_seed(int(cfg.seed) + 104729)
    from flatkit.precision import autocast_model, current_sampling_precision

    model = autocast_model(run.model, *current_sampling_precision())  # the chain's precision (--precision)
    with torch.no_grad():
        for i in range(T):
            eps = torch.randn(x0.shape, generator=g, dtype=torch.float32)
            for b in range(0, n, cfg.batch_size):
                xb = x0[b : b + cfg.batch_size].to(device)
                ti = torch.full((xb.shape[0],), i, dtype=torch.long, device=device)
                xt = diff.q_sample(xb, ti, eps[b : b + cfg.batch_size].to(device))
                mo = diff.call_model(model, xt, ti)
                train_sum[i] += float(eps_norm(eps_from_output(diff, xt, ti, mo), norm).sum())
    training = train_sum / n

    delta = np.full(T, np.nan)
    if with_delta:
        # delta_t: forward-noise real x0 to the last respaced step, sample back, compare the residual's std
        acc: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {i: [] for i in range(T)}
        x0_by_index = {j: x0[j] for j in range(n)}

        def collect(idx: Sequence[int], i: int, t: torch.Tensor, x: torch.Tensor, mo: torch.Tensor) -> None:
            acc[i].append((x.detach().cpu(), torch.stack([x0_by_index[j] for j in idx])))

        top = T - 1
        ab_top = float(diff.alphas_cumprod[top])
        gens_stream = 2

        def forward_noised(z: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
            xs = torch.stack([x0_by_index[j] for j in idx])
            eps = torch.stack(
                [
                    torch.randn(z.shape[1:], generator=gg, dtype=z.dtype)
                    for gg in sample_generators(cfg.seed, idx, stream=gens_stream)
                ]
            )
            return np.sqrt(ab_top) * xs + np.sqrt(1.0 - ab_top) * eps

        from dataclasses import replace

        draw_samples(
            run.model,
            diff,
            replace(cfg, n=n),
            shape,
            device=device,
            prior=forward_noised,
            callback=collect,
            progress=progress,
            desc=f"{label} delta_t",
        )
        for i in range(T):
            xs = torch.cat([a for a, _ in acc[i]])
            x0s = torch.cat([b for _, b in acc[i]])
            delta[i] = delta_t_of(xs, x0s, float(diff.alphas_cumprod[i]))

    order = list(range(T))[::-1]  # sampling order
    gap = sampling - training
    return {
        "data": spec,
        "t": [int(diff.timestep_map[i]) for i in order],
        "index": order,
        "sampling_norm": [float(sampling[i]) for i in order],
        "training_norm": [float(training[i]) for i in order],
        "gap": [float(gap[i]) for i in order],
        "gap_last": float(gap[0]),
        "gap_mean": float(gap.mean()),
        "delta_t": [float(delta[i]) for i in order],
        "delta_mean": float(np.nanmean(delta)) if with_delta else None,
    }


@takes(ExposureSettings)
def exposure(
    run: Any,
    compare: Sequence[Any] = (),
    labels: Sequence[str] | None = None,
    device: Any = None,
    progress: bool = False,
    *,
    settings: ExposureSettings,
) -> ExposureResult:
    """ADM-ES exposure-bias curves for ``run`` and each of ``compare`` (Python twin of ``flatkit exposure``)."""
    from flatkit.analyses.robustness.common import append_model, data_spec, robustness_meta, start_models

    s = settings
    t0 = time.perf_counter()
    runs, labels, cfg = start_models(run, compare, labels, s)
    res = ExposureResult(labels=labels, eps_norm=s.eps_norm)
    dev = None
    for ri, r in enumerate(runs):
        spec = data_spec(r, s.data)
        dev = device if device is not None else next(r.model.parameters()).device
        entry = _exposure_one(r, cfg, spec, s.eps_norm, dev, progress, s.delta, labels[ri])
        append_model(res, entry, PER_MODEL)
    res.meta = robustness_meta(s, runs, labels, dev, t0, res.data, data_seed=s.seed + 1,
                               training_noise_seed=s.seed + 104729, delta_noise_stream=2)
    return res
