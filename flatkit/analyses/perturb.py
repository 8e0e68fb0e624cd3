"""Loss under weight perturbation: ``ΔL(r) = L(θ + r·d) − L(θ)`` against the radius r (the paper's flatness
figure, "loss under perturbation", Lee et al. 2025).

For K random Gaussian directions d_k (one draw, normalised to each model's own weights, so models compare) the
mean and spread of ΔL over k, and for the worst case the normalised-gradient (SAM) direction
(Foret et al. 2021, eq. 2: ε̂ = ρ ∇L / ‖∇L‖), refined by a few steps of normalised gradient ascent on the sphere
of radius r (d ← N(∇L(θ + r·d)); at a minimum of a quadratic this is power iteration and reaches
ΔL = ½ r² λ_max). The radius convention is an option, recorded in the result:

- ``relative="filter"``: d filter-normalised (Li et al. 2018), r is relative to each filter's norm;
- ``relative="norm"``: ‖d‖ = ‖θ‖, r is relative to the whole weight norm;
- ``relative="none"``: ‖d‖ = 1, r is an absolute L2 radius (SAM's ρ).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flatkit import distributed as dist
from flatkit.analyses.directions import ParamDict, gaussian_like, norm, normalize_direction, scale
from flatkit.errors import UsageError
from flatkit.analyses.landscape.evaluate import calibrate, check_mode, evaluate_block, loss_and_gradient, loss_float64
from flatkit.results import Result

RELATIVE = ("filter", "norm", "none")


@dataclass
class PerturbResult(Result):
    """ΔL against radius; arrays indexed [model, ...]."""

    name = "perturb"
    radii: np.ndarray = field(default_factory=lambda: np.zeros(0))
    deltas: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M, K, R) random directions
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M, R)
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M, R), over the K directions (ddof=1)
    worst: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M, R) worst-case direction, or empty
    loss0: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    k: int = 0
    seed: int = 0
    relative: str = "filter"
    bias: str = "zero"
    worst_steps: int = 0
    mode: str = "sequential"
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)


def normalise(v: ParamDict, theta: ParamDict, relative: str, bias: str = "zero") -> ParamDict:
    """Scale a direction by the radius convention (see the module docstring); a zero vector stays zero."""
    if relative == "filter":
        return normalize_direction(v, theta, norm="filter", bias=bias)
    n = norm(v)
    if n == 0.0:
        return scale(v, 0.0)
    target = norm(theta) if relative == "norm" else 1.0
    return scale(v, target / n)


def worst_case_deltas(obj: Any, theta: ParamDict, radii: np.ndarray, relative: str, bias: str, steps: int,
                      fallback: ParamDict, loss0: float, which: Sequence[int] | None = None) -> np.ndarray:
    """max over the ascent iterates of L(θ + r·d) − L(θ) per radius (d₀ = the normalised gradient at θ, or
    ``fallback`` when the gradient vanishes; then ``steps`` normalised-gradient ascent steps at θ + r·d).

    ``which``: compute only these radius indices (the others are left NaN); each radius is independent."""
    _, g0 = loss_and_gradient(obj, theta)
    d0 = normalise(g0, theta, relative, bias)
    if norm(d0) == 0.0:
        d0 = fallback
    out = np.zeros(len(radii))
    for j, r in enumerate(radii):
        if which is not None and j not in which:
            out[j] = np.nan
            continue
        if r == 0.0:
            continue
        d, best = d0, -math.inf
        for s in range(steps + 1):
            p = {k: theta[k] + torch.as_tensor(float(r), dtype=theta[k].dtype) * d[k] for k in theta}
            if s < steps:
                val, g = loss_and_gradient(obj, p)
            else:
                val = loss_float64(obj, p)
            best = max(best, val - loss0) if math.isfinite(val) else float("nan")
            if not math.isfinite(val) or s == steps:
                break
            nd = normalise(g, theta, relative, bias)
            if norm(nd) == 0.0:
                break
            d = nd
        out[j] = best
    return out


def perturb(obj: Any, radii: Sequence[float] = (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1), k: int = 8,
            seed: int = 0, relative: str = "filter", bias: str = "zero", worst_case: bool = True,
            worst_steps: int = 5, compare: Sequence[Any] = (), labels: Sequence[str] | None = None,
            mode: str = "auto", batch_points: int | None = None, check: bool = True) -> PerturbResult:
    """ΔL(r) for ``k`` random directions and the worst-case direction, for ``obj`` and each of ``compare``."""
    t0 = time.perf_counter()
    if relative not in RELATIVE:
        raise UsageError(f"--relative: {relative!r} is not one of {', '.join(RELATIVE)}")
    if k < 1:
        raise UsageError(f"--k {k}: need at least one random direction")
    if worst_steps < 0:
        raise UsageError(f"--worst-steps {worst_steps}: must be >= 0")
    check_mode(mode)
    r = np.asarray([float(x) for x in radii], dtype=np.float64)
    if r.size == 0 or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise UsageError("--radii: need one or more finite radii >= 0")
    objs = [obj, *compare]
    labels = list(labels) if labels is not None else [f"model{m}" for m in range(len(objs))]
    if check:
        for o in objs:
            if hasattr(o, "check_determinism"):
                o.check_determinism()
    thetas = [{n: v.detach() for n, v in o.params.items()} for o in objs]
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    raw = [gaussian_like(thetas[0], g) for _ in range(k)]
    M = len(objs)
    deltas = np.zeros((M, k, r.size))
    worst = np.zeros((M, r.size)) if worst_case else np.zeros((M, 0))
    loss0 = []
    coeffs = r[:, None]
    if batch_points is None:
        batch_points = max(1, r.size)
    for m, (o, th) in enumerate(zip(objs, thetas, strict=False)):
        dirs = [normalise({n: z[n].to(th[n].device) for n in z}, th, relative, bias) for z in raw]
        if mode == "auto":  # timed on rank 0 alone when several ranks share the work (torchrun)
            mode, timing = dist.run_on_main(lambda o=o, th=th, dirs=dirs: calibrate(
                o, th, dirs[:1], coeffs[:batch_points]))
        L0 = loss_float64(o, th)
        loss0.append(L0)
        # several ranks: the random directions, and the worst-case radii, dealt round-robin and gathered
        mine = {}
        for j in dist.shard(range(k)):
            vals = np.concatenate([evaluate_block(o, th, [dirs[j]], coeffs[s:s + batch_points], mode)
                                   for s in range(0, r.size, batch_points)])
            mine[j] = vals - L0
        for part in dist.all_gather_objects(mine):
            for j, v in part.items():
                deltas[m, j] = v
        if worst_case:
            which = dist.shard([j for j in range(r.size) if r[j] != 0.0]) if dist.world() > 1 else None
            w = worst_case_deltas(o, th, r, relative, bias, worst_steps, dirs[0], L0, which=which)
            if which is None:
                worst[m] = w
            else:
                for part in dist.all_gather_objects({j: float(w[j]) for j in which}):
                    for j, v in part.items():
                        worst[m, j] = v
    mean = deltas.mean(axis=1)
    std = deltas.std(axis=1, ddof=1) if k > 1 else np.zeros_like(mean)
    return PerturbResult(
        radii=r, deltas=deltas, mean=mean, std=std, worst=worst, loss0=loss0, labels=labels, k=int(k),
        seed=int(seed), relative=relative, bias=bias, worst_steps=int(worst_steps) if worst_case else 0,
        mode=mode, wall_time_s=time.perf_counter() - t0,
        meta={"config": {"radii": r.tolist(), "k": k, "seed": seed, "relative": relative, "bias": bias,
                         "worst_case": worst_case, "worst_steps": worst_steps, "mode": mode},
              "objective": [_cfg(o) for o in objs], "precision": getattr(obj, "precision", "fp32"),
              "channels_last": bool(getattr(obj, "channels_last", False))})


def _cfg(o: Any) -> Any:
    c = getattr(o, "config", None)
    return c.to_dict() if hasattr(c, "to_dict") else c


def load_perturb(directory: Any) -> PerturbResult:
    """Read ``perturb.json`` + ``perturb.npz`` (for plotting)."""
    from flatkit.analyses.landscape.core import read_result

    res = read_result(PerturbResult, directory)
    for f in ("radii", "deltas", "mean", "std", "worst"):
        setattr(res, f, np.asarray(getattr(res, f), dtype=np.float64))
    return res
