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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from flatkit.analyses.directions import ParamDict, dot
from flatkit.analyses.landscape.evaluate import loss_and_gradient, loss_float64
from flatkit.errors import UsageError
from flatkit.results import Result, make_meta
from flatkit.settings import SharpnessSettings, make

KINDS = ("keskar", "l2", "average", "adaptive")
DEFAULT_EPS = {"keskar": 1e-3, "l2": 0.05, "average": 0.01, "adaptive": 0.05}


@dataclass
class SharpnessResult(Result):
    """Sharpness of one or several models (``labels[m]``) at the same settings, bank and seeds.

    ``value[m]`` is model m's sharpness in the kind's own units (Keskar: percent; the others: a loss difference),
    ``loss0[m]`` its L(θ) on the bank. Worst-case kinds fill ``loss_max`` (the best loss found) and
    ``per_restart`` (the best loss increase per restart); ``average`` fills ``std_err`` and the ``confidence``
    interval ``ci_low`` .. ``ci_high`` of the mean. Per-model entries of the other kind are None.
    """

    name = "sharpness"
    kind: str = "keskar"
    eps: float = 0.0
    labels: list = field(default_factory=list)
    value: list = field(default_factory=list)
    loss0: list = field(default_factory=list)
    loss_max: list = field(default_factory=list)
    per_restart: list = field(default_factory=list)
    std_err: list = field(default_factory=list)
    ci_low: list = field(default_factory=list)
    ci_high: list = field(default_factory=list)
    confidence: float | None = None
    samples: int | None = None
    restarts: int | None = None
    ascent_steps: int | None = None
    lr: float | None = None
    asam_eta: float | None = None
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


def sharpness(obj: Any, kind: str = "keskar", eps: float | None = None, restarts: int = 3, ascent_steps: int = 20,
              lr: float | None = None, samples: int = 32, confidence: float = 0.95, asam_eta: float = 0.0,
              seed: int = 0, compare: Sequence[Any] = (), labels: Sequence[str] | None = None, check: bool = True,
              settings: SharpnessSettings | None = None) -> SharpnessResult:
    """Sharpness of ``obj`` (and of each objective in ``compare``, on the same seeds) at its parameters; see the
    module docstring for each ``kind``.

    ``eps``: Keskar's ε (box ε(|θ|+1)), the ball radius ρ (``l2``, ``adaptive``) or the noise σ (``average``);
    default per kind :data:`DEFAULT_EPS`. ``restarts`` × ``ascent_steps`` gradient-ascent steps for the
    worst-case kinds (``lr`` in units of the box half-width, default 0.25, or of ρ, default 1); ``samples``
    Gaussian draws for ``average``, with a normal ``confidence`` interval of the mean; ``asam_eta``: the η of
    ``adaptive``'s c = |θ| + η. ``settings``: a :class:`~flatkit.settings.SharpnessSettings` instead of the
    keywords.
    """
    s = make(SharpnessSettings, settings, dict(kind=kind, eps=eps, restarts=restarts, ascent_steps=ascent_steps,
                                                lr=lr, samples=samples, confidence=confidence, asam_eta=asam_eta,
                                                seed=seed))
    t0 = time.perf_counter()
    eps = DEFAULT_EPS[s.kind] if s.eps is None else float(s.eps)
    lr = None if s.kind == "average" else (0.25 if s.kind == "keskar" else 1.0) if s.lr is None else s.lr
    objs = [obj, *compare]
    labels = list(labels) if labels is not None else [f"model{m}" for m in range(len(objs))]
    if len(labels) != len(objs):
        raise UsageError(f"labels: {len(labels)} given for {len(objs)} models")
    if check:
        for o in objs:
            if hasattr(o, "check_determinism"):
                o.check_determinism()
    res = SharpnessResult(kind=s.kind, eps=eps, labels=labels, lr=lr)
    if s.kind == "average":
        res.samples, res.confidence = s.samples, s.confidence
    else:
        res.restarts, res.ascent_steps = s.restarts, s.ascent_steps
        res.asam_eta = s.asam_eta if s.kind == "adaptive" else None
    for o in objs:
        _one_model(o, s, eps, lr, res)
    res.wall_time_s = time.perf_counter() - t0
    res.meta = make_meta(config=s, wall_time_s=res.wall_time_s, objective=[_objective_config(o) for o in objs])
    return res


def _one_model(obj: Any, s: SharpnessSettings, eps: float, lr: float | None, res: SharpnessResult) -> None:
    """Append one model's numbers to ``res`` (every model starts from the same seed)."""
    theta = {k: v.detach() for k, v in obj.params.items()}
    L0 = loss_float64(obj, theta)
    g = _gen(s.seed)
    best = per = se = lo = hi = None
    if s.kind == "keskar":
        best, per = _keskar(obj, theta, L0, eps, s.restarts, s.ascent_steps, lr, g)
        value = (best - L0) / (1.0 + L0) * 100.0  # Keskar et al. 2017, eq. 3
    elif s.kind in ("l2", "adaptive"):
        c = None if s.kind == "l2" else {k: v.abs() + s.asam_eta for k, v in theta.items()}
        best, per = _ball(obj, theta, L0, eps, c, s.restarts, s.ascent_steps, lr, g)
        value = best - L0
    else:
        d = []
        for _ in range(s.samples):
            z = _randn_like(theta, g)
            d.append(loss_float64(obj, {k: theta[k] + eps * z[k] for k in theta}) - L0)
        value = statistics.fmean(d)
        se = statistics.stdev(d) / math.sqrt(len(d)) if all(map(math.isfinite, d)) else float("nan")
        zq = statistics.NormalDist().inv_cdf(0.5 + s.confidence / 2)
        lo, hi = value - zq * se, value + zq * se
    res.value.append(value)
    res.loss0.append(L0)
    res.loss_max.append(best)
    res.per_restart.append(per)
    res.std_err.append(se)
    res.ci_low.append(lo)
    res.ci_high.append(hi)


def _objective_config(o: Any) -> Any:
    c = getattr(o, "config", None)
    return c.to_dict() if hasattr(c, "to_dict") else c
