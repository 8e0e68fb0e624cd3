"""Curvature per noise level: the top eigenvalue(s) and the trace of the loss restricted to t-bins.

``L(θ) = Σ_b (n_b / n) L_b(θ)`` with ``L_b`` the mean loss over the bank entries whose t falls in bin b, so
the Hessian decomposes the same way; each ``∇²L_b`` is measured on its own (``obj.restrict``), which shows
which noise levels are sharp. Note the per-bin quantities are those of the per-bin MEAN loss (not weighted by
n_b / n).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flatkit.curvature.lanczos import top_eigenvalues
from flatkit.curvature.trace import hessian_trace
from flatkit.errors import UsageError
from flatkit.results import Result


@dataclass
class PerTimestepResult(Result):
    """Per-t-bin tables: bin edges, bank counts, mean loss, top-k eigenvalues (bins × k), trace ± stderr."""

    name = "per_timestep"
    edges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    top_eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    eigen_residuals: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    trace: np.ndarray = field(default_factory=lambda: np.zeros(0))  # NaN where not computed
    trace_stderr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hvp_count: int = 0
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)


def per_timestep_curvature(
    obj: Any,
    bins: int | list[int] = 10,
    k: int = 1,
    trace: bool = True,
    tol: float = 1e-3,
    max_iter: int | None = None,
    trace_method: str = "hutch++",
    trace_rtol: float = 5e-2,
    trace_max_hvps: int = 120,
    seed: int = 0,
    mode: str = "auto",
    check: bool = True,
) -> PerTimestepResult:
    """Top-k eigenvalues (and, with ``trace``, the Hutch++ trace) of each t-bin's loss.

    A bin with no bank entry is reported as NaN (a mask, not a number); enlarge ``n`` or stratify the bank
    over the same bins (``Objective(..., t_bins=bins)``) to give every bin the same number of entries.
    """
    if not hasattr(obj, "restrict") or getattr(getattr(obj, "config", None), "kind", "") != "diffusion":
        raise UsageError("--per-timestep: only a diffusion Objective has timesteps")
    if check:
        obj.check_determinism()
    t0 = time.perf_counter()
    means, edges, counts = obj.per_timestep(bins=bins)
    B = len(edges) - 1
    eig = np.full((B, k), np.nan)
    eres = np.full((B, k), np.nan)
    tr = np.full(B, np.nan)
    tr_se = np.full(B, np.nan)
    hvps = 0
    for b in range(B):
        if counts[b] == 0:
            continue
        sub = obj.restrict((int(edges[b]), int(edges[b + 1])))
        kk = min(k, sub.num_params)
        er = top_eigenvalues(sub, k=kk, tol=tol, max_iter=max_iter, seed=seed + b, mode=mode, check=False,
                             eigenvectors=False)
        eig[b, :kk] = er.eigenvalues
        eres[b, :kk] = er.residuals
        hvps += er.hvp_count
        if trace:
            trr = hessian_trace(
                sub, method=trace_method, rtol=trace_rtol, max_hvps=trace_max_hvps, seed=seed + b, mode=mode,
                check=False,
            )
            tr[b], tr_se[b] = trr.estimate, trr.stderr
            hvps += trr.hvp_count
    return PerTimestepResult(
        edges=np.asarray(edges),
        counts=np.asarray(counts),
        loss=np.asarray(means),
        top_eigenvalues=eig,
        eigen_residuals=eres,
        trace=tr,
        trace_stderr=tr_se,
        hvp_count=hvps,
        wall_time_s=time.perf_counter() - t0,
        meta={
            "k": k,
            "max_iter": max_iter,
            "trace_method": trace_method,
            "tol": tol,
            "trace": trace,
            "trace_rtol": trace_rtol,
            "trace_max_hvps": trace_max_hvps,
            "seed": seed,
            "empty_bins": [int(b) for b in np.flatnonzero(np.asarray(counts) == 0)],
        },
    )
