"""``hessian(obj, ...)``: the curvature measures of the loss at θ in one typed result.

Top-k eigenvalues by Lanczos (:func:`flatkit.curvature.top_eigenvalues`), the trace by Hutch++ or Hutchinson
(:func:`~flatkit.curvature.hessian_trace`), the spectral density by stochastic Lanczos quadrature
(:func:`~flatkit.curvature.spectral_density`) and the per-timestep profile
(:func:`~flatkit.curvature.per_timestep_curvature`), for ``obj`` and every objective of ``compare`` on the same
frozen bank. Per-model fields are indexed by the model m (``labels[m]``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flatkit.results import Result
from flatkit.settings import BANK_FIELDS, HessianSettings, takes


@dataclass
class HessianResult(Result):
    """Curvature of each model's loss; NaN (``null`` in JSON) where a measure was not asked for."""

    name = "hessian"
    labels: list = field(default_factory=list)
    loss: list = field(default_factory=list)  # L(θ_m) on the bank
    num_params: list = field(default_factory=list)
    eigenvalues: list = field(default_factory=list)  # [m][i], descending (top_k of them)
    eigen_residuals: list = field(default_factory=list)  # [m][i], ‖H y − θ y‖ / |θ|
    eigen_converged: list = field(default_factory=list)
    eigen_hvps: list = field(default_factory=list)
    eigen_bounds: list = field(default_factory=list)  # [m][i]: certified |λ_i − θ_i| ≤ bound (absolute)
    eigen_certified: list = field(default_factory=list)  # [m]: every bound ≤ tol · |θ_i| (the Lanczos stop)
    ritz_values: list = field(default_factory=list)  # [m]: every Ritz value of the last Lanczos step
    trace: list = field(default_factory=list)  # [m] estimate
    trace_stderr: list = field(default_factory=list)
    trace_hvps: list = field(default_factory=list)
    trace_converged: list = field(default_factory=list)
    trace_samples: list = field(default_factory=list)  # [m]: zᵀHz of every Hutchinson probe
    density_grid: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (M, G)
    density: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (M, G), Gaussian-broadened SLQ
    density_nodes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))  # (M, runs, steps)
    density_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    density_sigma: list = field(default_factory=list)
    per_timestep_edges: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (B + 1,), shared bank bins
    per_timestep_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_timestep_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (M, B)
    per_timestep_top_eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))  # (M, B, k)
    per_timestep_trace: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (M, B)
    per_timestep_trace_stderr: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    details: list = field(default_factory=list)  # [m]: each estimator's own numbers (tolerances, iterations, ...)
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def L_theta(self) -> list:
        """L(θ_m) of each model on the result's bank (the loss-based results' common name: ``loss``)."""
        return list(self.loss)

    @property
    def lambda_max(self) -> list[float]:
        """λ_max of each model (NaN when top eigenvalues were not computed)."""
        return [float(e[0]) if e else math.nan for e in self.eigenvalues]

    @property
    def has_density(self) -> bool:
        return np.size(self.density) > 0

    @property
    def has_per_timestep(self) -> bool:
        return np.size(self.per_timestep_edges) > 0


def _top_eigenvalues(o: Any, s: HessianSettings, res: HessianResult, detail: dict) -> None:
    from flatkit.curvature import top_eigenvalues
    from flatkit.curvature.hvp import hvp_progress

    b = s.block_size
    budget = min(o.num_params, max(100, 20 * s.top_k) * b) if s.max_iter is None else s.max_iter
    from flatkit import budget as memory_budget

    where = o.device if s.basis_device == "same" else s.basis_device
    memory_budget.check("max_iter" if s.max_iter is not None else "top_k",
                        s.max_iter if s.max_iter is not None else s.top_k,
                        f"the Lanczos basis of {budget} vectors of {o.num_params} parameters",
                        memory_budget.lanczos_bytes(budget, o.num_params, vectors=b, itemsize=o.dtype.itemsize),
                        where)
    with hvp_progress(f"top-{s.top_k} eigenvalues ({'block ' if b > 1 else ''}Lanczos)", total=budget):
        r = top_eigenvalues(o, k=s.top_k, tol=s.tol, max_iter=s.max_iter, seed=s.seed, mode=s.hvp_mode,
                            basis_device=s.basis_device, check=False, eigenvectors=False, block_size=b)
    res.eigenvalues.append([float(x) for x in r.eigenvalues])
    res.eigen_residuals.append([float(x) for x in r.residuals])
    res.eigen_converged.append(bool(r.converged))
    res.eigen_hvps.append(int(r.hvp_count))
    res.eigen_bounds.append([float(x) for x in r.error_bounds])
    res.eigen_certified.append(bool(r.certified))
    res.ritz_values.append([float(x) for x in r.ritz_values])
    detail["top_eigenvalues"] = {"iterations": r.iterations, "tol": r.tol, "wall_time_s": r.wall_time_s,
                                 "meta": {k: v for k, v in r.meta.items() if k != "objective"}}


def _trace(o: Any, s: HessianSettings, res: HessianResult, detail: dict) -> None:
    from flatkit import budget as memory_budget
    from flatkit.curvature import hessian_trace
    from flatkit.curvature.hvp import hvp_progress

    sketch = max(1, s.trace_max_hvps // 6) if s.trace_method == "hutch++" else 1
    memory_budget.check("trace_max_hvps", s.trace_max_hvps,
                        f"the Hutch++ sketch of {sketch} vectors of {o.num_params} parameters",
                        memory_budget.lanczos_bytes(2 * sketch, o.num_params), o.device)
    with hvp_progress(f"trace ({s.trace_method})", total=s.trace_max_hvps):
        r = hessian_trace(o, method=s.trace_method, rtol=s.trace_rtol, max_hvps=s.trace_max_hvps, seed=s.seed,
                          mode=s.hvp_mode, check=False, probe_batch=s.probe_batch)
    res.trace.append(float(r.estimate))
    res.trace_stderr.append(float(r.stderr))
    res.trace_hvps.append(int(r.hvp_count))
    res.trace_converged.append(bool(r.converged))
    res.trace_samples.append([float(x) for x in r.samples])
    detail["trace"] = {"method": r.method, "rtol": r.rtol, "low_rank_part": r.low_rank_part,
                       "sketch_size": r.sketch_size, "wall_time_s": r.wall_time_s,
                       "probe_batch": (r.meta or {}).get("probe_batch")}


def _density(o: Any, s: HessianSettings, parts: dict, res: HessianResult, detail: dict) -> None:
    from flatkit import budget as memory_budget
    from flatkit.curvature import spectral_density
    from flatkit.curvature.hvp import hvp_progress

    where = o.device if s.basis_device == "same" else s.basis_device
    steps = min(int(s.density_steps), int(o.num_params))
    one = memory_budget.lanczos_bytes(steps, o.num_params, itemsize=o.dtype.itemsize)
    memory_budget.check("density_steps", s.density_steps,
                        f"the SLQ basis of {steps} vectors of {o.num_params} parameters", one, where)
    batch = s.probe_batch
    # side by side, every run's basis is held at once: vmap is refused where they do not fit, auto runs the loop
    if batch != "loop" and s.density_runs > 1 and not memory_budget.fits(s.density_runs * one, where):
        if batch == "vmap":
            memory_budget.check("density_runs", s.density_runs, f"{s.density_runs} SLQ bases (runs side by side, "
                                f"--probe-batch vmap) of {steps} vectors", s.density_runs * one, where)
        batch = "loop"  # one run after another, one basis at a time
    with hvp_progress("spectral density (SLQ)", total=s.density_runs * s.density_steps):
        r = spectral_density(o, runs=s.density_runs, steps=s.density_steps, seed=s.seed, mode=s.hvp_mode,
                             basis_device=s.basis_device, check=False, probe_batch=batch)
    for k, v in (("grid", r.grid), ("density", r.density), ("nodes", r.nodes), ("weights", r.weights)):
        parts.setdefault(k, []).append(np.asarray(v))
    res.density_sigma.append(float(r.sigma))
    detail["density"] = {"runs": r.runs, "steps": r.steps, "hvp_count": r.hvp_count, "integral": r.integral,
                         "wall_time_s": r.wall_time_s, "probe_batch": (r.meta or {}).get("probe_batch")}


def _per_timestep(o: Any, s: HessianSettings, parts: dict, detail: dict) -> None:
    from flatkit.curvature import per_timestep_curvature
    from flatkit.curvature.hvp import hvp_progress

    with hvp_progress(f"per-timestep curvature ({s.per_timestep} bins)"):
        r = per_timestep_curvature(o, bins=s.per_timestep, k=max(1, min(s.top_k, 3)), trace=s.trace, tol=s.tol,
                                   max_iter=s.max_iter, trace_method=s.trace_method, trace_rtol=s.trace_rtol,
                                   trace_max_hvps=s.trace_max_hvps, seed=s.seed, mode=s.hvp_mode, check=False)
    parts["edges"], parts["counts"] = np.asarray(r.edges), np.asarray(r.counts)
    for k, v in (("pt_loss", r.loss), ("pt_top", r.top_eigenvalues), ("pt_trace", r.trace),
                 ("pt_trace_stderr", r.trace_stderr)):
        parts.setdefault(k, []).append(np.asarray(v))
    detail["per_timestep"] = {"hvp_count": r.hvp_count, "eigen_residuals": np.asarray(r.eigen_residuals).tolist(),
                              "wall_time_s": r.wall_time_s}


@takes(HessianSettings, skip=(*BANK_FIELDS, "include", "exclude"))
def hessian(
    obj: Any,
    compare: Sequence[Any] = (),
    labels: Sequence[str] | None = None,
    *,
    settings: HessianSettings,
) -> HessianResult:
    """Top eigenvalues, trace, spectral density and per-timestep curvature of ``obj`` (and of each objective in
    ``compare``, on the same bank). The bank itself (data, n_eval, loss, per-timestep bins) is the objective's:
    build it with ``Objective(run, n=..., t_bins=per_timestep)``; the bank fields of ``settings`` are recorded."""
    s = settings
    t0 = time.perf_counter()
    objs = [obj, *compare]
    from flatkit.finite import refuse_non_finite

    for o in objs:  # curvature cannot run on NaN weights: one line naming checkpoint, weights and tensor
        refuse_non_finite(o, "the Hessian")
    res = HessianResult(labels=list(labels) if labels is not None else [f"model{m}" for m in range(len(objs))])
    parts: dict[str, Any] = {}
    for o in objs:
        detail: dict[str, Any] = {}
        res.loss.append(float(o.check_determinism()))
        res.num_params.append(int(o.num_params))
        if s.top_k > 0:
            _top_eigenvalues(o, s, res, detail)
        if s.trace:
            _trace(o, s, res, detail)
        if s.density:
            _density(o, s, parts, res, detail)
        if s.per_timestep:
            _per_timestep(o, s, parts, detail)
        res.details.append(detail)
    if s.density:
        res.density_grid, res.density = np.stack(parts["grid"]), np.stack(parts["density"])
        res.density_nodes, res.density_weights = np.stack(parts["nodes"]), np.stack(parts["weights"])
    if s.per_timestep:
        res.per_timestep_edges, res.per_timestep_counts = parts["edges"], parts["counts"]
        res.per_timestep_loss, res.per_timestep_top_eigenvalues = np.stack(parts["pt_loss"]), np.stack(parts["pt_top"])
        res.per_timestep_trace = np.stack(parts["pt_trace"])
        res.per_timestep_trace_stderr = np.stack(parts["pt_trace_stderr"])
    res.wall_time_s = time.perf_counter() - t0
    ocfg = getattr(obj, "config", None)
    res.meta = {"config": s.to_dict(), "objective": ocfg.to_dict() if hasattr(ocfg, "to_dict") else ocfg}
    return res
