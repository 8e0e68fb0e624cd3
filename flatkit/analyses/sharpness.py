"""Sharpness measures of a loss at parameters θ (all evaluated through the objective; θ is never modified).

- ``keskar``: ε-sharpness of Keskar et al. 2017 ("On Large-Batch Training ...", eq. 3):
  ``φ = (max_{z ∈ C_ε} L(θ + z) − L(θ)) / (1 + L(θ)) × 100`` over the box ``C_ε = {|z_i| ≤ ε(|θ_i| + 1)}``
  (full space, no random sub-space), maximised by projected (sign) gradient ascent with restarts instead of
  L-BFGS-B. On a quadratic at its minimum the maximum is ``max over box vertices ½ zᵀAz``.
- ``l2``: worst case in the L2 ball of radius ρ (SAM sharpness, Foret et al. 2021, eq. 1):
  ``max_{‖δ‖ ≤ ρ} L(θ + δ) − L(θ)``; at a quadratic minimum ``½ ρ² λ_max``.
- ``average``: average-case sharpness ``E_{δ ~ N(0, σ² I)} L(θ + δ) − L(θ)`` by Monte Carlo with a confidence
  interval (Andriushchenko et al. 2023, Sec. 2); at a quadratic minimum ``½ σ² tr A``.
- ``adaptive``: adaptive worst-case sharpness ``max_{‖δ / c‖ ≤ ρ} L(θ + δ) − L(θ)`` with ``c = |θ| + η``
  (ASAM's ``T_θ = diag(|θ| + η)``, Kwon et al. 2021, eq. 6, applied to every analysed parameter;
  Andriushchenko et al. 2023 use η = 0). At a quadratic minimum ``½ ρ² λ_max(T A T)``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from flatkit.analyses.directions import ParamDict, dot
from flatkit.errors import UsageError
from flatkit.analyses.landscape.evaluate import loss_and_gradient, loss_float64
from flatkit.results import Result

KINDS = ("keskar", "l2", "average", "adaptive")
DEFAULT_EPS = {"keskar": 1e-3, "l2": 0.05, "average": 0.01, "adaptive": 0.05}


@dataclass
class SharpnessResult(Result):
    """``value`` is the sharpness in the kind's own units (Keskar: percent; the others: a loss difference)."""

    name = "sharpness"
    kind: str = "keskar"
    eps: float = 0.0
    value: float = float("nan")
    loss0: float = float("nan")
    loss_max: float | None = None  # the best loss found (worst-case kinds)
    ci_low: float | None = None  # average: confidence interval of the mean
    ci_high: float | None = None
    std_err: float | None = None
    confidence: float | None = None
    samples: int | None = None
    restarts: int | None = None
    steps: int | None = None
    per_restart: list = field(default_factory=list)  # best loss increase per restart
    eta: float | None = None
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def _randn_like(theta: ParamDict, g: torch.Generator) -> ParamDict:
    return {k: torch.randn(tuple(v.shape), generator=g, dtype=torch.float64).to(v.device, v.dtype)
            for k, v in theta.items()}


def _rand_like(theta: ParamDict, g: torch.Generator) -> ParamDict:
    return {k: torch.rand(tuple(v.shape), generator=g, dtype=torch.float64).to(v.device, v.dtype)
            for k, v in theta.items()}


def _add(theta: ParamDict, z: ParamDict) -> ParamDict:
    return {k: theta[k] + z[k] for k in theta}


# ---------------------------------------------------------------------------------------------------------
# Keskar: box, sign gradient ascent


def _keskar(obj: Any, theta: ParamDict, L0: float, eps: float, restarts: int, steps: int, lr: float,
            g: torch.Generator) -> tuple[float, list[float]]:
    b = {k: eps * (v.abs() + 1.0) for k, v in theta.items()}  # half-widths ε(|θ_i| + 1)
    _, g0 = loss_and_gradient(obj, theta)
    best, per = L0, []
    for r in range(restarts):
        if r == 0 and math.sqrt(dot(g0, g0)) > 0.0:
            z = {k: lr * b[k] * torch.sign(g0[k]) for k in theta}  # first step from z = 0
        else:  # uniform in the box
            u = _rand_like(theta, g)
            z = {k: (2.0 * u[k] - 1.0) * b[k] for k in theta}
        rbest = -math.inf
        for s in range(steps + 1):
            p = _add(theta, z)
            if s < steps:
                val, grad = loss_and_gradient(obj, p)
            else:
                val = loss_float64(obj, p)
            if not math.isfinite(val):
                rbest = math.inf
                break
            rbest = max(rbest, val)
            if s == steps:
                break
            # projected sign ascent: z ← clip(z + lr·b·sign(∇L), −b, b)
            z = {k: torch.maximum(torch.minimum(z[k] + lr * b[k] * torch.sign(grad[k]), b[k]), -b[k])
                 for k in theta}
        per.append(rbest - L0)
        best = max(best, rbest)
    return best, per


# ---------------------------------------------------------------------------------------------------------
# L2 ball (plain or adaptive): normalised gradient ascent in u = δ / c, projected on ‖u‖ ≤ ρ


def _ball(obj: Any, theta: ParamDict, L0: float, rho: float, c: ParamDict | None, restarts: int, steps: int,
          lr: float, g: torch.Generator) -> tuple[float, list[float]]:
    def delta(u: ParamDict) -> ParamDict:
        return u if c is None else {k: c[k] * u[k] for k in u}

    def grad_u(grad: ParamDict) -> ParamDict:  # ∂L/∂u = c ⊙ ∇L
        return grad if c is None else {k: c[k] * grad[k] for k in grad}

    def project(u: ParamDict) -> ParamDict:
        n = math.sqrt(dot(u, u))
        return u if n <= rho or n == 0.0 else {k: v * (rho / n) for k, v in u.items()}

    def unit(v: ParamDict) -> ParamDict | None:
        n = math.sqrt(dot(v, v))
        return None if n == 0.0 else {k: t / n for k, t in v.items()}

    _, g0 = loss_and_gradient(obj, theta)
    best, per = L0, []
    for r in range(restarts):
        d0 = unit(grad_u(g0)) if r == 0 else None  # restart 0: SAM's ε̂ = ρ ∇/‖∇‖
        if d0 is None:
            d0 = unit(_randn_like(theta, g))
        u = {k: rho * v for k, v in d0.items()}
        rbest = -math.inf
        for s in range(steps + 1):
            p = _add(theta, delta(u))
            if s < steps:
                val, grad = loss_and_gradient(obj, p)
            else:
                val = loss_float64(obj, p)
            if not math.isfinite(val):
                rbest = math.inf
                break
            rbest = max(rbest, val)
            if s == steps:
                break
            step = unit(grad_u(grad))
            if step is None:
                break
            u = project({k: u[k] + lr * rho * step[k] for k in u})
        per.append(rbest - L0)
        best = max(best, rbest)
    return best, per


# ---------------------------------------------------------------------------------------------------------


def sharpness(obj: Any, kind: str = "keskar", eps: float | None = None, restarts: int = 3, steps: int = 20,
              lr: float | None = None, samples: int = 32, confidence: float = 0.95, eta: float = 0.0,
              seed: int = 0, check: bool = True) -> SharpnessResult:
    """Sharpness of ``obj`` at its parameters (see the module docstring for each ``kind``).

    ``eps``: Keskar's ε (box ε(|θ|+1)), the ball radius ρ (``l2``, ``adaptive``) or the noise σ (``average``);
    default per kind :data:`DEFAULT_EPS`. ``restarts`` × ``steps`` gradient-ascent steps for the worst-case
    kinds (``lr`` in units of the box half-width, default 0.25, or of ρ, default 1); ``samples`` Gaussian draws
    for ``average``, with a normal ``confidence`` interval of the mean.
    """
    t0 = time.perf_counter()
    if kind not in KINDS:
        raise UsageError(f"--kind: {kind!r} is not one of {', '.join(KINDS)}")
    eps = DEFAULT_EPS[kind] if eps is None else float(eps)
    if not math.isfinite(eps) or eps <= 0:
        raise UsageError(f"--eps {eps}: must be a positive number")
    if restarts < 1 or steps < 0:
        raise UsageError("--restarts/--steps: need restarts >= 1 and steps >= 0")
    if samples < 2:
        raise UsageError(f"--samples {samples}: need at least 2")
    if not 0 < confidence < 1:
        raise UsageError(f"--confidence {confidence}: must be in (0, 1)")
    if eta < 0:
        raise UsageError(f"--eta {eta}: must be >= 0")
    if check and hasattr(obj, "check_determinism"):
        obj.check_determinism()
    theta = {k: v.detach() for k, v in obj.params.items()}
    L0 = loss_float64(obj, theta)
    g = _gen(seed)
    cfg = {"kind": kind, "eps": eps, "seed": seed}
    res = SharpnessResult(kind=kind, eps=eps, loss0=L0)
    if kind == "keskar":
        lr = 0.25 if lr is None else lr
        best, per = _keskar(obj, theta, L0, eps, restarts, steps, lr, g)
        res.value = (best - L0) / (1.0 + L0) * 100.0  # Keskar et al. 2017, eq. 3
        res.loss_max, res.per_restart, res.restarts, res.steps = best, per, restarts, steps
        cfg.update(restarts=restarts, steps=steps, lr=lr)
    elif kind in ("l2", "adaptive"):
        lr = 1.0 if lr is None else lr
        c = None if kind == "l2" else {k: v.abs() + eta for k, v in theta.items()}
        best, per = _ball(obj, theta, L0, eps, c, restarts, steps, lr, g)
        res.value = best - L0
        res.loss_max, res.per_restart, res.restarts, res.steps = best, per, restarts, steps
        res.eta = eta if kind == "adaptive" else None
        cfg.update(restarts=restarts, steps=steps, lr=lr, eta=res.eta)
    else:
        d = []
        for _ in range(samples):
            z = _randn_like(theta, g)
            d.append(loss_float64(obj, {k: theta[k] + eps * z[k] for k in theta}) - L0)
        mean = statistics.fmean(d)
        se = statistics.stdev(d) / math.sqrt(len(d)) if all(map(math.isfinite, d)) else float("nan")
        zq = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
        res.value, res.std_err, res.samples, res.confidence = mean, se, samples, confidence
        res.ci_low, res.ci_high = mean - zq * se, mean + zq * se
        cfg.update(samples=samples, confidence=confidence)
    res.wall_time_s = time.perf_counter() - t0
    ocfg = getattr(obj, "config", None)
    res.meta = {"config": cfg, "objective": ocfg.to_dict() if hasattr(ocfg, "to_dict") else ocfg}
    return res
