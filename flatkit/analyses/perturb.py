"""Loss under weight perturbation: ``ΔL(r) = L(θ + r·d) − L(θ)`` against the radius r (the paper's flatness
figure, "loss under perturbation", Lee et al. 2025).

For K random Gaussian directions d_k (one draw, normalised to each model's own weights, so models compare) the
mean and spread of ΔL over k, and for the worst case the normalised-gradient (SAM) direction
(Foret et al. 2021, eq. 2: ε̂ = ρ ∇L / ‖∇L‖), refined by a few steps of normalised gradient ascent on the sphere
of radius r (d ← N(∇L(θ + r·d)); at a minimum of a quadratic this is power iteration and reaches
ΔL = ½ r² λ_max). The radius convention ``norm`` is a setting, recorded in the result (see
:func:`flatkit.analyses.directions.normalize_direction`):

- ``norm="filter"``: d filter-normalised (Li et al. 2018), r is relative to each filter's norm;
- ``norm="layer"``: each tensor of d has its weight tensor's norm;
- ``norm="model"``: ‖d‖ = ‖θ‖, r is relative to the whole weight norm;
- ``norm="unit"``: ‖d‖ = 1, r is an absolute L2 radius (SAM's ρ);
- ``norm="none"``: d as drawn.
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
from flatkit.analyses.compare import labelled_objectives
from flatkit.analyses.directions import ParamDict, gaussian_like, normalize_direction
from flatkit.analyses.directions import norm as _l2
from flatkit.analyses.landscape.evaluate import calibrate, check_mode, evaluate_block, loss_and_gradient, loss_float64
from flatkit.results import Result, make_meta
from flatkit.settings import BANK_FIELDS, PerturbSettings, takes


@dataclass
class PerturbResult(Result):
    """ΔL against radius for one or several models (``labels[m]``); arrays indexed [model, ...]."""

    name = "perturb"
    radii: np.ndarray = field(default_factory=lambda: np.zeros(0))
    deltas: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M, K, R) random directions
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M, R)
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M, R), over the K directions (ddof=1)
    worst: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M, R) worst-case direction, or (M, 0)
    loss0: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    n_directions: int = 0
    seed: int = 0
    norm: str = "filter"
    bias: str = "zero"
    worst_steps: int = 0
    mode: str = "sequential"
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def L_theta(self) -> list:
        """L(θ_m) of each model on the result's bank (the loss-based results' common name: ``loss0``)."""
        return list(self.loss0)

    @classmethod
    def load(cls, directory: Any, name: str | None = None) -> PerturbResult:
        res = super().load(directory, name)
        for f in ("radii", "deltas", "mean", "std", "worst"):
            setattr(res, f, np.asarray(getattr(res, f), dtype=np.float64))
        return res


def worst_case_deltas(obj: Any, theta: ParamDict, radii: np.ndarray, norm: str, bias: str, steps: int,
                      fallback: ParamDict, loss0: float, which: Sequence[int] | None = None) -> np.ndarray:
    """max over the ascent iterates of L(θ + r·d) − L(θ) per radius (d₀ = the normalised gradient at θ, or
    ``fallback`` when the gradient vanishes; then ``steps`` normalised-gradient ascent steps at θ + r·d).

    ``which``: compute only these radius indices (the others are left NaN); each radius is independent."""
    _, g0 = loss_and_gradient(obj, theta)
    d0 = normalize_direction(g0, theta, norm=norm, bias=bias)
    if _l2(d0) == 0.0:
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
            nd = normalize_direction(g, theta, norm=norm, bias=bias)
            if _l2(nd) == 0.0:
                break
            d = nd
        out[j] = best
    return out


@takes(PerturbSettings, skip=BANK_FIELDS)
def perturb(
    obj: Any,
    compare: Sequence[Any] = (),
    labels: Sequence[str] | None = None,
    check: bool = True,
    *,
    settings: PerturbSettings,
) -> PerturbResult:
    """ΔL(r) for ``n_directions`` random directions and (``worst``) the worst-case direction, for ``obj`` and
    each objective in ``compare`` (the same random draw, normalised to each model's weights by ``norm``).
    ``batch_points``: radii per vmapped forward (default: all of them). ``settings``: a
    :class:`~flatkit.settings.PerturbSettings` instead of the keywords."""
    s = settings
    t0 = time.perf_counter()
    check_mode(s.mode)
    r = np.asarray([float(x) for x in s.radii], dtype=np.float64)
    objs, labels = labelled_objectives(obj, compare, labels, check)
    thetas = [{n: v.detach() for n, v in o.params.items()} for o in objs]
    g = torch.Generator(device="cpu")
    g.manual_seed(int(s.seed))
    raw = [gaussian_like(thetas[0], g) for _ in range(s.n_directions)]
    M, k = len(objs), s.n_directions
    deltas = np.zeros((M, k, r.size))
    worst_d = np.zeros((M, r.size)) if s.worst else np.zeros((M, 0))
    loss0 = []
    batch = max(1, r.size) if s.batch_points is None else s.batch_points
    mode = s.mode
    from flatkit import progress

    pb = progress.bar(total=M * (k + (1 if s.worst else 0)), desc="perturb", unit="direction")
    for m, (o, th) in enumerate(zip(objs, thetas, strict=False)):
        dirs = [normalize_direction({n: z[n].to(th[n].device) for n in z}, th, norm=s.norm, bias=s.bias)
                for z in raw]
        if mode == "auto":  # timed on rank 0 alone when several ranks share the work (torchrun)
            mode, _ = dist.run_on_main(lambda o=o, th=th, dirs=dirs: calibrate(o, th, dirs[:1], r[:, None][:batch]))
        L0 = loss_float64(o, th)
        loss0.append(L0)
        deltas[m] = _random_deltas(o, th, dirs, r, batch, mode, L0, pb)
        if s.worst:
            worst_d[m] = _worst_deltas(o, th, r, s, dirs[0], L0)
            pb.update(1)
    pb.close()
    mean = deltas.mean(axis=1)
    std = deltas.std(axis=1, ddof=1) if k > 1 else np.zeros_like(mean)
    wall = time.perf_counter() - t0
    return PerturbResult(
        radii=r, deltas=deltas, mean=mean, std=std, worst=worst_d, loss0=loss0, labels=labels, n_directions=int(k),
        seed=int(s.seed), norm=s.norm, bias=s.bias, worst_steps=int(s.worst_steps) if s.worst else 0,
        mode=mode, wall_time_s=wall,
        meta=make_meta(config=s, wall_time_s=wall, objective=[_cfg(o) for o in objs],
                       precision=getattr(obj, "precision", "fp32"),
                       channels_last=bool(getattr(obj, "channels_last", False))))


def _random_deltas(o: Any, th: ParamDict, dirs: list[ParamDict], r: np.ndarray, batch: int, mode: str,
                   L0: float, pb: Any = None) -> np.ndarray:
    """(K, R) ΔL along each random direction; several ranks: the directions dealt round-robin and gathered."""
    coeffs = r[:, None]
    out = np.zeros((len(dirs), r.size))
    mine = {}
    for j in dist.shard(range(len(dirs))):
        vals = np.concatenate([evaluate_block(o, th, [dirs[j]], coeffs[s:s + batch], mode)
                               for s in range(0, r.size, batch)])
        mine[j] = vals - L0
        if pb is not None:
            pb.update(dist.world())  # every rank takes one direction per round
    for part in dist.all_gather_objects(mine):
        for j, v in part.items():
            out[j] = v
    return out


def _worst_deltas(o: Any, th: ParamDict, r: np.ndarray, s: PerturbSettings, fallback: ParamDict,
                  L0: float) -> np.ndarray:
    """(R,) worst-case ΔL; several ranks: the nonzero radii dealt round-robin and gathered."""
    which = dist.shard([j for j in range(r.size) if r[j] != 0.0]) if dist.world() > 1 else None
    w = worst_case_deltas(o, th, r, s.norm, s.bias, s.worst_steps, fallback, L0, which=which)
    if which is None:
        return w
    out = np.zeros(r.size)
    for part in dist.all_gather_objects({j: float(w[j]) for j in which}):
        for j, v in part.items():
            out[j] = v
    return out


def _cfg(o: Any) -> Any:
    c = getattr(o, "config", None)
    return c.to_dict() if hasattr(c, "to_dict") else c
