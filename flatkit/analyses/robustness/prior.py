"""Robustness to a perturbed noise prior (the paper's Theorem 2 / Corollary 2).

A weight perturbation θ → θ + δ acts like a perturbed prior N(μ_δ, Σ_δ) instead of N(0, I) (Corollary 1); a
Δ-flat minimum is robust to every perturbed prior inside a KL ball. We sample from perturbed priors, paired by
seed with the unperturbed samples, and report each prior's KL next to what it does:

- shift / scale family x_T = μ·1 + s·z, prior N(μ1, s²I);
- additive family x_T = z + η·z', z' an independent N(0, I) draw from a separate per-sample stream: the
prior is
  N(0, (1 + η²) I), while each sample stays paired with its unperturbed z.

KL(N(μ, Σ) ‖ N(0, I)) = ½[tr Σ − log det Σ − d + ‖μ‖²] (Theorem 2's bound); for Σ = s²I, μ = μ·1:
KL = ½[d s² − d log s² − d + d μ²], computed in float64.

Measured for each prior point: paired sample drift (MSE, PSNR) against the unperturbed samples; weight-free
distances of the samples to the data; and the training-loss change on a bank built from the perturbed prior,
defined as the ε-prediction loss with the bank's noise replaced by the perturbed noise ε' = μ1 + sε (or ε +
ηξ)
both in x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε' and as the target: L' − L on the Objective's (x_0, t, ε) bank. It
says how
well the model denoises forward chains driven by the perturbed noise law; it is defined for every ε- or
x_0-predicting model (with learned σ, the hybrid loss is evaluated at ε' the same way).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flatkit.analyses.robustness.common import (
    PreviewsResult,
    append_model,
    check_sample_shape,
    data_spec,
    diffusion_bank,
    paired_drift,
    reference_samples,
    robustness_meta,
    stack_previews,
    start_models,
)
from flatkit.errors import UsageError
from flatkit.settings import PriorSettings, takes


def kl_isotropic(mu: float, s: float, d: int) -> float:
    """KL(N(μ·1, s²I_d) ‖ N(0, I_d)) = ½[d s² − d log s² − d + d μ²] (float64)."""
    if s <= 0:
        raise UsageError(f"scales {s}: must be > 0")
    s2 = float(s) ** 2
    return 0.5 * d * (s2 - math.log(s2) - 1.0 + float(mu) ** 2)


def kl_gaussian(mu: np.ndarray, sigma: np.ndarray) -> float:
    """KL(N(μ, Σ) ‖ N(0, I)) = ½[tr Σ − log det Σ − d + ‖μ‖²] for any SPD Σ (float64; Theorem 2)."""
    mu = np.asarray(mu, dtype=np.float64).reshape(-1)
    sigma = np.asarray(sigma, dtype=np.float64)
    sign, logdet = np.linalg.slogdet(sigma)
    if sign <= 0:
        raise UsageError("sigma: must be symmetric positive definite")
    return 0.5 * (float(np.trace(sigma)) - logdet - mu.size + float(mu @ mu))


@dataclass
class PriorPoint:
    """One perturbed prior: ``kind`` "shift_scale" (x_T = μ + s z) or "noise" (x_T = z + η z')."""

    kind: str
    mu: float = 0.0
    s: float = 1.0
    eta: float = 0.0

    @property
    def variance(self) -> float:
        return self.s**2 if self.kind == "shift_scale" else 1.0 + self.eta**2

    def kl(self, d: int) -> float:
        if self.kind == "shift_scale":
            return kl_isotropic(self.mu, self.s, d)
        return kl_isotropic(0.0, math.sqrt(1.0 + self.eta**2), d)

    def label(self) -> str:
        return f"mu={self.mu:g}, s={self.s:g}" if self.kind == "shift_scale" else f"eta={self.eta:g}"


def prior_grid(
    shifts: Sequence[float], scales: Sequence[float], noise_etas: Sequence[float] = ()
) -> list[PriorPoint]:
    """The product grid of shifts × scales, then the additive-noise points; (μ=0, s=1) is always included
    first."""
    for s in scales:
        if not s > 0:
            raise UsageError(f"scales {s}: must be > 0")
    for e in noise_etas:
        if e < 0:
            raise UsageError(f"noise_etas {e}: must be >= 0")
    pts = [PriorPoint("shift_scale", 0.0, 1.0)]
    for m in shifts:
        for s in scales:
            if not (m == 0 and s == 1):
                pts.append(PriorPoint("shift_scale", float(m), float(s)))
    pts += [PriorPoint("noise", eta=float(e)) for e in noise_etas if e != 0]
    return pts


def prior_fn(point: PriorPoint, seed: int):
    """The map z ↦ x_T of a prior point (additive noise z' from per-sample stream 1, paired by seed)."""
    from flatkit.sampling import sample_generators, standard_normal

    def fn(z: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        if point.kind == "shift_scale":
            return point.mu + point.s * z
        zp = standard_normal(sample_generators(seed, indices, stream=1), z.shape[1:])
        return z + point.eta * zp

    return fn


def perturbed_bank_loss(
    run: Any,
    bank: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    point: PriorPoint,
    seed: int,
    batch_size: int = 64,
) -> float:
    """Mean training loss on (x0, t, ε') with ε' the perturbed noise (see the module docstring), float64."""
    x0, t, eps = bank
    if point.kind == "shift_scale":
        eps_p = point.mu + point.s * eps
    else:
        g = torch.Generator().manual_seed(int(seed) + 7919)
        eps_p = eps + point.eta * torch.randn(eps.shape, generator=g, dtype=eps.dtype)
    key = "loss" if run.diffusion.learn_sigma else "mse"
    dev = next(run.model.parameters()).device
    total = 0.0
    with torch.no_grad():
        for i in range(0, x0.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            terms = run.diffusion.training_losses(run.model, x0[sl].to(dev), t[sl].to(dev), eps_p[sl].to(dev))
            total += float(terms[key].to(torch.float64).sum())
    return total / x0.shape[0]


@dataclass
class PriorResult(PreviewsResult):
    """``prior.json``: the grid of prior points p (``kind``, ``mu``, ``s``, ``eta``, ``kl``) and, for each model m
    (``labels[m]``), its measures at every point: ``drift_mse[m][p]`` … ``fd_pix[m][p]``."""

    name = "prior"
    d: int = 0
    kind: list = field(default_factory=list)
    mu: list = field(default_factory=list)
    s: list = field(default_factory=list)
    eta: list = field(default_factory=list)
    kl: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    data: list = field(default_factory=list)  # the data spec of each model
    drift_mse: list = field(default_factory=list)
    drift_psnr: list = field(default_factory=list)
    drift_mse_std: list = field(default_factory=list)
    loss: list = field(default_factory=list)  # loss[m][0]: L(θ) on the model's bank at the unperturbed prior
    loss_change: list = field(default_factory=list)
    distance: list = field(default_factory=list)  # sw2
    fd_pix: list = field(default_factory=list)
    distance_name: str = ""
    loss_definition: str = ""
    previews: Any = None  # (M, P, k, H, W, C) uint8 NHWC samples of every model at every point
    meta: dict = field(default_factory=dict)

    def point_labels(self) -> list[str]:
        """``μ=…, s=…`` / ``η=…`` of every prior point."""
        return [f"μ={m:g}, s={s:g}" if k == "shift_scale" else f"η={e:g}"
                for k, m, s, e in zip(self.kind, self.mu, self.s, self.eta, strict=True)]


PER_MODEL = ("drift_mse", "drift_psnr", "drift_mse_std", "loss", "loss_change", "distance", "fd_pix")


@takes(PriorSettings)
def prior(
    run: Any,
    compare: Sequence[Any] = (),
    labels: Sequence[str] | None = None,
    pool: int = 8,
    device: Any = None,
    progress: bool = False,
    n_preview: int = 8,
    *,
    settings: PriorSettings,
) -> PriorResult:
    """Sample every prior point of the grid for ``run`` and each of ``compare`` (paired by seed) and measure
    drift, distance to the data and the loss change; one result, per-model fields indexed by the model."""
    from flatkit.metrics.distances import distance_names, weight_free_distances
    from flatkit.sampling import draw_samples, respaced, sample_shape, to_uint8

    s = settings
    t0 = time.perf_counter()
    runs, labels, cfg = start_models(run, compare, labels, s)
    pts = prior_grid(s.shifts, s.scales, s.noise_etas)
    shape = sample_shape(runs[0].config.model)
    d = int(np.prod(shape))
    from flatkit import budget

    budget.check_samples(s.n, shape, copies=len(pts))  # the samples of every prior point
    res = PriorResult(
        d=d,
        kind=[p.kind for p in pts],
        mu=[p.mu for p in pts],
        s=[p.s for p in pts],
        eta=[p.eta for p in pts],
        kl=[p.kl(d) for p in pts],
        labels=labels,
        distance_name=distance_names(pool)["sw2"],
        loss_definition="mean training loss with the bank's noise replaced by the perturbed noise "
        "eps' (mu + s*eps, or eps + eta*xi) in x_t and as target, minus the loss at eps",
    )
    previews = []
    dev = None
    for ri, r in enumerate(runs):
        check_sample_shape(r, shape, labels[ri])
        spec = data_spec(r, s.data)
        res.data.append(spec)
        ref = reference_samples(spec, s.n_ref, s.seed + 1, shape, r.path)
        bank = diffusion_bank(spec, s.n_eval, s.seed, int(r.diffusion.num_timesteps), shape, r.path, run=r,
                              bank=s.bank)
        diff = respaced(r.diffusion, cfg)
        dev = device if device is not None else next(r.model.parameters()).device
        entry: dict[str, list] = {k: [] for k in PER_MODEL}
        base = None
        rows = []
        for p in pts:
            x = draw_samples(r.model, diff, cfg, shape, device=dev, prior=prior_fn(p, s.seed), progress=progress,
                             desc=f"{labels[ri]} {p.label()}")
            if base is None:
                base = x
            dr = paired_drift(x, base)
            dist = weight_free_distances(x, ref, n_projections=s.projections, seed=s.seed, pool=pool)
            lo = perturbed_bank_loss(r, bank, p, s.seed, s.batch_size)
            entry["drift_mse"].append(dr["mse"])
            entry["drift_psnr"].append(dr["psnr"])
            entry["drift_mse_std"].append(dr["mse_std"])
            entry["loss"].append(lo)
            entry["loss_change"].append(lo - entry["loss"][0])
            entry["distance"].append(dist["sw2"])
            entry["fd_pix"].append(dist["fd_pix"])
            if len(shape) == 3:
                rows.append(to_uint8(x[:n_preview]))
        append_model(res, entry, PER_MODEL, previews, rows)
    res.previews = stack_previews(previews)
    res.meta = robustness_meta(s, runs, labels, dev, t0, res.data, pool=pool, ref_seed=s.seed + 1,
                               bank_seed=s.seed, noise_stream=1)
    return res
